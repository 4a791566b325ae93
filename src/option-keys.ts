/**
 * Unknown option keys are refused, not ignored: `createServer({ idleTimout: 5000 })` (a typo)
 * would otherwise be accepted and silently mean no idle timeout. Every options object the
 * library takes is checked against the keys its interface declares, and the error names the bad
 * key and the nearest known one.
 *
 * @module
 */
import { InvalidOptionError } from './errors.js';
import { describeValue } from './timers.js';

/**
 * The keys of an options interface, as an object literal: `Record<keyof T, true>` makes the
 * compiler check the list is complete and has nothing extra, so it cannot drift from the type.
 */
export type KnownKeys<T> = Readonly<Record<keyof T, true>>;

/**
 * Throws `ERR_INVALID_OPTION` when `value`, an options object, has an own enumerable key that `known` does not list. `path` prefixes nested keys
 * (`proxyProtocol.` names `proxyProtocol.trusetd`); `label` prefixes the message, as in
 * `lineDecoder: unknown option ...`. A value that is not an object is left to the caller's own
 * checks.
 */
export function checkKeys(value: unknown, known: KnownKeys<object>, path = '', label = ''): void {
  if (value === null || typeof value !== 'object') return;
  for (const key in value) {
    if (Object.hasOwn(known, key) || !Object.hasOwn(value, key)) continue;
    const guess = path + nearest(key, Object.keys(known));
    throw new InvalidOptionError(
      `${label}unknown option ${JSON.stringify(path + key)} (did you mean ${JSON.stringify(guess)}?)`,
    );
  }
}

/**
 * An options argument: `undefined` is `{}`; anything but an object is refused with
 * `ERR_INVALID_OPTION` (`label` names the function), and so is an unknown key (see {@link checkKeys}).
 */
export function optionsObject<T extends object>(value: T | undefined, known: KnownKeys<T>, label: string): T {
  if (value === undefined) return {} as T;
  if (value === null || typeof value !== 'object') {
    throw new InvalidOptionError(`${label}options must be an object, got ${describeValue(value)}`);
  }
  checkKeys(value, known as KnownKeys<object>, '', label);
  return value;
}

/** The candidate closest to `key` by edit distance, ignoring case (the first one on a tie). */
function nearest(key: string, candidates: readonly string[]): string {
  const lower = key.toLowerCase();
  let best = candidates[0] ?? '';
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of candidates) {
    const distance = editDistance(lower, candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

/** Levenshtein distance: insertions, deletions and substitutions of one character each cost 1. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1);
      row.push(Math.min(previous[j]! + 1, row[j - 1]! + 1, substitution));
    }
    previous = row;
  }
  return previous[b.length]!;
}
