import { closeSync, copyFileSync, linkSync, mkdirSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { float32ToBfloat16Bits } from '../../src/asr/half.js';
import { Tokenizer } from '../../src/asr/tokenizer.js';
import type { GraphBuilder } from '../onnx-graph.js';
import { writeAsrTokenizerFiles } from '../tokenizer-files.js';
import { FIXTURE_FILES, PREPROCESSOR_CONFIG } from '../fixture/model-dir.js';
import { buildFullDecoder, decoderWeights, type DecoderDims } from './decoder.js';
import { buildFullEncoder, type EncoderDims } from './encoder.js';
import { SCRIPT_MARKER, textScript, type TextScript } from './script.js';
import { FastRandom, WeightFile, writeRandom } from './weights.js';

export interface FullSizeDims {
  decoder: DecoderDims;
  encoder: EncoderDims;
}

/** Qwen3-ASR-1.7B's shapes. */
export const FULL_SIZE_DIMS: FullSizeDims = {
  decoder: { layers: 28, hidden: 2048, heads: 16, kvHeads: 8, headDim: 128, ffn: 6144, vocab: 151936 },
  encoder: { layers: 24, width: 1024, heads: 16, ffn: 4096, convChannels: 480, output: 2048 },
};

/** The same topology at toy widths: the same builder and ops in a few MB (tests). */
export const TOY_DIMS: FullSizeDims = {
  decoder: { layers: 2, hidden: 64, heads: 4, kvHeads: 2, headDim: 16, ffn: 128, vocab: 151936 },
  encoder: { layers: 2, width: 64, heads: 4, ffn: 128, convChannels: 8, output: 64 },
};

export interface FullSizeOptions {
  batch: 'dynamic' | 1;
  kv: 'float16' | 'float32';
  stopAfter?: number;
  /** say the script (script.ts) as far as the audio allows, then <|im_end|>; not with stopAfter */
  scriptedText?: boolean;
  seed: number;
  /** smaller shapes with the same topology (tests) */
  dims?: FullSizeDims;
}

export interface FullSizeReport {
  seconds: number;
  /** bytes per file written, by path relative to the model directory */
  files: Record<string, number>;
}

export const EMBEDDING_FILE = 'embed_tokens.safetensors';
const EMBEDDING_NAME = 'thinker.model.embed_tokens.weight';

/** safetensors holding one bf16 [vocab, hidden] table of random values (magnitudes 0.5 .. 2, so the token fed
 *  weighs in the residual stream as much as the layers' outputs and the noise text moves from token to token).
 *  The `marked` rows hold SCRIPT_MARKER in their last channel (the script's tokens). */
function writeEmbeddingTable(path: string, vocab: number, hidden: number, random: FastRandom, marked: readonly number[]): void {
  const length = vocab * hidden * 2;
  let header = JSON.stringify({ __metadata__: { format: 'pt' }, [EMBEDDING_NAME]: { dtype: 'BF16', shape: [vocab, hidden], data_offsets: [0, length] } });
  header += ' '.repeat((8 - (header.length % 8)) % 8);
  const prefix = Buffer.alloc(8 + header.length);
  prefix.writeBigUInt64LE(BigInt(header.length));
  prefix.write(header, 8, 'latin1');
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, prefix, 0, prefix.length, 0);
    const marker = float32ToBfloat16Bits(SCRIPT_MARKER);
    writeRandom(fd, prefix.length, length, random, { kind: 'bfloat16', exponent: -1 }, (bytes, start) => {
      for (const row of marked) {
        const at = (row * hidden + hidden - 1) * 2 - start;
        if (at >= 0 && at < bytes.length) [bytes[at], bytes[at + 1]] = [marker & 0xff, marker >> 8];
      }
    });
  } finally {
    closeSync(fd);
  }
}

function saveGraph(dir: string, file: string, graph: GraphBuilder): void {
  const { model, externalData } = graph.build(`${file.split('/').pop()}.data`);
  // Every weight went through a WeightFile; the builder's own external data would be a second file.
  if (externalData.length > 0) throw new Error(`${file}: constants outside the weight file`);
  writeFileSync(join(dir, file), model);
}

/** Hard link when the file system allows (no second gigabyte written), else a copy. */
function linkOrCopy(from: string, to: string): void {
  rmSync(to, { force: true });
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}

/**
 * Writes the full-size stand-in: encoder, prefill and step graphs with Qwen3-ASR-1.7B's shapes and operator mix
 * and random 4-bit weights from `seed`, the bf16 embedding table, tokenizer and preprocessor files. The two decoders
 * read the same weights: the step's .data file is a hard link to the prefill's.
 */
export function writeFullSizeModel(dir: string, o: FullSizeOptions): FullSizeReport {
  if (o.stopAfter !== undefined && o.scriptedText) throw new Error('stopAfter and scriptedText exclude each other: the script decides when to stop');
  const started = performance.now();
  const dims = o.dims ?? FULL_SIZE_DIMS;
  const random = new FastRandom(o.seed);
  mkdirSync(join(dir, 'onnx'), { recursive: true });
  writeAsrTokenizerFiles(dir, 'tokenizer.json');
  const script: TextScript | undefined = o.scriptedText ? textScript(Tokenizer.fromModelDir(dir), dims.decoder.hidden) : undefined;
  writeFileSync(join(dir, 'preprocessor_config.json'), JSON.stringify(PREPROCESSOR_CONFIG, null, 2));

  const encoderData = new WeightFile(join(dir, `${FIXTURE_FILES.encoder}.data`), `${FIXTURE_FILES.encoder.split('/').pop()}.data`, random);
  try {
    saveGraph(dir, FIXTURE_FILES.encoder, buildFullEncoder(dims.encoder, encoderData));
  } finally {
    encoderData.close();
  }

  const prefillData = `${FIXTURE_FILES.prefill.split('/').pop()}.data`;
  const stepData = `${FIXTURE_FILES.step.split('/').pop()}.data`;
  const decoderData = new WeightFile(join(dir, 'onnx', prefillData), prefillData, random);
  try {
    const weights = decoderWeights(decoderData, dims.decoder, script);
    const options = { batch: o.batch, kv: o.kv, ...(o.stopAfter !== undefined ? { stopAfter: o.stopAfter } : {}), ...(script ? { script } : {}) };
    saveGraph(dir, FIXTURE_FILES.prefill, buildFullDecoder(dims.decoder, weights, { ...options, kind: 'prefill' }));
    const step = buildFullDecoder(dims.decoder, weights, { ...options, kind: 'step' });
    step.moveExternals(prefillData, stepData);
    saveGraph(dir, FIXTURE_FILES.step, step);
  } finally {
    decoderData.close();
  }
  linkOrCopy(join(dir, 'onnx', prefillData), join(dir, 'onnx', stepData));

  writeEmbeddingTable(join(dir, EMBEDDING_FILE), dims.decoder.vocab, dims.decoder.hidden, random, script?.tokens ?? []);
  const scriptedText = script && {
    rule: `language English<asr_text> then one word per ${script.rowsPerWord} encoder rows (13 a second of audio), at most ${script.words.length}, then <|im_end|>; assumes no context and no language other than English`,
    header: 'language English<asr_text>',
    words: script.words,
  };
  writeFileSync(
    join(dir, 'fixture.json'),
    JSON.stringify({ variant: 'full-size', seed: o.seed, batch: o.batch, kv: o.kv, stopAfter: o.stopAfter ?? null, scriptedText: scriptedText ?? null, dims }, null, 2),
  );
  const files: Record<string, number> = {};
  for (const f of [FIXTURE_FILES.encoder, FIXTURE_FILES.prefill, FIXTURE_FILES.step]) {
    files[f] = statSync(join(dir, f)).size;
    files[`${f}.data`] = statSync(join(dir, `${f}.data`)).size;
  }
  files[EMBEDDING_FILE] = statSync(join(dir, EMBEDDING_FILE)).size;
  return { seconds: (performance.now() - started) / 1000, files };
}
