import type { DecoderBackend, PrefillInput } from '../../src/asr/backend.js';

/**
 * Greedy ids of one prompt decoded alone through a backend, as a benchmark drives it: the prefill's id, then one
 * per step for `steps` steps; the handle is released after. The reference that batched and foreign decodes match.
 */
export async function decodeAlone(backend: DecoderBackend, prompt: PrefillInput, steps: number): Promise<number[]> {
  const { sequences } = await backend.prefill([prompt]);
  const { firstId, cache } = sequences[0]!;
  const ids = [firstId];
  for (let i = 0; i < steps; i++) ids.push((await backend.step([{ cache, token: ids.at(-1)! }])).ids[0]!);
  backend.release(cache);
  return ids;
}
