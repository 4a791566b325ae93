/**
 * The harness command every RESP bench server answers beside the common ones: `requests`, the
 * commands it has run (`examples/resp/commands.ts`, `commandsExecuted`), read by
 * `bench/instructions.ts` at both ends of a counted window.
 *
 * @module
 */

import { commandsExecuted } from '../../examples/resp/commands.js';
import type { BenchServer } from './server-child.js';

export const RESP_COMMANDS: NonNullable<BenchServer['commands']> = {
  requests: async () => ({ requests: commandsExecuted() }),
};
