/**
 * Baseline one-shot server for the churn workload, raw `node:net`: answer the first chunk and end
 * the connection (the server closes first, as in the framework's version).
 *
 * @module
 */

import type net from 'node:net';
import { runBaseline } from '../lib/baseline.js';

function onData(this: net.Socket, chunk: Buffer): void {
  this.end(chunk);
}

await runBaseline((socket) => {
  socket.once('data', onData);
});
