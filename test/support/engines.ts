import { AsrEngine } from '../../src/asr/engine.js';

/**
 * A model's engine on its graphs as exported (LEAN_GRAPHS=false) beside the default one with every load-time
 * rewrite, both on one CPU thread with fp32 activations (so the two decode the same tokens), and what the
 * default one logged while loading.
 */
export async function exportedAndLean(modelDir: string): Promise<{ exported: AsrEngine; lean: AsrEngine; said: string[] }> {
  const options = { modelDir, device: 'cpu', intraOpThreads: 1, cpuInt8Matmuls: false } as const;
  const said: string[] = [];
  const logger = { info: (m: string) => said.push(m), warn: (m: string) => said.push(m) };
  const [exported, lean] = await Promise.all([AsrEngine.load({ ...options, leanGraphs: false }), AsrEngine.load({ ...options, logger })]);
  return { exported, lean, said };
}
