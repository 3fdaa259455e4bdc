import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from './errors.js';

export interface ModelFiles {
  encoder: string;
  prefill: string;
  step: string;
}

/** Among several encoder exports, the model card recommends the INT8 one. */
const ENCODER_PREFERENCE = ['int8', 'int4', 'fp16', 'fp32'];

function pick(names: string[], pattern: RegExp, preference: string[]): string | undefined {
  const matches = names.filter((n) => pattern.test(n));
  const rank = (n: string) => {
    const i = preference.findIndex((p) => n.includes(p));
    return i < 0 ? preference.length : i;
  };
  return matches.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))[0];
}

/** The three graphs the engine runs among the file names of one folder (shared with the hub's file selection). */
export function chooseGraphs(names: string[]): ModelFiles | undefined {
  const encoder = pick(names, /^audio_encoder.*\.onnx$/, ENCODER_PREFERENCE);
  const prefill = pick(names, /^decoder_prefill.*\.onnx$/, ['int4']);
  const step = pick(names, /^decoder_step.*\.onnx$/, ['int4']);
  return encoder && prefill && step ? { encoder, prefill, step } : undefined;
}

/** Where the graphs are looked for: `onnx/` (as published), then the top of the model directory. */
export const GRAPH_FOLDERS = ['onnx', ''] as const;

/** Finds the three ONNX graphs in `onnx/` (as published) or at the top of the model directory. */
export function findModelFiles(modelDir: string): ModelFiles {
  if (!existsSync(modelDir)) throw new ModelLoadError(`model directory ${modelDir} does not exist`);
  for (const folder of GRAPH_FOLDERS) {
    const dir = join(modelDir, folder);
    if (!existsSync(dir)) continue;
    const graphs = chooseGraphs(readdirSync(dir));
    if (graphs) return { encoder: join(dir, graphs.encoder), prefill: join(dir, graphs.prefill), step: join(dir, graphs.step) };
  }
  throw new ModelLoadError(
    `${modelDir}: expected onnx/audio_encoder_*.onnx, onnx/decoder_prefill_*.onnx and onnx/decoder_step_*.onnx (each with its .data file)`,
  );
}

/** The feature extractor the model was trained with must be the one logMel implements. */
const EXPECTED_FEATURES = { feature_size: 128, sampling_rate: 16000, hop_length: 160, n_fft: 400 } as const;

export function checkPreprocessorConfig(modelDir: string): void {
  const path = join(modelDir, 'preprocessor_config.json');
  if (!existsSync(path)) return;
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new ModelLoadError(`${path}: not valid JSON (${(err as Error).message})`);
  }
  for (const [key, expected] of Object.entries(EXPECTED_FEATURES)) {
    if (key in config && config[key] !== expected) {
      throw new ModelLoadError(`${path}: expected ${key} = ${expected} (128-bin Whisper log-mel at 16 kHz); found ${String(config[key])}`);
    }
  }
}
