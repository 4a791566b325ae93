/**
 * Baseline echo server: raw `node:net` with `'data'` events, written the way a performance-minded
 * engineer would by hand (shared listener functions instead of per-socket closures, pause on a
 * full socket buffer, resume on `'drain'`, a socket set for a graceful close).
 *
 * @module
 */

import type net from 'node:net';
import { runBaseline } from '../lib/baseline.js';

function onData(this: net.Socket, chunk: Buffer): void {
  if (!this.write(chunk)) this.pause();
}
function onDrain(this: net.Socket): void {
  this.resume();
}

await runBaseline((socket) => {
  socket.on('data', onData);
  socket.on('drain', onDrain);
});
