import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { findEmbeddingFiles } from '../asr/embeddings.js';
import { findModelFiles } from '../asr/model-dir.js';
import { Tokenizer } from '../asr/tokenizer.js';
import { HubClient, type RepoFile } from './api.js';
import { COMMIT_HASH, hubCacheDir, hubToken, RepoCache, type CacheLocation } from './cache.js';
import { ensureEmbeddingTable } from './embedding-table.js';
import { HubError, HubUnavailableError } from './errors.js';
import { downloadFile } from './fetch-file.js';
import { decoderEmbeddingInput } from './graph-signature.js';
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
  /** called once, when files are about to be fetched (not when the cache is complete) */
  onDownloading?: () => void;
}

/**
 * What keeps a cached snapshot from being loaded, or undefined when the engine can load it: its three graphs,
 * a tokenizer, and an embedding table when the decoders need one.
 */
async function whatIsMissing(dir: string): Promise<string | undefined> {
  if (!existsSync(dir)) return 'nothing is cached for it';
  let prefill: string;
  try {
    prefill = findModelFiles(dir).prefill;
  } catch {
    return 'its ONNX graphs are missing';
  }
  if (!Tokenizer.existsIn(dir)) return 'its tokenizer is missing';
  if (findEmbeddingFiles(dir).length > 0) return undefined;
  try {
    if ((await decoderEmbeddingInput(prefill)) !== null) return 'the embedding table the decoders need is missing';
  } catch {
    return 'its decoder graph cannot be read';
  }
  return undefined;
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
  const missingFromCache = cachedCommit ? await whatIsMissing(cache.snapshotDir(cachedCommit)) : 'nothing is cached for it';
  const cached = cachedCommit && !missingFromCache ? cache.snapshotDir(cachedCommit) : undefined;

  if (source.HF_HUB_OFFLINE) {
    if (cached) return cached;
    throw new HubError(
      `HF_HUB_OFFLINE is set and ${repo}@${revision} is not complete in the Hugging Face cache ${cacheDir} (${missingFromCache}): ` +
        'run `mega-asr download` where the hub is reachable (with the same HF_HOME or HF_HUB_CACHE), or set MODEL_DIR to a model directory',
    );
  }
  if (cached && COMMIT_HASH.test(revision)) return cached;

  const client = new HubClient(source.HF_ENDPOINT, hubToken(source), o.signal);
  let commit: string;
  let files: RepoFile[];
  try {
    commit = await client.commitOf(repo, revision);
    files = await client.listFiles(repo, commit);
  } catch (err) {
    // as huggingface_hub does: a hub that cannot answer now (down, rate-limited, no network) falls back to what
    // the cache holds for that revision; "not found" or "gated" does not
    if (cached && err instanceof HubUnavailableError) {
      o.logger.warn({ model: repo, revision, snapshot: cached, error: err.message }, 'hub unavailable: using the cached model');
      return cached;
    }
    throw err;
  }
  const selection = selectModelFiles(repo, files);
  const missing = selection.files.filter((f) => !cache.hasFile(commit, f.path));
  if (missing.length) {
    o.onDownloading?.();
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
      fetch: client.fetchFile,
      explainStatus: (status) => client.explainStatus(status, repo, commit, file.path),
      progress: o.progress.file(file.path),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    await cache.link(commit, file.path, blob);
  }
  await cache.writeRef(revision, commit);

  const snapshot = cache.snapshotDir(commit);
  // a repo that ships its table needs no look at the graph
  const embeds = selection.embeddingTable ? null : await decoderEmbeddingInput(join(snapshot, selection.graphs.prefill));
  if (embeds) {
    await ensureEmbeddingTable({
      onDownloading: o.onDownloading,
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
