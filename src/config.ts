import { availableParallelism } from 'node:os';
import { z } from 'zod';

/**
 * Every setting of the service, read from environment variables and validated once.
 * Defaults are documented in the README; a bad value fails at startup with the variable's name.
 */
const positiveNumber = z.coerce.number().positive();

const commaList = z
  .string()
  .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean));

/** huggingface_hub's truthy spellings */
const flag = z
  .string()
  .toLowerCase()
  .pipe(z.enum(['1', '0', 'true', 'false', 'yes', 'no', 'on', 'off']))
  .transform((v) => ['1', 'true', 'yes', 'on'].includes(v));

const repoId = z.string().regex(/^[\w.-]+\/[\w.-]+$/, 'expected a Hugging Face repo id, owner/name');

export const configSchema = z.object({
  HOST: z.string().min(1).default('0.0.0.0'),
  PORT: z.coerce.number().int().min(0).max(65535).default(8000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** the model id clients send and /v1/models lists */
  SERVED_MODEL_ID: z.string().min(1).default('mega-asr'),
  /** other ids accepted as this model, so code written for OpenAI works unchanged */
  MODEL_ALIASES: commaList.default(['whisper-1', 'gpt-4o-transcribe', 'gpt-4o-mini-transcribe']),
  /** bearer keys; empty: no authentication */
  API_KEYS: commaList.default([]),
  /** ASR worker threads, each with its own warm sessions (one per GPU is the natural start) */
  WORKERS: z.coerce.number().int().min(1).max(64).default(1),
  /** threads that decode and resample uploads, so that never happens on the HTTP event loop or an ASR worker */
  DECODE_WORKERS: z.coerce.number().int().min(1).max(64).default(2),
  /**
   * sequences one ASR worker decodes together (continuous batching, when the model's decoders take a batch).
   * 8 from this project's 2-core CPU measurements (a step of 8 costs ~2.4x one); GPUs want 32-64.
   */
  MAX_BATCH: z.coerce.number().int().min(1).max(256).default(8),
  /** admitted requests waiting beyond the sequences running; more are refused with 429 before their body is read */
  MAX_QUEUE: z.coerce.number().int().min(0).default(16),
  MAX_UPLOAD_BYTES: z.coerce.number().int().min(1).default(25 * 1024 * 1024),
  /** request bodies read at once (each buffers up to MAX_UPLOAD_BYTES); one more is refused with 429 before its body */
  MAX_UPLOADS: z.coerce.number().int().min(1).max(100000).default(64),
  /** a request body with no byte arriving for this long is cut (408), as nginx's client_body_timeout */
  UPLOAD_IDLE_SECONDS: positiveNumber.max(3600).default(30),
  /**
   * a body must have sent this many bytes per second past UPLOAD_RATE_GRACE_SECONDS or it is cut (408), as Apache
   * mod_reqtimeout's MinRate; 0 turns the rate check off. 500 B/s is 4 kbit/s, far below a 2G uplink.
   */
  UPLOAD_MIN_BYTES_PER_SECOND: z.coerce.number().int().min(0).default(500),
  UPLOAD_RATE_GRACE_SECONDS: z.coerce.number().min(0).max(3600).default(10),
  /** request headers not complete after this long are cut (408): Node's headersTimeout */
  HEADERS_TIMEOUT_SECONDS: positiveNumber.max(3600).default(30),
  /** longer audio is refused (400) from its header or decoded length, before any model work */
  MAX_AUDIO_SECONDS: positiveNumber.default(7200),
  /** wall-clock limit of one ffmpeg decode; a file that takes longer is refused as damaged */
  DECODE_TIMEOUT_SECONDS: positiveNumber.max(3600).default(120),
  /** on SIGTERM/SIGINT: in-flight work may finish for this long, then it is cancelled between decode steps */
  SHUTDOWN_GRACE_SECONDS: z.coerce.number().min(0).default(30),
  /** Hugging Face repo of the ONNX export, fetched into the Hugging Face cache on first start (unless MODEL_DIR) */
  MODEL: repoId.default('Reza2kn/mega-asr-onnx'),
  /** branch, tag or commit hash of MODEL */
  MODEL_REVISION: z.string().min(1).default('main'),
  /** a local model directory; when set, nothing is downloaded */
  MODEL_DIR: z.string().min(1).optional(),
  /** where the token embedding table comes from when MODEL's decoders take inputs_embeds and MODEL ships none */
  EMBEDDING_MODEL: repoId.default('Qwen/Qwen3-ASR-1.7B'),
  EMBEDDING_REVISION: z.string().min(1).default('main'),
  /** Hugging Face's own variables, with huggingface_hub's meaning */
  HF_ENDPOINT: z.url({ protocol: /^https?$/ }).default('https://huggingface.co').transform((u) => u.replace(/\/+$/, '')),
  HF_TOKEN: z.string().min(1).optional(),
  /** where `huggingface-cli login` saved a token (default HF_HOME/token), read when HF_TOKEN is unset */
  HF_TOKEN_PATH: z.string().min(1).optional(),
  HF_HUB_OFFLINE: flag.default(false),
  HF_HUB_CACHE: z.string().min(1).optional(),
  HF_HOME: z.string().min(1).optional(),
  XDG_CACHE_HOME: z.string().min(1).optional(),
  ASR_DEVICE: z.enum(['auto', 'cuda', 'cpu']).default('auto'),
  /** where the decoder keeps its KV cache: host memory, or the GPU through WebGPU (auto: host until measured) */
  ASR_BACKEND: z.enum(['auto', 'host', 'webgpu']).default('auto'),
  ASR_CUDA_DEVICE_ID: z.coerce.number().int().min(0).default(0),
  /** ORT intra-op threads per session; 0 lets onnxruntime decide. */
  ASR_INTRA_OP_THREADS: z.coerce.number().int().min(0).default(0),
  /** the decoders' graphs rewritten at load to return token ids instead of logits (false: as exported) */
  LEAN_GRAPHS: flag.default(true),
  /** on the CPU provider, 4-bit matmuls with int8 activations (false: fp32 activations, as exported) */
  CPU_INT8_MATMULS: flag.default(true),
  /** on the CPU provider, a float16 cache held as float32 by the new-column step (false: cast at every step; half the memory) */
  CPU_FLOAT32_CACHE: flag.default(true),
  /** Audio longer than this is split at the quietest point near each limit (contract section 4). */
  ASR_CHUNK_SECONDS: positiveNumber.max(1200).default(30),
  /** Token budget per chunk = ASR_TOKEN_BUDGET_BASE + ceil(ASR_TOKENS_PER_SECOND * seconds). */
  ASR_TOKENS_PER_SECOND: positiveNumber.default(8),
  ASR_TOKEN_BUDGET_BASE: z.coerce.number().int().min(1).default(32),
  /**
   * Voice activity detection before the model: silence and noise are never transcribed, and speech is cut at
   * pauses into segments of at most ASR_MAX_SEGMENT_SECONDS. false: the reference pipeline exactly.
   */
  ASR_VAD: z
    .enum(['true', 'false', '1', '0'])
    .default('true')
    .transform((v) => v === 'true' || v === '1'),
  ASR_MAX_SEGMENT_SECONDS: positiveNumber.max(1200).default(15),
  /** live streams (WebSocket sessions of /v1/realtime) open at once; one more is refused (error event, close 1013) */
  MAX_REALTIME_SESSIONS: z.coerce.number().int().min(0).max(100000).default(32),
  /** a realtime session with no client event for this long is closed (error event, close 1000) */
  REALTIME_IDLE_SECONDS: positiveNumber.max(86400).default(60),
  /** seconds of new turn audio between partial re-transcriptions of a live turn */
  REALTIME_PARTIAL_SECONDS: positiveNumber.min(0.2).max(10).default(0.8),
  /** decoded audio bytes one input_audio_buffer.append may carry (OpenAI's limit: 15 MiB) */
  REALTIME_MAX_APPEND_BYTES: z.coerce.number().int().min(1024).max(64 * 1024 * 1024).default(15 * 1024 * 1024),
  /** client events one realtime session may send per second; more are refused and their audio dropped */
  REALTIME_MAX_EVENTS_PER_SECOND: z.coerce.number().int().min(1).default(400),
  /** PEM certificate (chain) and private key files: both set, the server listens with HTTPS (and wss:) */
  TLS_CERT: z.string().min(1).optional(),
  TLS_KEY: z.string().min(1).optional(),
})
  .refine((c) => (c.TLS_CERT === undefined) === (c.TLS_KEY === undefined), {
    message: 'set both TLS_CERT and TLS_KEY (HTTPS), or neither (HTTP)',
    path: ['TLS_CERT'],
  })
  // Two threads running sessions on onnxruntime's WebGPU device (one per process) crash it (measured on 1.30).
  .refine((c) => c.ASR_BACKEND !== 'webgpu' || c.WORKERS === 1, {
    message: 'ASR_BACKEND=webgpu takes WORKERS=1: the GPU is driven by one worker, which decodes up to MAX_BATCH sequences together',
    path: ['WORKERS'],
  });

export type Config = z.infer<typeof configSchema>;

/**
 * onnxruntime threads per session: as set, or with 0 the machine's cores shared among the ASR workers. onnxruntime's
 * own default counts physical cores as it detects them, and on virtual machines that can be 1 of 2: the encoder and
 * the prefill, which are compute-bound, then ran on one core (on the project's 2-core machine the service's prefill
 * took 1.49 s against 1.06 s with 2 threads; a single decode step, bound by reading the weights, gained nothing).
 */
function intraOpThreads(config: Config): number {
  return config.ASR_INTRA_OP_THREADS || Math.max(1, Math.floor(availableParallelism() / config.WORKERS));
}

/** How the engine loads (device, threads, batch, graphs): the service, the CLI and the eval take it from here. */
export function engineSettings(config: Config) {
  return {
    device: config.ASR_DEVICE,
    backend: config.ASR_BACKEND,
    cudaDeviceId: config.ASR_CUDA_DEVICE_ID,
    intraOpThreads: intraOpThreads(config),
    maxBatch: config.MAX_BATCH,
    leanGraphs: config.LEAN_GRAPHS,
    cpuInt8Matmuls: config.CPU_INT8_MATMULS,
    cpuFloat32Cache: config.CPU_FLOAT32_CACHE,
  };
}

/** How audio is cut into pieces and how many tokens each may take: the same for the service, the CLI and the eval. */
export function transcriptionSettings(config: Config) {
  return {
    chunkSeconds: config.ASR_CHUNK_SECONDS,
    tokensPerSecond: config.ASR_TOKENS_PER_SECOND,
    tokenBudgetBase: config.ASR_TOKEN_BUDGET_BASE,
    ...(config.ASR_VAD ? { vad: { maxSegmentSeconds: config.ASR_MAX_SEGMENT_SECONDS } } : {}),
  };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // Empty strings mean "unset", as in docker-compose files with `VAR=`.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = configSchema.safeParse(cleaned);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${problems}`);
  }
  return parsed.data;
}
