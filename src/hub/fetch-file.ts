import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream } from 'node:stream/web';
import { uniqueSuffix } from './cache.js';
import { HubError } from './errors.js';
import type { FileProgress } from './progress.js';

export interface Download {
  /** where the bytes are (the hub's resolve URL; redirects are followed) */
  url: string;
  /** what the user reads in errors and progress */
  label: string;
  /** bytes to fetch */
  size: number;
  /** the remote offset of those bytes (one tensor inside a shard); 0 for a whole file */
  offset?: number;
  /** bytes written before the fetched ones (a header of our own) */
  prefix?: Uint8Array;
  /** expected sha256 of the whole written file (an LFS file's oid) */
  sha256?: string;
  /** expected git blob id (a small non-LFS file) */
  gitBlobId?: string;
  /** the final path; it appears only complete and verified */
  dest: string;
  fetch: (url: string, init?: RequestInit) => Promise<Response>;
  explainStatus: (status: number) => Error;
  progress: FileProgress;
  signal?: AbortSignal;
  /** consecutive failed attempts without progress before giving up */
  retries?: number;
  retryDelayMs?: number;
}

/** An interrupted download nobody has written to for this long is taken over and resumed. */
const ORPHAN_IDLE_MS = 30_000;

class Refused extends Error {}

/**
 * Hand-written (the library streams a file in one request and renames it unverified): resumes with Range after
 * a dropped connection, retries with backoff, checks size and hash, fsyncs, and renames into place. The partial
 * file has a name of its own per process, so two processes never write into one file.
 */
export async function downloadFile(d: Download): Promise<void> {
  const prefix = d.prefix ?? new Uint8Array(0);
  const total = prefix.length + d.size;
  // only a complete, verified file is ever renamed to this name
  if ((await sizeOf(d.dest)) === total) return;
  await mkdir(dirname(d.dest), { recursive: true });
  const temp = (await adoptOrphan(d.dest)) ?? `${d.dest}.${uniqueSuffix()}.incomplete`;
  try {
    let have = await sizeOf(temp);
    if (have < prefix.length) {
      await writeFile(temp, prefix);
      have = prefix.length;
    }
    d.progress.start(total, have);
    let failures = 0;
    while (have < total) {
      const before = have;
      try {
        have = await fetchRest(d, temp, have - prefix.length, prefix.length);
      } catch (err) {
        if (err instanceof Refused || d.signal?.aborted) throw err;
        have = await sizeOf(temp);
        failures = have > before ? 1 : failures + 1;
        if (failures > (d.retries ?? 5)) throw new HubError(`${d.label}: download failed ${failures} times in a row (${(err as Error).message}); run again to resume`);
        await new Promise((r) => setTimeout(r, (d.retryDelayMs ?? 500) * 2 ** (failures - 1)));
      }
    }
    await verify(d, temp, total);
    await rename(temp, d.dest);
    d.progress.done();
  } catch (err) {
    d.progress.fail();
    // A verified-bad or refused file is removed; an interrupted one is kept for the next run to resume.
    if (err instanceof Refused) await rm(temp, { force: true });
    throw err instanceof Refused ? new HubError(err.message) : err;
  }
}

async function sizeOf(path: string): Promise<number> {
  return stat(path).then((s) => s.size, () => 0);
}

/** Takes over a partial file another (dead) process left, our naming or huggingface_hub's `<blob>.incomplete`. */
async function adoptOrphan(dest: string): Promise<string | undefined> {
  const name = basename(dest);
  const names = await readdir(dirname(dest)).catch(() => [] as string[]);
  for (const candidate of names.filter((n) => n.startsWith(`${name}.`) && n.endsWith('.incomplete'))) {
    const path = join(dirname(dest), candidate);
    const idle = await stat(path).then((s) => Date.now() - s.mtimeMs, () => 0);
    if (idle < ORPHAN_IDLE_MS) continue;
    const mine = `${dest}.${uniqueSuffix()}.incomplete`;
    // rename is atomic: of two processes adopting the same file, one wins and the other starts its own
    if (await rename(path, mine).then(() => true, () => false)) return mine;
  }
  return undefined;
}

/** One request for bytes [from, size) of the piece, appended to the file; returns the file's new size. */
async function fetchRest(d: Download, temp: string, from: number, prefixLength: number): Promise<number> {
  const first = (d.offset ?? 0) + from;
  const last = (d.offset ?? 0) + d.size - 1;
  const ranged = first > 0 || d.offset !== undefined;
  const res = await d.fetch(d.url, { ...(ranged ? { headers: { Range: `bytes=${first}-${last}` } } : {}), ...(d.signal ? { signal: d.signal } : {}) });
  if (!res.ok) {
    await res.body?.cancel();
    const err = d.explainStatus(res.status);
    // the hub's own refusals are final; 5xx and 429 are worth another try
    if (res.status < 500 && res.status !== 429) throw new Refused(err.message);
    throw err;
  }
  // A whole file whose server ignores Range (200) starts again from its first byte; a piece of a file cannot.
  const restart = ranged && res.status === 200 && d.offset === undefined;
  if (ranged && !restart && (res.status !== 206 || !(res.headers.get('content-range') ?? '').startsWith(`bytes ${first}-`))) {
    await res.body?.cancel();
    throw new Refused(`${d.label}: the server ignored the byte range request (status ${res.status})`);
  }
  if (!res.body) throw new Error('empty response');
  if (restart) {
    await truncate(temp, prefixLength);
    d.progress.advance(-from);
  }
  let written = prefixLength + (restart ? 0 : from);
  const limit = prefixLength + d.size;
  const count = new Transform({
    transform(chunk: Buffer, _enc, done) {
      written += chunk.length;
      if (written > limit) return done(new Refused(`${d.label}: the server sent more than the expected ${d.size} bytes`));
      d.progress.advance(chunk.length);
      done(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(res.body as ReadableStream<Uint8Array>), count, createWriteStream(temp, { flags: 'a' }));
  } catch (err) {
    if (err instanceof Refused) throw err;
    throw new Error(`connection lost after ${written} of ${limit} bytes (${(err as Error).message})`);
  }
  return written;
}

/** Size and hash of what was written, then fsync, before the rename makes it look complete. */
async function verify(d: Download, temp: string, total: number): Promise<void> {
  const size = await sizeOf(temp);
  if (size !== total) throw new Refused(`${d.label}: expected ${total} bytes, got ${size}; the partial file was discarded, run again`);
  if (d.sha256 || d.gitBlobId) {
    const hash = createHash(d.sha256 ? 'sha256' : 'sha1');
    if (!d.sha256) hash.update(`blob ${size}\0`);
    for await (const chunk of createReadStream(temp)) hash.update(chunk as Buffer);
    const got = hash.digest('hex');
    const expected = d.sha256 ?? d.gitBlobId;
    if (got !== expected) {
      throw new Refused(`${d.label}: checksum mismatch (expected ${d.sha256 ? 'sha256' : 'git blob id'} ${expected}, got ${got}); the file was discarded, run again`);
    }
  }
  const handle = await open(temp, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
