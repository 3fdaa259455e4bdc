import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { findEmbeddingFiles } from '../asr/embeddings.js';
import { findModelFiles } from '../asr/model-dir.js';
import { HubClient } from './api.js';
import { COMMIT_HASH, hubCacheDir, hubToken, RepoCache, type CacheLocation } from './cache.js';
import { ensureEmbeddingTable } from './embedding-table.js';
import { HubError } from './errors.js';
import { downloadFile } from './fetch-file.js';
import { embeddingInput } from './onnx-inputs.js';
import type { DownloadLogger, Progress } from './progress.js';
import { selectModelFiles } from './select.js';

/** The settings that say which model to fetch, from where, into which cache (src/config.ts names them). */
export interface ModelSource extends CacheLocation {
  MODEL: string;
  MODEL_REVISION: string;
  EMBEDDING_MODEL: string;
  EMBEDDING_REVISION: string;
  HF_ENDPOINT: string;
  HF_TOKEN?: string | undefined;
  HF_TOKEN_PATH?: string | undefined;
  HF_HUB_OFFLINE: boolean;
}

export interface EnsureOptions {
  logger: DownloadLogger;
  progress: Progress;
  signal?: AbortSignal;
}

/** A snapshot the engine can load: its three graphs, a tokenizer, and an embedding table when the decoders need one. */
function usable(dir: string): boolean {
  try {
    const graphs = findModelFiles(dir);
    const tokenizer = ['tokenizer.json', 'vocab.json'].some((f) => existsSync(join(dir, f)));
    return tokenizer && (embeddingInput(graphs.prefill) === null || findEmbeddingFiles(dir).length > 0);
  } catch {
    return false;
  }
}

/**
 * The model's directory: the cached snapshot of MODEL at MODEL_REVISION, downloaded first when missing or
 * stale. A complete cache costs two small API calls (which commit is `main` now, and its file list); a revision
 * given as a commit hash that is cached, or HF_HUB_OFFLINE, costs none.
 */
export async function ensureModel(source: ModelSource, o: EnsureOptions): Promise<string> {
  const cacheDir = hubCacheDir(source);
  const repo = source.MODEL;
  const revision = source.MODEL_REVISION;
  const cache = new RepoCache(cacheDir, repo);
  const cachedCommit = cache.commitFor(revision);
  const cached = cachedCommit && usable(cache.snapshotDir(cachedCommit)) ? cache.snapshotDir(cachedCommit) : undefined;

  if (source.HF_HUB_OFFLINE) {
    if (cached) return cached;
    throw new HubError(
      `HF_HUB_OFFLINE is set and ${repo}@${revision} is not complete in the Hugging Face cache ${cacheDir}: ` +
        'run `mega-asr download` where the hub is reachable (with the same HF_HOME or HF_HUB_CACHE), or set MODEL_DIR to a model directory',
    );
  }
  if (cached && COMMIT_HASH.test(revision)) return cached;

  const client = new HubClient(source.HF_ENDPOINT, hubToken(source));
  let commit: string;
  try {
    commit = await client.commitOf(repo, revision);
  } catch (err) {
    // as huggingface_hub does: an unreachable hub falls back to what the cache holds for that revision
    if (cached && err instanceof HubError && err.message.startsWith('cannot reach')) {
      o.logger.warn({ model: repo, revision, snapshot: cached, error: err.message }, 'hub unreachable: using the cached model');
      return cached;
    }
    throw err;
  }
  const selection = selectModelFiles(repo, await client.listFiles(repo, commit));
  const missing = selection.files.filter((f) => !cache.hasFile(commit, f.path));
  if (missing.length) {
    const megabytes = Math.round(missing.reduce((sum, f) => sum + f.size, 0) / 1024 / 1024);
    o.logger.info({ model: repo, revision, commit, files: missing.length, megabytes, cache: cacheDir }, 'downloading the model');
  }
  for (const file of missing) {
    const blob = cache.blobPath(file.lfs?.oid ?? file.oid);
    await downloadFile({
      url: client.resolveUrl(repo, commit, file.path),
      label: file.path,
      size: file.size,
      ...(file.lfs ? { sha256: file.lfs.oid } : { gitBlobId: file.oid }),
      dest: blob,
      fetch: client.fetch,
      explainStatus: (status) => client.explainStatus(status, repo, commit, file.path),
      progress: o.progress.file(file.path),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    await cache.link(commit, file.path, blob);
  }
  await cache.writeRef(revision, commit);

  const snapshot = cache.snapshotDir(commit);
  const embeds = embeddingInput(join(snapshot, selection.graphs.prefill));
  if (embeds && !selection.embeddingTable) {
    await ensureEmbeddingTable({
      client,
      repo: source.EMBEDDING_MODEL,
      revision: source.EMBEDDING_REVISION,
      cache,
      commit,
      width: embeds.width,
      progress: o.progress,
      ...(o.signal ? { signal: o.signal } : {}),
    });
  }
  return snapshot;
}
