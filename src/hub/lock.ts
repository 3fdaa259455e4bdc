import { mkdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import lockfile from 'proper-lockfile';

/** A lock its holder has not refreshed for this long (killed, frozen) is taken over by the next process. */
const LOCK_STALE_MS = 10_000;

export interface FileLock {
  /** aborted, with the reason, when the lock was lost (removed or taken over while this process held it) */
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

export interface LockWait {
  /** stops the wait for another process's lock (a server's SIGTERM) */
  signal?: AbortSignal | undefined;
  /** called once when another process holds the lock */
  onWait?: () => void;
}

/** How often a waiting process looks at another's lock again. */
const POLL_MS = 250;

/**
 * The lock that guards a blob's partial file: `<cache>/.locks/models--owner--name/<blob>.incomplete.lock`,
 * beside huggingface_hub's own flock files there (`<blob>.lock`), under a name of its own because Python opens
 * its name as a file and this lock is a directory.
 */
export function partialLockPath(blob: string): string {
  const repoDir = dirname(dirname(blob));
  return join(dirname(repoDir), '.locks', basename(repoDir), `${basename(blob)}.incomplete.lock`);
}

/**
 * Takes the lock on `resource` (a mkdir, refreshed every few seconds by proper-lockfile), waiting while another
 * live process holds it. On clean exit, SIGINT and SIGTERM the lock is removed; after SIGKILL it goes stale
 * after LOCK_STALE_MS and the next process takes it over.
 */
export async function acquireLock(resource: string, lockPath: string, wait: LockWait = {}): Promise<FileLock> {
  await mkdir(dirname(lockPath), { recursive: true });
  const lost = new AbortController();
  let told = false;
  for (;;) {
    wait.signal?.throwIfAborted();
    try {
      const release = await lockfile.lock(resource, {
        lockfilePath: lockPath,
        realpath: false,
        stale: LOCK_STALE_MS,
        retries: 0,
        // the default throws from a timer, which would crash a server; the download watches `lost` instead
        onCompromised: (err) => lost.abort(err),
      });
      // releasing a lost lock fails with ERELEASED: nothing is left to release
      return { lost: lost.signal, release: () => release().catch(() => {}) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') throw err;
    }
    if (!told) wait.onWait?.();
    told = true;
    // our own polling rather than proper-lockfile's retries, so an abort ends the wait at once
    await sleep(POLL_MS, undefined, wait.signal ? { signal: wait.signal } : {}).catch(() => wait.signal?.throwIfAborted());
  }
}
