import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';

describe('config', () => {
  it('has documented defaults', () => {
    expect(loadConfig({})).toEqual({
      MODEL_DIR: 'models/mega-asr-onnx',
      ASR_DEVICE: 'auto',
      ASR_CUDA_DEVICE_ID: 0,
      ASR_INTRA_OP_THREADS: 0,
      ASR_CHUNK_SECONDS: 30,
      ASR_TOKENS_PER_SECOND: 8,
      ASR_TOKEN_BUDGET_BASE: 32,
    });
  });

  it('coerces numbers and treats empty strings as unset', () => {
    const c = loadConfig({ ASR_CHUNK_SECONDS: '45', ASR_DEVICE: '', ASR_TOKENS_PER_SECOND: '12.5' });
    expect(c).toMatchObject({ ASR_CHUNK_SECONDS: 45, ASR_DEVICE: 'auto', ASR_TOKENS_PER_SECOND: 12.5 });
  });

  it('names the bad variable', () => {
    expect(() => loadConfig({ ASR_DEVICE: 'tpu' })).toThrow(ConfigError);
    expect(() => loadConfig({ ASR_DEVICE: 'tpu' })).toThrow(/ASR_DEVICE/);
    expect(() => loadConfig({ ASR_CHUNK_SECONDS: '-3' })).toThrow(/ASR_CHUNK_SECONDS/);
    expect(() => loadConfig({ ASR_TOKEN_BUDGET_BASE: 'many' })).toThrow(/ASR_TOKEN_BUDGET_BASE/);
  });
});
