import { GraphEditor, unreadDropped, withTensorsRenamed, type GraphNode } from './graph-edit.js';
import { GRAPH_INPUT, GRAPH_NODE, GRAPH_OUTPUT, node, readModel, tensorInfo, valueInfo, writeModel, type OnnxNode } from './onnx-model.js';
import { bytesField, type Field } from './onnx-proto.js';

/*
 * A step graph as exported returns each layer's whole cache: present = Concat(past, new) on the sequence axis, a
 * copy of the cache per layer and key/value on every step, read again by attention. onnxruntime's Concat runs on one
 * thread; in a profile of the full-size stand-in's 8-row step at 150 tokens its 56 cache concats took 60 of 258 ms
 * of kernel time. Attention does not need the copy:
 *
 *   keys (transposed, the concat on B's last axis):  A x [P | N]      = [A x P | A x N]          (a small concat)
 *   values (the concat on B's rows):                 A x [P ; N]      = A[.., :p] x P + A[.., p:] x N
 *
 * So the rewritten step returns only the new column(s) of each layer's keys and values (present.* becomes
 * [B, kvH, S, D]) and its attention reads past and new apart; the caller keeps the cache and writes the new column
 * into it (HostBackend's kvDelta layout). Between the concat and the matmul only Casts and the keys' Transpose
 * (0, 1, 3, 2) are followed, as a torch export with an fp16 cache writes them (after shared-kv-heads.ts has removed
 * the head repeat). A reader of the whole cache that is not such a matmul keeps a concat of its own; a cache output
 * (any 4-D float output, as the engine reads them) that is not Concat(past input, new) on axis 2 leaves the graph as
 * exported, since the caller needs every layer in one layout. The caller's layout also needs the step to take an
 * attention mask and position ids (lean-graph.ts checks before asking).
 */

/** a Slice end past any axis: "to the end" (2^53 - 1, exact as an int64) */
const TO_END = Number.MAX_SAFE_INTEGER;

interface CachePair {
  /** the graph output, present.* */
  output: Field;
  name: string;
  /** the Concat node's field and node */
  concat: GraphNode;
  past: string;
  fresh: string;
}

/** A matmul that reads the whole cache through `chain` (Casts, at most one Transpose) as its B operand. */
interface CacheRead {
  field: Field;
  node: OnnxNode;
  chain: OnnxNode[];
  pair: CachePair;
}

/**
 * The step graph returning only each layer's new key/value columns, its attention reading past and new apart, and
 * how many cache outputs changed (all of them); or the graph unchanged and why.
 */
export function withKvDelta(bytes: Uint8Array): { bytes: Uint8Array; count: number; reason?: string } {
  const unchanged = (reason: string) => ({ bytes, count: 0, reason });
  const model = readModel(bytes);
  const inputList = model.graph.filter((f) => f.n === GRAPH_INPUT).map(tensorInfo);
  const outputFields = model.graph.filter((f) => f.n === GRAPH_OUTPUT);
  const edit = GraphEditor.open(model, 'kv_delta');
  if (typeof edit === 'string') return unchanged(edit);
  const { nodes, producer, readers } = edit;
  const inputs = new Map(inputList.map((t) => [t.name, t]));
  const outputs = new Set(outputFields.map((f) => tensorInfo(f).name));

  // The cache: every 4-D float output (as the engine's contract reads present.*), each Concat(past input, new) on axis 2.
  const pairs: CachePair[] = [];
  for (const output of outputFields) {
    const info = tensorInfo(output);
    if (info.shape.length !== 4 || !info.type.startsWith('float')) continue;
    const made = producer.get(info.name);
    const c = made?.node;
    const axis = c?.intAttributes.get('axis');
    const past = c?.inputs[0];
    if (!made || !c || c.opType !== 'Concat' || c.domain || c.inputs.length !== 2 || (axis !== 2 && axis !== -2) || inputs.get(past!)?.shape.length !== 4) {
      return unchanged(`${info.name} is not a past input concatenated with the new column on axis 2`);
    }
    pairs.push({ output, name: info.name, concat: made, past: past!, fresh: c.inputs[1]! });
  }
  if (pairs.length === 0) return unchanged('no 4-D cache output');

  // Every matmul reading a cache through Casts and at most one Transpose (0, 1, 3, 2); anything else reading it keeps it whole.
  const reads: CacheRead[] = [];
  const follow = (pair: CachePair, tensor: string, chain: OnnxNode[]) => {
    for (const r of readers.get(tensor) ?? []) {
      const n = r.node;
      const out = n.outputs[0]!;
      const transposes = chain.filter((c) => c.opType === 'Transpose').length;
      const passes = !n.domain && (n.opType === 'Cast' || (n.opType === 'Transpose' && n.intListAttributes.get('perm')?.join(',') === '0,1,3,2' && transposes === 0));
      if (passes && !outputs.has(out)) follow(pair, out, [...chain, n]);
      else if (!n.domain && n.opType === 'MatMul' && n.inputs[1] === tensor && n.inputs[0] !== tensor) reads.push({ ...r, chain, pair });
    }
  };
  for (const pair of pairs) follow(pair, pair.name, []);
  // A cache no split matmul reads would still be concatenated on every step, and its room read besides.
  const unsplit = pairs.find((p) => !reads.some((r) => r.pair === p));
  if (unsplit) return unchanged(`no attention matmul reads ${unsplit.name} through Casts and a Transpose (0, 1, 3, 2) only`);
  // In graph order, so that a Cast or Transpose of past or new that two matmuls share is placed before both.
  const order = new Map(nodes.map((n, i) => [n.field.raw, i]));
  reads.sort((x, y) => order.get(x.field.raw)! - order.get(y.field.raw)!);

  /** field -> the nodes that take its place (in place, so the order stays topological) */
  const replaced = new Map<Uint8Array, Uint8Array[]>();
  const add = (at: Field, made: Uint8Array) => replaced.set(at.raw, [...(replaced.get(at.raw) ?? []), made]);
  const op = (at: Field, opType: string, hint: string, ins: string[], attributes: Record<string, number | readonly number[]> = {}, outs?: readonly string[]) => {
    const out = outs ?? [edit.fresh(hint)];
    add(at, bytesField(GRAPH_NODE, node(opType, out[0]!, ins, out, attributes)));
    return out[0]!;
  };
  /** the chain's Casts and Transpose applied to `source` (past or new), once per chain node and source */
  const applied = new Map<string, string>();
  const through = (at: Field, source: string, chain: OnnxNode[]) =>
    chain.reduce((t, c) => {
      const key = `${c.outputs[0]}\u0000${source}`;
      if (!applied.has(key)) {
        const attributes: Record<string, number | readonly number[]> = c.opType === 'Cast' ? { to: c.intAttributes.get('to')! } : { perm: [0, 1, 3, 2] };
        applied.set(key, op(at, c.opType, c.opType.toLowerCase(), [t], attributes));
      }
      return applied.get(key)!;
    }, source);

  for (const { field, node: matmul, chain, pair } of reads) {
    const [a] = matmul.inputs as [string];
    const past = through(field, pair.past, chain);
    const next = through(field, pair.fresh, chain);
    if (chain.some((c) => c.opType === 'Transpose')) {
      // keys: scores over past columns, then over the new ones
      op(field, 'Concat', 'scores', [op(field, 'MatMul', 'past_scores', [a, past]), op(field, 'MatMul', 'new_scores', [a, next])], { axis: -1 }, matmul.outputs);
    } else {
      // values: the weights of the past columns times the past, plus the new ones' times the new
      const pastLength = op(field, 'Slice', 'past_length', [op(field, 'Shape', 'past_shape', [pair.past]), edit.int64([2]), edit.int64([3])]);
      const pastWeights = op(field, 'Slice', 'past_weights', [a, edit.int64([0]), pastLength, edit.int64([-1])]);
      const newWeights = op(field, 'Slice', 'new_weights', [a, pastLength, edit.int64([TO_END]), edit.int64([-1])]);
      op(field, 'Add', 'attended', [op(field, 'MatMul', 'past_values', [pastWeights, past]), op(field, 'MatMul', 'new_values', [newWeights, next])], {}, matmul.outputs);
    }
  }

  // What still reads a whole cache (anything but a rewritten matmul) reads a concat of its own, named apart from the
  // output; it is dropped below when nothing live reads it.
  const whole = new Map(pairs.map((p) => [p.name, edit.fresh(`${p.name}/whole`)]));
  for (const pair of pairs) {
    const { field: f, node: c } = pair.concat;
    // present.* is now the new column; onnxruntime gives a graph output its own buffer, so the Identity copies only it.
    add(f, bytesField(GRAPH_NODE, node('Identity', edit.fresh('present'), [pair.fresh], [pair.name])));
    add(f, bytesField(GRAPH_NODE, node('Concat', edit.fresh('whole'), c.inputs, [whole.get(pair.name)!], { axis: c.intAttributes.get('axis')! })));
  }
  const shapes = new Map(pairs.map((p) => [p.name, tensorInfo(p.output)]));
  const graph = model.graph.flatMap((f) => {
    if (replaced.has(f.raw)) return replaced.get(f.raw)!;
    if (f.n === GRAPH_NODE) return [withTensorsRenamed(f, whole)];
    const s = f.n === GRAPH_OUTPUT ? shapes.get(tensorInfo(f).name) : undefined;
    return s ? [bytesField(GRAPH_OUTPUT, valueInfo(s.name, s.type, [s.shape[0]!, s.shape[1]!, 'new_sequence_length', s.shape[3]!]))] : [f.raw];
  });
  return { bytes: writeModel(model, unreadDropped([...graph, ...edit.initializers], outputs)), count: pairs.length };
}
