import { findEmbeddingFiles, loadEmbeddingTableOnce, type SharedEmbeddingTable } from '../asr/embeddings.js';

/** The model's token embedding table, read once here and shared with every worker (absent: the decoders embed). */
export function sharedEmbeddings(modelDir: string): SharedEmbeddingTable | undefined {
  const [file] = findEmbeddingFiles(modelDir);
  return file ? loadEmbeddingTableOnce(file) : undefined;
}
