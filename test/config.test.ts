import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ConfigError, engineSettings, loadConfig } from '../src/config.js';

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
      MAX_BATCH: 8,
      MAX_QUEUE: 16,
      MAX_UPLOAD_BYTES: 26214400,
      MAX_UPLOADS: 64,
      UPLOAD_IDLE_SECONDS: 30,
      UPLOAD_MIN_BYTES_PER_SECOND: 500,
      UPLOAD_RATE_GRACE_SECONDS: 10,
      HEADERS_TIMEOUT_SECONDS: 30,
      MAX_AUDIO_SECONDS: 7200,
      DECODE_TIMEOUT_SECONDS: 120,
      SHUTDOWN_GRACE_SECONDS: 30,
      MODEL: 'Reza2kn/mega-asr-onnx',
      MODEL_REVISION: 'main',
      EMBEDDING_MODEL: 'Qwen/Qwen3-ASR-1.7B',
      EMBEDDING_REVISION: 'main',
      HF_ENDPOINT: 'https://huggingface.co',
      HF_HUB_OFFLINE: false,
      ASR_DEVICE: 'auto',
      ASR_BACKEND: 'auto',
      ASR_CUDA_DEVICE_ID: 0,
      ASR_INTRA_OP_THREADS: 0,
      LEAN_GRAPHS: true,
      CPU_INT8_MATMULS: true,
      CPU_FLOAT32_CACHE: true,
      ASR_CHUNK_SECONDS: 30,
      ASR_TOKENS_PER_SECOND: 8,
      ASR_TOKEN_BUDGET_BASE: 32,
      ASR_VAD: true,
      ASR_MAX_SEGMENT_SECONDS: 15,
      MAX_REALTIME_SESSIONS: 32,
      REALTIME_IDLE_SECONDS: 60,
      REALTIME_PARTIAL_SECONDS: 0.8,
      REALTIME_MAX_APPEND_BYTES: 15 * 1024 * 1024,
      REALTIME_MAX_EVENTS_PER_SECOND: 400,
    });
  });

  it('coerces numbers and treats empty strings as unset', () => {
    const c = loadConfig({ ASR_CHUNK_SECONDS: '45', ASR_DEVICE: '', ASR_TOKENS_PER_SECOND: '12.5' });
    expect(c).toMatchObject({ ASR_CHUNK_SECONDS: 45, ASR_DEVICE: 'auto', ASR_TOKENS_PER_SECOND: 12.5 });
  });

  it('splits comma lists', () => {
    expect(loadConfig({ API_KEYS: 'k1, k2,,', MODEL_ALIASES: 'whisper-1' })).toMatchObject({ API_KEYS: ['k1', 'k2'], MODEL_ALIASES: ['whisper-1'] });
  });

  it('reads the model source and Hugging Face variables as huggingface_hub does', () => {
    const c = loadConfig({ MODEL: 'acme/asr-onnx', MODEL_REVISION: 'v2', HF_ENDPOINT: 'http://127.0.0.1:9999/', HF_HUB_OFFLINE: 'YES', HF_TOKEN: 'hf_x', HF_HOME: '/data' });
    expect(c).toMatchObject({ MODEL: 'acme/asr-onnx', MODEL_REVISION: 'v2', HF_ENDPOINT: 'http://127.0.0.1:9999', HF_HUB_OFFLINE: true, HF_TOKEN: 'hf_x', HF_HOME: '/data' });
    expect(c.MODEL_DIR).toBeUndefined();
    expect(loadConfig({ HF_HUB_OFFLINE: '0' }).HF_HUB_OFFLINE).toBe(false);
    expect(() => loadConfig({ MODEL: 'no-owner' })).toThrow(/MODEL: expected a Hugging Face repo id/);
    expect(() => loadConfig({ HF_ENDPOINT: 'ftp://x' })).toThrow(/HF_ENDPOINT/);
    expect(() => loadConfig({ HF_HUB_OFFLINE: 'maybe' })).toThrow(/HF_HUB_OFFLINE/);
  });

  it('passes the batch size and the graph rewrite switches to the engine', () => {
    expect(engineSettings(loadConfig({}))).toMatchObject({ maxBatch: 8, leanGraphs: true, cpuInt8Matmuls: true, cpuFloat32Cache: true });
    expect(engineSettings(loadConfig({ MAX_BATCH: '32', LEAN_GRAPHS: 'false', CPU_INT8_MATMULS: 'false', CPU_FLOAT32_CACHE: 'false', ASR_DEVICE: 'cpu', ASR_BACKEND: 'webgpu' }))).toEqual({
      device: 'cpu',
      backend: 'webgpu',
      cudaDeviceId: 0,
      intraOpThreads: availableParallelism(),
      maxBatch: 32,
      leanGraphs: false,
      cpuInt8Matmuls: false,
      cpuFloat32Cache: false,
    });
    expect(() => loadConfig({ MAX_BATCH: '0' })).toThrow(/MAX_BATCH/);
    expect(() => loadConfig({ MAX_BATCH: '2.5' })).toThrow(/MAX_BATCH/);
    expect(() => loadConfig({ LEAN_GRAPHS: 'sometimes' })).toThrow(/LEAN_GRAPHS/);
    expect(() => loadConfig({ CPU_INT8_MATMULS: 'fast' })).toThrow(/CPU_INT8_MATMULS/);
    expect(() => loadConfig({ CPU_FLOAT32_CACHE: 'maybe' })).toThrow(/CPU_FLOAT32_CACHE/);
    expect(() => loadConfig({ ASR_BACKEND: 'cuda' })).toThrow(/ASR_BACKEND/);
    expect(() => loadConfig({ ASR_BACKEND: 'webgpu', WORKERS: '2' })).toThrow(/WORKERS.*ASR_BACKEND=webgpu takes WORKERS=1/);
    expect(loadConfig({ ASR_BACKEND: 'webgpu' }).WORKERS).toBe(1);
  });

  it("gives each ASR worker's sessions its share of the cores unless ASR_INTRA_OP_THREADS says how many", () => {
    const cores = availableParallelism();
    expect(engineSettings(loadConfig({})).intraOpThreads).toBe(cores);
    expect(engineSettings(loadConfig({ WORKERS: String(cores) })).intraOpThreads).toBe(1);
    expect(engineSettings(loadConfig({ WORKERS: String(cores * 4) })).intraOpThreads).toBe(1);
    expect(engineSettings(loadConfig({ WORKERS: '1', ASR_INTRA_OP_THREADS: '3' })).intraOpThreads).toBe(3);
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
