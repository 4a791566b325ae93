/**
 * The examples' logger: prints each message of the library (and of `shutdownOnSignals`: progress
 * during a drain, the final report) as one plain line with the example's name in front.
 */
import type { Logger } from '../src/index.js';

/** A pino-compatible logger writing `name: message` lines to the console; debug is dropped. */
export function consoleLogger(name: string): Logger {
  return {
    debug: () => {},
    info: (_obj, msg) => console.log(`${name}: ${msg}`),
    warn: (_obj, msg) => console.log(`${name}: ${msg}`),
    error: (_obj, msg) => console.error(`${name}: ${msg}`),
  };
}
