import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';

describe('config', () => {
  it('has documented defaults', () => {
    expect(loadConfig({})).toEqual({
      HOST: '0.0.0.0',
      PORT: 8000,
      LOG_LEVEL: 'info',
      SERVED_MODEL_ID: 'mega-asr',
      MODEL_ALIASES: ['whisper-1', 'gpt-4o-transcribe', 'gpt-4o-mini-transcribe'],
      API_KEYS: [],
      WORKERS: 1,
      DECODE_WORKERS: 2,
      MAX_QUEUE: 16,
      MAX_UPLOAD_BYTES: 26214400,
      MAX_AUDIO_SECONDS: 7200,
      DECODE_TIMEOUT_SECONDS: 120,
      SHUTDOWN_GRACE_SECONDS: 30,
      MODEL_DIR: 'models/mega-asr-onnx',
      ASR_DEVICE: 'auto',
      ASR_CUDA_DEVICE_ID: 0,
      ASR_INTRA_OP_THREADS: 0,
      ASR_CHUNK_SECONDS: 30,
      ASR_TOKENS_PER_SECOND: 8,
      ASR_TOKEN_BUDGET_BASE: 32,
      ASR_VAD: true,
      ASR_MAX_SEGMENT_SECONDS: 15,
    });
  });

  it('coerces numbers and treats empty strings as unset', () => {
    const c = loadConfig({ ASR_CHUNK_SECONDS: '45', ASR_DEVICE: '', ASR_TOKENS_PER_SECOND: '12.5' });
    expect(c).toMatchObject({ ASR_CHUNK_SECONDS: 45, ASR_DEVICE: 'auto', ASR_TOKENS_PER_SECOND: 12.5 });
  });

  it('splits comma lists', () => {
    expect(loadConfig({ API_KEYS: 'k1, k2,,', MODEL_ALIASES: 'whisper-1' })).toMatchObject({ API_KEYS: ['k1', 'k2'], MODEL_ALIASES: ['whisper-1'] });
  });

  it('names the bad variable', () => {
    expect(() => loadConfig({ ASR_DEVICE: 'tpu' })).toThrow(ConfigError);
    expect(() => loadConfig({ ASR_DEVICE: 'tpu' })).toThrow(/ASR_DEVICE/);
    expect(() => loadConfig({ ASR_CHUNK_SECONDS: '-3' })).toThrow(/ASR_CHUNK_SECONDS/);
    expect(() => loadConfig({ ASR_TOKEN_BUDGET_BASE: 'many' })).toThrow(/ASR_TOKEN_BUDGET_BASE/);
    expect(() => loadConfig({ PORT: '70000' })).toThrow(/PORT/);
    expect(() => loadConfig({ WORKERS: '0' })).toThrow(/WORKERS/);
    expect(() => loadConfig({ MAX_AUDIO_SECONDS: '0' })).toThrow(/MAX_AUDIO_SECONDS/);
    expect(() => loadConfig({ DECODE_TIMEOUT_SECONDS: 'soon' })).toThrow(/DECODE_TIMEOUT_SECONDS/);
  });
});
