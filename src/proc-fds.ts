/**
 * This process's file descriptors, read from Linux's `/proc`: which descriptor number holds a
 * given listening socket (node:net does not say), and how many are open. An upgrade needs the
 * numbers to hand the listeners to a new process as inherited descriptors 3, 4, ...
 *
 * A listening socket is found by its kernel inode: `/proc/self/net/{tcp,tcp6,unix}` give the
 * inode of each listening socket by address, `/proc/self/fd/N` links to `socket:[inode]`.
 *
 * @module
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { type AddressInfo, isIPv4 } from 'node:net';
import { endianness } from 'node:os';

/** The descriptors of this process that are sockets, by socket inode. */
export function socketFds(): Map<number, number> {
  const byInode = new Map<number, number>();
  for (const entry of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${entry}`);
    } catch {
      continue; // closed meanwhile (the directory's own descriptor, say)
    }
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m && !byInode.has(Number(m[1]))) byInode.set(Number(m[1]), Number(entry));
  }
  return byInode;
}

/** How many descriptors this process has open (`/proc/self/fd`, less the one reading it). */
export function openFdCount(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length - (pid === 'self' ? 1 : 0);
}

/** The inodes of listening sockets bound to `address` (a TCP address, or a unix path as bound). */
export function listeningInodes(address: AddressInfo | string): number[] {
  if (typeof address === 'string') return unixInodes(address);
  const want = ipBytes(address.address);
  const table = isIPv4(address.address) ? 'tcp' : 'tcp6';
  const inodes: number[] = [];
  for (const line of readFileSync(`/proc/self/net/${table}`, 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== '0A') continue; // 0A: TCP_LISTEN
    const [hex, port] = f[1]!.split(':') as [string, string];
    if (Number.parseInt(port, 16) !== address.port) continue;
    if (procAddress(hex).equals(want)) inodes.push(Number(f[9]));
  }
  return inodes;
}

function unixInodes(path: string): number[] {
  // Abstract names are shown with a leading `@` in place of the NUL byte.
  const shown = path.startsWith('\0') ? `@${path.slice(1)}` : path;
  const inodes: number[] = [];
  for (const line of readFileSync('/proc/self/net/unix', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path; __SO_ACCEPTCON (0x10000) marks a listener.
    if (f.length < 8 || (Number.parseInt(f[3]!, 16) & 0x10000) === 0) continue;
    if (f.slice(7).join(' ') === shown) inodes.push(Number(f[6]));
  }
  return inodes;
}

/** `/proc/net/tcp*` print each 32-bit word of an address in host byte order. */
function procAddress(hex: string): Buffer {
  const bytes = Buffer.from(hex, 'hex');
  if (endianness() === 'LE') for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
  return bytes;
}

/** An IPv4 or IPv6 address as its 4 or 16 bytes. */
function ipBytes(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  let text = address.split('%')[0]!; // no zone id
  const last = text.lastIndexOf(':');
  if (text.includes('.', last)) {
    // An embedded IPv4 tail (`::ffff:127.0.0.1`): its 4 bytes are the last two words.
    const v4 = Buffer.from(
      text
        .slice(last + 1)
        .split('.')
        .map(Number),
    );
    text = `${text.slice(0, last + 1)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const words = (part: string): number[] =>
    part === '' ? [] : part.split(':').map((w) => Number.parseInt(w, 16));
  const gap = text.indexOf('::');
  const front = words(gap === -1 ? text : text.slice(0, gap));
  const back = gap === -1 ? [] : words(text.slice(gap + 2));
  const all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  const out = Buffer.alloc(16);
  for (const [i, w] of all.entries()) out.writeUInt16BE(w, i * 2);
  return out;
}
