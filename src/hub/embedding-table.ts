import { createHash } from 'node:crypto';
import type { HubClient } from './api.js';
import type { RepoCache } from './cache.js';
import { HubError } from './errors.js';
import { downloadFile } from './fetch-file.js';
import type { Progress } from './progress.js';

const EMBEDDING_TENSOR = 'thinker.model.embed_tokens.weight';
/** where the engine finds it (src/asr/embeddings.ts looks for .safetensors in the model directory) */
const EMBEDDING_FILE = 'embed_tokens.safetensors';

const BYTES: Record<string, number> = { BF16: 2, F16: 2, F32: 4 };
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

interface TensorEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export interface EmbeddingSource {
  client: HubClient;
  /** repo holding the checkpoint (Qwen/Qwen3-ASR-1.7B) and the revision to take it from */
  repo: string;
  revision: string;
  /** the model's cache and snapshot the table is added to */
  cache: RepoCache;
  commit: string;
  /** the decoder's inputs_embeds width when the graph declares it */
  width: number | undefined;
  progress: Progress;
  signal?: AbortSignal;
  /** called when the table is about to be fetched (it is not in the snapshot yet) */
  onDownloading?: (() => void) | undefined;
}

/** Which shard holds the tensor: model.safetensors.index.json's weight_map, or the single model.safetensors. */
async function findShard(s: EmbeddingSource, commit: string): Promise<string> {
  const index = await s.client.readSmallFile(s.repo, commit, 'model.safetensors.index.json');
  if (!index) return 'model.safetensors';
  const shard = (JSON.parse(index.toString('utf8')) as { weight_map?: Record<string, string> }).weight_map?.[EMBEDDING_TENSOR];
  if (!shard) throw new HubError(`${s.repo}@${s.revision}: model.safetensors.index.json lists no ${EMBEDDING_TENSOR}; set EMBEDDING_MODEL to the base checkpoint`);
  return shard;
}

function checkEntry(s: EmbeddingSource, where: string, entry: TensorEntry | undefined): TensorEntry {
  const fail = (why: string) => new HubError(`${where}: ${EMBEDDING_TENSOR} ${why}; set EMBEDDING_MODEL to the model's base checkpoint`);
  if (!entry) throw fail('is not in this shard');
  const bytes = BYTES[entry.dtype];
  if (!bytes) throw fail(`has dtype ${entry.dtype} (expected BF16, F16 or F32)`);
  const [rows, cols] = entry.shape;
  if (entry.shape.length !== 2 || !rows || !cols) throw fail(`has shape [${entry.shape.join(', ')}] (expected [vocab, hidden])`);
  if (s.width !== undefined && cols !== s.width) throw fail(`has rows of width ${cols}; the decoders take ${s.width}`);
  const [begin, end] = entry.data_offsets;
  if (end - begin !== rows * cols * bytes) throw fail(`spans ${end - begin} bytes, not ${rows}x${cols}x${bytes}`);
  return entry;
}

/** A standalone safetensors header for the one tensor, padded to 8 bytes as the format recommends. */
function standaloneHeader(entry: TensorEntry, metadata: Record<string, string>): Buffer {
  const size = entry.data_offsets[1] - entry.data_offsets[0];
  let json = JSON.stringify({ __metadata__: metadata, [EMBEDDING_TENSOR]: { dtype: entry.dtype, shape: entry.shape, data_offsets: [0, size] } });
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, Buffer.from(json, 'utf8')]);
}

/**
 * Fetches only the token embedding table from the base checkpoint's safetensors: the index names the shard,
 * two Range reads give its header, one resumable Range download gives the tensor's bytes, written as a small
 * safetensors file into the cache's blobs and linked into the snapshot beside the graphs.
 */
export async function ensureEmbeddingTable(s: EmbeddingSource): Promise<void> {
  if (s.cache.hasFile(s.commit, EMBEDDING_FILE)) return;
  s.onDownloading?.();
  const sourceCommit = await s.client.commitOf(s.repo, s.revision);
  const shard = await findShard(s, sourceCommit);
  const url = s.client.resolveUrl(s.repo, sourceCommit, shard);
  const where = `${s.repo}@${sourceCommit.slice(0, 12)}/${shard}`;
  const explain = (status: number) => s.client.explainStatus(status, s.repo, sourceCommit, shard);
  const headerLength = Number((await s.client.readRange(url, 0, 8, explain)).readBigUInt64LE(0));
  if (headerLength <= 0 || headerLength > MAX_HEADER_BYTES) throw new HubError(`${where}: not a safetensors file (header length ${headerLength})`);
  const header = JSON.parse((await s.client.readRange(url, 8, 8 + headerLength, explain)).toString('utf8')) as Record<string, TensorEntry>;
  const entry = checkEntry(s, where, header[EMBEDDING_TENSOR]);
  const blobName = createHash('sha256').update(`${s.repo}@${sourceCommit}/${shard}#${EMBEDDING_TENSOR}`).digest('hex');
  const blob = s.cache.blobPath(blobName);
  const size = entry.data_offsets[1] - entry.data_offsets[0];
  await downloadFile({
    url,
    label: `${EMBEDDING_FILE} (${EMBEDDING_TENSOR} from ${where})`,
    size,
    offset: 8 + headerLength + entry.data_offsets[0],
    prefix: standaloneHeader(entry, { source_repo: s.repo, source_revision: sourceCommit, source_file: shard, source_tensor: EMBEDDING_TENSOR }),
    dest: blob,
    fetch: s.client.fetchFile,
    explainStatus: explain,
    progress: s.progress.file(EMBEDDING_FILE),
    ...(s.signal ? { signal: s.signal } : {}),
  });
  await s.cache.link(s.commit, EMBEDDING_FILE, blob);
}
