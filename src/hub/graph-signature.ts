import { readFile } from 'node:fs/promises';
import { readDecoderContract, type SessionInfo } from '../asr/contract.js';
import { GRAPH_INPUT, GRAPH_OUTPUT, readModel, tensorInfo, type OnnxModel } from '../asr/onnx-model.js';

/**
 * A graph's inputs and outputs as onnxruntime would report them, read from the protobuf without onnxruntime,
 * which stays out of the process that downloads.
 */
async function readGraphSignature(path: string): Promise<SessionInfo> {
  let model: OnnxModel;
  try {
    model = readModel(await readFile(path));
  } catch (err) {
    throw new Error(`${path}: not an ONNX model (${(err as Error).message})`);
  }
  const of = (n: number) => model.graph.filter((f) => f.n === n).map(tensorInfo);
  return { file: path, inputs: of(GRAPH_INPUT), outputs: of(GRAPH_OUTPUT) };
}

/**
 * Whether the decoders take `inputs_embeds` (so the embedding table lives outside the graph) and its width when
 * declared; null when they take token ids. Decided by the engine's own contract reader, so the download and the
 * engine never disagree (a graph the engine would refuse is refused here, with the engine's message).
 */
export async function decoderEmbeddingInput(prefillPath: string): Promise<{ width: number | undefined } | null> {
  const contract = readDecoderContract(await readGraphSignature(prefillPath), 'prefill');
  return contract.token.kind === 'inputs_embeds' ? { width: contract.hiddenSize } : null;
}
