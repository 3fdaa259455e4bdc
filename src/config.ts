import { z } from 'zod';

/**
 * Every setting of the service, read from environment variables and validated once.
 * Defaults are documented in the README; a bad value fails at startup with the variable's name.
 */
const positiveNumber = z.coerce.number().positive();

export const configSchema = z.object({
  MODEL_DIR: z.string().min(1).default('models/mega-asr-onnx'),
  ASR_DEVICE: z.enum(['auto', 'cuda', 'cpu']).default('auto'),
  ASR_CUDA_DEVICE_ID: z.coerce.number().int().min(0).default(0),
  /** ORT intra-op threads per session; 0 lets onnxruntime decide. */
  ASR_INTRA_OP_THREADS: z.coerce.number().int().min(0).default(0),
  /** Audio longer than this is split at the quietest point near each limit (contract section 4). */
  ASR_CHUNK_SECONDS: positiveNumber.max(1200).default(30),
  /** Token budget per chunk = ASR_TOKEN_BUDGET_BASE + ceil(ASR_TOKENS_PER_SECOND * seconds). */
  ASR_TOKENS_PER_SECOND: positiveNumber.default(8),
  ASR_TOKEN_BUDGET_BASE: z.coerce.number().int().min(1).default(32),
});

export type Config = z.infer<typeof configSchema>;

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
