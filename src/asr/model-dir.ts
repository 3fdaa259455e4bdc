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

function pick(dir: string, names: string[], pattern: RegExp, preference: string[]): string | undefined {
  const matches = names.filter((n) => pattern.test(n));
  const rank = (n: string) => {
    const i = preference.findIndex((p) => n.includes(p));
    return i < 0 ? preference.length : i;
  };
  const best = matches.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))[0];
  return best ? join(dir, best) : undefined;
}

/** Finds the three ONNX graphs in `onnx/` (as published) or at the top of the model directory. */
export function findModelFiles(modelDir: string): ModelFiles {
  if (!existsSync(modelDir)) throw new ModelLoadError(`model directory ${modelDir} does not exist`);
  for (const dir of [join(modelDir, 'onnx'), modelDir]) {
    if (!existsSync(dir)) continue;
    const names = readdirSync(dir);
    const encoder = pick(dir, names, /^audio_encoder.*\.onnx$/, ENCODER_PREFERENCE);
    const prefill = pick(dir, names, /^decoder_prefill.*\.onnx$/, ['int4']);
    const step = pick(dir, names, /^decoder_step.*\.onnx$/, ['int4']);
    if (encoder && prefill && step) return { encoder, prefill, step };
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
