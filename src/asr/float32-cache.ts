import { readDecoderContract } from './contract.js';
import { GraphEditor, withTensorsRenamed, type GraphNode } from './graph-edit.js';
import { GRAPH_INPUT, GRAPH_NODE, GRAPH_OUTPUT, GRAPH_VALUE_INFO, graphInterface, node, readModel, tensorInfo, valueInfo, writeModel, type OnnxNode } from './onnx-model.js';
import { bytesField, type Field } from './onnx-proto.js';

/*
 * A step with a float16 cache and float32 attention casts its whole past to float32 in every layer, for keys and
 * values, on every step. With the kvDelta layout that is what remains of the cache's cost: in an onnxruntime profile
 * of the full-size stand-in's kvDelta step of 8 rows at 150 tokens, its Casts took 10.8 of 162 ms of kernel time,
 * growing with rows x context. Widening float16 to float32 is exact, so the caller can hold the cache as float32
 * instead, widened once as it is written:
 *
 *   - each past input is declared float32, and the Casts to float32 that read it are removed (their readers read
 *     the input itself); a Concat of the past whose readers are all such Casts concatenates in float32 instead
 *     (its other inputs cast), as the full-size stand-in's step-counting flag does with the first layer's keys;
 *   - each present output is cast to float32 after the graph's own float16 rounding, so the cache holds exactly the
 *     values the exported step's does, and attention computes on exactly the same numbers.
 *
 * Only when every reader of every past input is such a Cast, a Concat read only by them, or a Shape (kv-delta.ts
 * reads the past's length); otherwise the graph is left as it is, with the reason. The memory of the cache doubles.
 */

/** TensorProto.DataType FLOAT */
const FLOAT = 1;

const castsToFloat = (n: OnnxNode) => !n.domain && n.opType === 'Cast' && n.intAttributes.get('to') === FLOAT;

/**
 * The step graph taking and returning its float16 cache as float32, and how many past inputs changed (all of them);
 * or the graph unchanged and why (no reason when the cache is not float16: nothing to widen).
 */
export function withFloat32Cache(bytes: Uint8Array, file: string): { bytes: Uint8Array; count: number; reason?: string } {
  const unchanged = (reason?: string) => ({ bytes, count: 0, ...(reason ? { reason } : {}) });
  const model = readModel(bytes);
  const outputFields = model.graph.filter((f) => f.n === GRAPH_OUTPUT);
  let contract;
  try {
    contract = readDecoderContract(graphInterface(model, file), 'step');
  } catch (err) {
    return unchanged((err as Error).message);
  }
  if (contract.kvType !== 'float16') return unchanged();
  const past = new Set(contract.kv.map((kv) => kv.input).filter((i): i is string => i !== undefined));
  if (past.size !== contract.kv.length) return unchanged('it takes no past cache for some layers');
  const present = new Set(contract.kv.map((kv) => kv.output));
  const edit = GraphEditor.open(model, 'float32_cache');
  if (typeof edit === 'string') return unchanged(edit);
  const graphOutputs = new Set(outputFields.map((f) => tensorInfo(f).name));

  /** tensor -> the one it now is: a removed Cast's output -> its float32 source; a present output -> its float16 self */
  const names = new Map<string, string>();
  const dropped = new Set<Uint8Array>();
  /** node field -> the nodes that take its place */
  const replaced = new Map<Uint8Array, Uint8Array[]>();
  /** tensors whose type changes, so a declared value_info of them would be wrong */
  const retyped = new Set<string>();
  const added: Uint8Array[] = [];

  // Each present output, renamed inside the graph, comes out through a Cast to float32.
  for (const name of present) {
    const half = edit.fresh(`${name}/float16`);
    names.set(name, half);
    added.push(bytesField(GRAPH_NODE, node('Cast', edit.fresh('widen'), [half], [name], { to: FLOAT })));
  }
  /** Drops Casts to float32 reading `tensor`, their readers reading `tensor` (now float32); false if it has other readers. */
  const dropCasts = (casts: GraphNode[], tensor: string) => {
    if (casts.length === 0 || !casts.every((c) => castsToFloat(c.node) && !graphOutputs.has(c.node.outputs[0]!))) return false;
    for (const c of casts) {
      dropped.add(c.field.raw);
      names.set(c.node.outputs[0]!, tensor);
    }
    return true;
  };
  for (const input of past) {
    for (const r of edit.readers.get(input) ?? []) {
      const n = r.node;
      if (dropped.has(r.field.raw) || replaced.has(r.field.raw) || (!n.domain && n.opType === 'Shape')) continue;
      if (castsToFloat(n) && dropCasts([r], input)) continue;
      const out = n.outputs[0]!;
      if (!n.domain && n.opType === 'Concat' && !graphOutputs.has(out) && dropCasts(edit.readers.get(out) ?? [], out)) {
        const made: Uint8Array[] = [];
        const widened = n.inputs.map((i) => {
          if (past.has(i)) return i;
          const cast = edit.fresh('widen');
          made.push(bytesField(GRAPH_NODE, node('Cast', cast, [names.get(i) ?? i], [cast], { to: FLOAT })));
          return cast;
        });
        made.push(bytesField(GRAPH_NODE, node('Concat', n.name, widened, [out], { axis: n.intAttributes.get('axis')! })));
        replaced.set(r.field.raw, made);
        retyped.add(out);
        continue;
      }
      return unchanged(`${input} is read by ${n.opType} ${n.name || out}, not only cast to float32`);
    }
  }

  const declared = (f: Field) => {
    const t = tensorInfo(f);
    return valueInfo(t.name, 'float32', t.shape);
  };
  const graph = model.graph.flatMap((f) => {
    if (dropped.has(f.raw)) return [];
    if (replaced.has(f.raw)) return replaced.get(f.raw)!;
    if (f.n === GRAPH_NODE) return [withTensorsRenamed(f, names)];
    const name = f.n === GRAPH_INPUT || f.n === GRAPH_OUTPUT || f.n === GRAPH_VALUE_INFO ? tensorInfo(f).name : undefined;
    if (f.n === GRAPH_VALUE_INFO && name !== undefined && (retyped.has(name) || names.has(name) || past.has(name) || present.has(name))) return [];
    if ((f.n === GRAPH_INPUT && past.has(name!)) || (f.n === GRAPH_OUTPUT && present.has(name!))) return [bytesField(f.n, declared(f))];
    return [f.raw];
  });
  return { bytes: writeModel(model, [...graph, ...added]), count: past.size };
}
