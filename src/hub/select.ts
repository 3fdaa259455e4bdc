import { basename, posix } from 'node:path';
import { chooseGraphs, GRAPH_FOLDERS, type ModelFiles } from '../asr/model-dir.js';
import type { RepoFile } from './api.js';
import { HubError } from './errors.js';

export interface Selection {
  files: RepoFile[];
  /** repo paths of the three graphs the engine will run */
  graphs: ModelFiles;
  /** repo path of an embedding table the repo ships, if any */
  embeddingTable?: string;
}

/** Tokenizer, preprocessor and other small configuration at the top of the repo. */
const SMALL_CONFIG = /^[^/]+\.(json|txt|jinja)$/;
const SMALL_CONFIG_MAX_BYTES = 64 * 1024 * 1024;
const EMBEDDING_TABLE = /(^|\/)[^/]*embed[^/]*\.(npy|safetensors)$/i;

/**
 * Only what the engine needs, chosen by the same rule it uses on a directory (src/asr/model-dir.ts): the INT8
 * audio encoder when there is one, else INT4; the INT4 prefill and step decoders; each with its external-data
 * files; tokenizer and preprocessor files; an embedding table when the repo ships one.
 */
export function selectModelFiles(repo: string, files: RepoFile[]): Selection {
  for (const folder of GRAPH_FOLDERS) {
    const inFolder = files.filter((f) => posix.dirname(f.path) === (folder || '.'));
    const names = chooseGraphs(inFolder.map((f) => basename(f.path)));
    if (!names) continue;
    const graphs: ModelFiles = {
      encoder: posix.join(folder, names.encoder),
      prefill: posix.join(folder, names.prefill),
      step: posix.join(folder, names.step),
    };
    const graphFiles = Object.values(graphs);
    // `x.onnx` keeps its weights in `x.onnx.data` / `x.onnx_data` (possibly several)
    const isGraphOrData = (path: string) => graphFiles.some((g) => path === g || (path.startsWith(g) && /^[._]data/.test(path.slice(g.length))));
    const table = files.find((f) => EMBEDDING_TABLE.test(f.path) && (posix.dirname(f.path) === '.' || posix.dirname(f.path) === 'onnx'));
    const chosen = files.filter(
      (f) => isGraphOrData(f.path) || (SMALL_CONFIG.test(f.path) && f.size <= SMALL_CONFIG_MAX_BYTES) || f === table,
    );
    return { files: chosen, graphs, ...(table ? { embeddingTable: table.path } : {}) };
  }
  throw new HubError(
    `${repo}: no audio_encoder_*.onnx, decoder_prefill_*.onnx and decoder_step_*.onnx found in onnx/ or at the top of the repo: ` +
      'MODEL must name a Mega-ASR/Qwen3-ASR ONNX export',
  );
}
