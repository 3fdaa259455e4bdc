import { dirname, resolve } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import {
  GRAPH_INITIALIZER,
  GRAPH_INPUT,
  GRAPH_NODE,
  GRAPH_OUTPUT,
  initializerInfo,
  node,
  readModel,
  type OnnxNode,
  readNode,
  valueInfo,
  writeModel,
} from '../src/asr/onnx-model.js';
import { bytesField, type Field } from '../src/asr/onnx-proto.js';

/*
 * The floor of a decode step: the step graph's MatMulNBits nodes alone, each fed by its own input of its K width,
 * reading the same weights from the same external data. A step cannot beat reading its weights once, so
 * step time / floor time says how much the rest of the step (attention, norms, the engine) costs.
 */

export interface FloorGraph {
  /** the model bytes; load with `sessionOptions` so its external data resolves in the step graph's directory */
  model: Uint8Array;
  sessionOptions: InferenceSession.SessionOptions;
  inputs: { name: string; type: 'float32' | 'float16'; k: number }[];
  matmuls: number;
  /** weight bytes the floor reads per run (packed weights, scales, zero points) */
  weightBytes: number;
  /** MatMulNBits (true) or plain MatMul weights */
  quantized: boolean;
}

const BYTES: Record<string, number> = { float32: 4, float16: 2, uint8: 1, int32: 4, int64: 8 };

/** A matmul whose weights are initializers: its K, N and activation type, or why it is not one. */
function weightMatmul(n: OnnxNode, initializers: Map<string, Field>): { k: number; width: number; type: 'float32' | 'float16' } | undefined {
  const weights = n.inputs.slice(1).filter(Boolean);
  if (weights.length === 0 || weights.some((w) => !initializers.has(w))) return undefined;
  let k: number | undefined;
  let width: number | undefined;
  let type: string | undefined;
  if (n.opType === 'MatMulNBits' && n.domain === 'com.microsoft') {
    k = n.intAttributes.get('K');
    width = n.intAttributes.get('N');
    type = initializerInfo(initializers.get(n.inputs[2] ?? '')!).type;
  } else if (n.opType === 'MatMul' && !n.domain && weights.length === 1) {
    const b = initializerInfo(initializers.get(weights[0]!)!);
    if (b.dims.length !== 2) return undefined;
    [k, width] = b.dims;
    type = b.type;
  }
  return k && width && (type === 'float32' || type === 'float16') ? { k, width, type } : undefined;
}

/**
 * The floor graph of a step graph: its MatMulNBits nodes (or, in a graph without them, its MatMul nodes with
 * initializer weights) with the original weights and attributes (so a graph whose matmuls take int8 activations
 * has an int8 floor). `dataFolder`: where its external data is (a rewritten graph's lives in the model directory).
 */
export function floorGraph(stepBytes: Uint8Array, stepFile: string, dataFolder = dirname(resolve(stepFile))): FloorGraph {
  const model = readModel(stepBytes);
  const initializers = new Map<string, Field>();
  for (const f of model.graph) if (f.n === GRAPH_INITIALIZER) initializers.set(initializerInfo(f).name, f);
  const nodes = model.graph.filter((f) => f.n === GRAPH_NODE).map(readNode);
  const quantized = nodes.some((n) => n.opType === 'MatMulNBits');
  const graph: Uint8Array[] = [bytesField(2, 'weights_floor')];
  const inputs: FloorGraph['inputs'] = [];
  const kept = new Set<string>();
  let weightBytes = 0;
  for (const n of nodes) {
    if (quantized && n.opType !== 'MatMulNBits') continue;
    const matmul = weightMatmul(n, initializers);
    if (!matmul) continue;
    for (const name of n.inputs.slice(1).filter((w) => w && !kept.has(w))) {
      kept.add(name);
      const info = initializerInfo(initializers.get(name)!);
      weightBytes += info.dims.reduce((a, b) => a * b, 1) * (BYTES[info.type] ?? 1);
      graph.push(initializers.get(name)!.raw);
    }
    const i = inputs.length;
    inputs.push({ name: `floor_in_${i}`, type: matmul.type, k: matmul.k });
    graph.push(
      bytesField(GRAPH_INPUT, valueInfo(`floor_in_${i}`, matmul.type, ['batch', 1, matmul.k])),
      bytesField(GRAPH_OUTPUT, valueInfo(`floor_out_${i}`, matmul.type, ['batch', 1, matmul.width])),
      bytesField(GRAPH_NODE, node(n.opType, `floor/${n.name}`, [`floor_in_${i}`, ...n.inputs.slice(1)], [`floor_out_${i}`], n.intAttributes, n.domain)),
    );
  }
  if (inputs.length === 0) throw new Error(`${stepFile}: no matmul with weights among its nodes, so no weights-only floor`);
  return {
    model: writeModel(model, graph),
    sessionOptions: { extra: { session: { model_external_initializers_file_folder_path: dataFolder } } },
    inputs,
    matmuls: inputs.length,
    weightBytes,
    quantized,
  };
}

/** Feeds for one floor run of `batch` rows (random activations, made once so the timing is the run alone). */
export function floorFeeds(floor: FloorGraph, batch: number): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const input of floor.inputs) {
    const size = batch * input.k;
    // 0x2e66 ~ 0.1 in fp16: activations of a plausible size; the values do not change the work.
    feeds[input.name] =
      input.type === 'float32' ? new Tensor('float32', new Float32Array(size).fill(0.1), [batch, 1, input.k]) : new Tensor('float16', new Uint16Array(size).fill(0x2e66), [batch, 1, input.k]);
  }
  return feeds;
}
