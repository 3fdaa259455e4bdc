import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { getRepoFolderName } from '@huggingface/hub';

export interface CacheLocation {
  HF_HUB_CACHE?: string | undefined;
  HF_HOME?: string | undefined;
  XDG_CACHE_HOME?: string | undefined;
}

/** huggingface_hub's HF_HOME: $HF_HOME, else $XDG_CACHE_HOME (~/.cache)/huggingface. */
function hfHome(env: CacheLocation): string {
  return env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
}

/** huggingface_hub's rule: HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME (~/.cache)/huggingface/hub. */
export function hubCacheDir(env: CacheLocation): string {
  return env.HF_HUB_CACHE ?? join(hfHome(env), 'hub');
}

/** huggingface_hub's rule: HF_TOKEN, else the file `huggingface-cli login` saved (HF_TOKEN_PATH, else HF_HOME/token). */
export function hubToken(env: CacheLocation & { HF_TOKEN?: string | undefined; HF_TOKEN_PATH?: string | undefined }): string | undefined {
  if (env.HF_TOKEN) return env.HF_TOKEN;
  const path = env.HF_TOKEN_PATH ?? join(hfHome(env), 'token');
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** A name no other process or call uses, for files renamed into place when complete. */
function uniqueSuffix(): string {
  return `${process.pid}-${randomBytes(4).toString('hex')}`;
}

/**
 * One model repo in the cache, laid out as huggingface_hub lays it out:
 * `models--owner--name/{blobs/<etag>, snapshots/<commit>/<path> -> ../../blobs/<etag>, refs/<revision>}`.
 */
export class RepoCache {
  readonly root: string;

  constructor(cacheDir: string, readonly repo: string) {
    this.root = join(cacheDir, getRepoFolderName({ type: 'model', name: repo }));
  }

  blobPath(etag: string): string {
    return join(this.root, 'blobs', etag);
  }

  snapshotDir(commit: string): string {
    return join(this.root, 'snapshots', commit);
  }

  /** The commit a revision names: itself when it is a commit hash, else what refs/<revision> holds. */
  commitFor(revision: string): string | undefined {
    if (COMMIT_HASH.test(revision)) return revision;
    const ref = join(this.root, 'refs', revision);
    if (!existsSync(ref)) return undefined;
    const commit = readFileSync(ref, 'utf8').trim();
    return COMMIT_HASH.test(commit) ? commit : undefined;
  }

  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    const ref = join(this.root, 'refs', revision);
    await mkdir(dirname(ref), { recursive: true });
    const temp = `${ref}.${uniqueSuffix()}.tmp`;
    await writeFile(temp, commit);
    await rename(temp, ref);
  }

  /** The snapshot's entry for `path` resolves to a file (a link to a blob, or a plain file as on Windows). */
  hasFile(commit: string, path: string): boolean {
    try {
      return statSync(join(this.snapshotDir(commit), path)).isFile();
    } catch {
      return false;
    }
  }

  /** snapshots/<commit>/<path> -> a relative link to the blob, replaced atomically (two processes may race here). */
  async link(commit: string, path: string, blob: string): Promise<void> {
    const target = join(this.snapshotDir(commit), path);
    await mkdir(dirname(target), { recursive: true });
    const temp = `${target}.${uniqueSuffix()}.tmp`;
    await symlink(relative(dirname(target), blob), temp);
    try {
      await rename(temp, target);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  }
}
