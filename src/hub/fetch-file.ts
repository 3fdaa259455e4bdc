import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ReadableStream } from 'node:stream/web';
import { HubError } from './errors.js';
import { acquireLock, partialLockPath } from './lock.js';
import type { FileProgress } from './progress.js';

export interface Download {
  /** where the bytes are (the hub's resolve URL; redirects are followed, so every attempt gets a fresh CDN link) */
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
  /** the final path, `<cache>/models--o--n/blobs/<etag>`; it appears only complete and verified */
  dest: string;
  fetch: (url: string, init?: RequestInit) => Promise<Response>;
  explainStatus: (status: number) => Error;
  progress: FileProgress;
  signal?: AbortSignal;
  /** a transfer that delivers no byte for this long is aborted and resumed (default 30 s) */
  stallTimeoutMs?: number;
}

const STALL_TIMEOUT_MS = 30_000;
/** Failed attempts in a row without progress before giving up; the first retry waits RETRY_DELAY_MS, then doubling. */
const RETRIES = 5;
const RETRY_DELAY_MS = 500;

/** The server said no (a 4xx): this run fails, but the bytes downloaded so far stay for the next run. */
class Refused extends Error {}
/** What was written is proven wrong (size, checksum, more bytes than expected): it is deleted. */
class BadContent extends Error {}

/**
 * Hand-written (the library streams a file in one request and renames it unverified): resumes with Range after
 * a dropped or stalled connection, retries with backoff, checks size and hash, fsyncs, and renames into place.
 * The partial file is huggingface_hub's own `blobs/<etag>.incomplete`, so Python and this service resume each
 * other's downloads; a lock in the cache's `.locks` folder keeps two processes from writing it at once.
 */
export async function downloadFile(d: Download): Promise<void> {
  const total = (d.prefix?.length ?? 0) + d.size;
  // only a complete, verified file is ever renamed to this name
  if ((await sizeOf(d.dest)) === total) return;
  await mkdir(dirname(d.dest), { recursive: true });
  const partial = `${d.dest}.incomplete`;
  const lock = await acquireLock(partial, partialLockPath(d.dest), { signal: d.signal, onWait: () => d.progress.waiting?.() });
  try {
    // the process that held the lock may have finished the file
    if ((await sizeOf(d.dest)) !== total) {
      // Only verified bytes are ever renamed to dest: if another owner finished it meanwhile (this process lost
      // its lock while frozen), the file is there and right whatever went wrong here.
      await fetchVerified(d, partial, total, lock.lost).catch(async (err: unknown) => {
        if ((await sizeOf(d.dest)) !== total) throw err;
      });
    }
  } finally {
    await lock.release();
  }
}

/** Fills `partial` (resuming what is there), verifies it and renames it to `d.dest`; the caller holds the lock. */
async function fetchVerified(d: Download, partial: string, total: number, lost: AbortSignal): Promise<void> {
  const prefix = d.prefix ?? new Uint8Array(0);
  let have = await sizeOf(partial);
  // (a missing file is -1, so an empty file to download gets its empty partial too)
  if (have < prefix.length || have > total || have < 0) {
    await writeFile(partial, prefix);
    have = prefix.length;
  }
  // progress counts the fetched bytes, not a header of our own written before them
  d.progress.start(d.size, have - prefix.length);
  const stop = AbortSignal.any([lost, ...(d.signal ? [d.signal] : [])]);
  try {
    let failures = 0;
    while (have < total) {
      const before = have;
      try {
        have = await fetchRest(d, partial, have - prefix.length, prefix.length, stop);
      } catch (err) {
        if (lost.aborted) throw lostLock(d, partial, lost);
        if (err instanceof Refused || err instanceof BadContent || d.signal?.aborted) throw err;
        have = await sizeOf(partial);
        failures = have > before ? 1 : failures + 1;
        if (failures > RETRIES) throw new HubError(`${d.label}: download failed ${failures} times in a row (${(err as Error).message}); run again to resume`);
        const delay = RETRY_DELAY_MS * 2 ** (failures - 1);
        d.progress.retrying?.((err as Error).message, delay);
        await sleep(delay, undefined, { signal: stop }).catch(() => undefined);
      }
    }
    await verify(d, partial, total);
    if (lost.aborted) throw lostLock(d, partial, lost);
    await rename(partial, d.dest);
    d.progress.done();
  } catch (err) {
    d.progress.fail();
    // Only proven-bad bytes are removed (and never once another process owns the file); the rest is resumed later.
    if (err instanceof BadContent && !lost.aborted) await rm(partial, { force: true });
    throw err instanceof Refused || err instanceof BadContent ? new HubError(err.message) : err;
  }
}

function lostLock(d: Download, partial: string, lost: AbortSignal): HubError {
  return new HubError(
    `${d.label}: lost the lock on ${partial} (${(lost.reason as Error).message}); another process may be writing it now; run again`,
  );
}

/** The file's size, or -1 when there is no file (an empty file is a file: some repos ship them). */
async function sizeOf(path: string): Promise<number> {
  return stat(path).then((s) => s.size, () => -1);
}

/**
 * One request for bytes [from, size) of the piece, appended to the file; returns the file's new size. A watchdog
 * aborts the request when no byte arrives for stallTimeoutMs, so the caller's retry resumes it.
 */
async function fetchRest(d: Download, partial: string, from: number, prefixLength: number, stop: AbortSignal): Promise<number> {
  const first = (d.offset ?? 0) + from;
  const last = (d.offset ?? 0) + d.size - 1;
  const ranged = first > 0 || d.offset !== undefined;
  const idleMs = d.stallTimeoutMs ?? STALL_TIMEOUT_MS;
  const stalled = new AbortController();
  const watchdog = setTimeout(() => stalled.abort(new Error(`no data for ${idleMs / 1000} s`)), idleMs);
  try {
    const res = await d.fetch(d.url, { ...(ranged ? { headers: { Range: `bytes=${first}-${last}` } } : {}), signal: AbortSignal.any([stop, stalled.signal]) }).catch((err: unknown) => {
      // a stall or a stop carries its own reason; anything else is the network's (DNS, refused, reset)
      if (stop.aborted || stalled.signal.aborted) throw err;
      throw new Error(`no connection to ${new URL(d.url).host} (${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message})`);
    });
    if (!res.ok) {
      await res.body?.cancel();
      const err = d.explainStatus(res.status);
      // 5xx, 429 and 408 are worth another try; other refusals are final for this run
      if (res.status >= 500 || res.status === 429 || res.status === 408) throw err;
      throw new Refused(from > 0 ? `${err.message} (HTTP ${res.status} resuming at byte ${first}; the ${from} bytes downloaded so far are kept for the next run)` : err.message);
    }
    // A whole file whose server ignores Range (200) starts again from its first byte; a piece of a file cannot.
    const restart = ranged && res.status === 200 && d.offset === undefined;
    if (ranged && !restart && (res.status !== 206 || !(res.headers.get('content-range') ?? '').startsWith(`bytes ${first}-`))) {
      await res.body?.cancel();
      throw new Refused(`${d.label}: the server ignored the byte range request (status ${res.status})`);
    }
    if (!res.body) throw new Error('empty response');
    if (restart) {
      await truncate(partial, prefixLength);
      d.progress.advance(-from);
    }
    let written = prefixLength + (restart ? 0 : from);
    const limit = prefixLength + d.size;
    const count = new Transform({
      transform(chunk: Buffer, _enc, done) {
        watchdog.refresh();
        written += chunk.length;
        if (written > limit) return done(new BadContent(`${d.label}: the server sent more than the expected ${d.size} bytes; the partial file was discarded, run again`));
        d.progress.advance(chunk.length);
        done(null, chunk);
      },
    });
    // At fixed offsets, not appended: a writer that lost its lock while frozen and wakes up late rewrites the
    // same bytes at the same places instead of lengthening the new owner's file.
    const sink = createWriteStream(partial, { flags: 'r+', start: written });
    try {
      await pipeline(Readable.fromWeb(res.body as ReadableStream<Uint8Array>), count, sink);
    } catch (err) {
      if (err instanceof BadContent) throw err;
      // a full disk or a permission problem is not a network problem: no retry would help
      const fsError = err as NodeJS.ErrnoException;
      if (fsError.syscall && fsError.code) throw new Refused(`${d.label}: cannot write ${partial} (${fsError.code}: ${fsError.message})`);
      throw new Error(`connection lost after ${written} of ${limit} bytes (${(err as Error).message})`);
    }
    return written;
  } finally {
    clearTimeout(watchdog);
  }
}

/** Size and hash of what was written, then fsync, before the rename makes it look complete. */
async function verify(d: Download, partial: string, total: number): Promise<void> {
  const size = await sizeOf(partial);
  if (size !== total) throw new BadContent(`${d.label}: expected ${total} bytes, got ${size}; the partial file was discarded, run again`);
  if (d.sha256 || d.gitBlobId) {
    const hash = createHash(d.sha256 ? 'sha256' : 'sha1');
    if (!d.sha256) hash.update(`blob ${size}\0`);
    for await (const chunk of createReadStream(partial)) hash.update(chunk as Buffer);
    const got = hash.digest('hex');
    const expected = d.sha256 ?? d.gitBlobId;
    if (got !== expected) {
      throw new BadContent(`${d.label}: checksum mismatch (expected ${d.sha256 ? 'sha256' : 'git blob id'} ${expected}, got ${got}); the file was discarded, run again`);
    }
  }
  const handle = await open(partial, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
