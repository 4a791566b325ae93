/**
 * Splitting of inline commands (`SET key "a value"\r\n`, as typed into telnet or nc), following
 * Redis's `sdssplitargs`: arguments are separated by whitespace; `"..."` supports the escapes
 * `\n \r \t \b \a \\ \" \xHH`; `'...'` supports `\'`; a closing quote must be followed by
 * whitespace or the end of the line.
 *
 * @module
 */

const SPACE = 0x20;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const BACKSLASH = 0x5c;

/** C `isspace`: space, \t, \n, \v, \f, \r. */
function isSpace(c: number): boolean {
  return c === SPACE || (c >= 0x09 && c <= 0x0d);
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/** The byte a backslash escape in double quotes stands for: \n \r \t \b \a, else itself. */
function unescapeByte(c: number): number {
  switch (c) {
    case 0x6e:
      return 0x0a;
    case 0x72:
      return 0x0d;
    case 0x74:
      return 0x09;
    case 0x62:
      return 0x08;
    case 0x61:
      return 0x07;
    default:
      return c;
  }
}

/**
 * Splits buf[start, end) into arguments. Unquoted arguments are `subarray`s (no copy); only
 * quoted ones are built byte by byte. Returns null on unbalanced quotes, [] for a blank line.
 */
export function splitInlineArgs(buf: Buffer, start: number, end: number): Buffer[] | null {
  const args: Buffer[] = [];
  let p = start;
  for (;;) {
    while (p < end && isSpace(buf[p]!)) p++;
    if (p >= end) return args;
    const argStart = p;
    while (p < end) {
      const c = buf[p]!;
      if (isSpace(c) || c === DQUOTE || c === SQUOTE) break;
      p++;
    }
    if (p >= end || isSpace(buf[p]!)) {
      args.push(buf.subarray(argStart, p));
      continue;
    }
    // The argument contains quotes: fall back to the byte-by-byte splitter from its start.
    const quoted = splitQuoted(buf, argStart, end);
    if (quoted === null) return null;
    args.push(Buffer.from(quoted.bytes));
    p = quoted.next;
  }
}

/** One argument with quotes, from p: its bytes and the position after it, or null if unbalanced. */
function splitQuoted(buf: Buffer, p: number, end: number): { bytes: number[]; next: number } | null {
  const bytes: number[] = [];
  let inDouble = false;
  let inSingle = false;
  for (;;) {
    if (inDouble) {
      if (p >= end) return null;
      const c = buf[p]!;
      if (c === BACKSLASH && p + 3 < end && buf[p + 1] === 0x78) {
        const hi = hexValue(buf[p + 2]!);
        const lo = hexValue(buf[p + 3]!);
        if (hi >= 0 && lo >= 0) {
          bytes.push(hi * 16 + lo);
          p += 4;
          continue;
        }
      }
      if (c === BACKSLASH && p + 1 < end) {
        const e = buf[++p]!;
        bytes.push(unescapeByte(e));
      } else if (c === DQUOTE) {
        // A closing quote must end the argument.
        if (p + 1 < end && !isSpace(buf[p + 1]!)) return null;
        return { bytes, next: p + 1 };
      } else {
        bytes.push(c);
      }
      p++;
    } else if (inSingle) {
      if (p >= end) return null;
      const c = buf[p]!;
      if (c === BACKSLASH && p + 1 < end && buf[p + 1] === SQUOTE) {
        bytes.push(SQUOTE);
        p++;
      } else if (c === SQUOTE) {
        if (p + 1 < end && !isSpace(buf[p + 1]!)) return null;
        return { bytes, next: p + 1 };
      } else {
        bytes.push(c);
      }
      p++;
    } else {
      if (p >= end) return { bytes, next: p };
      const c = buf[p]!;
      if (isSpace(c)) return { bytes, next: p };
      if (c === DQUOTE) inDouble = true;
      else if (c === SQUOTE) inSingle = true;
      else bytes.push(c);
      p++;
    }
  }
}
