import { createHash, randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { lstat, mkdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { threadId } from 'node:worker_threads';
import type { InferenceSession } from 'onnxruntime-node';
import { readDecoderContract } from './contract.js';
import {
  GRAPH_INITIALIZER,
  GRAPH_INPUT,
  GRAPH_NODE,
  GRAPH_OUTPUT,
  graphInterface,
  initializerInfo,
  int64Initializer,
  node,
  opsets,
  readModel,
  readNode,
  type OnnxNode,
  tensorInfo,
  valueInfo,
  writeModel,
} from './onnx-model.js';
import { bytesField, concat, first, parseMessage, sub, text, type Field } from './onnx-proto.js';
import { withFloat32Cache } from './float32-cache.js';
import { withKvDelta } from './kv-delta.js';
import { withSharedKvHeads } from './shared-kv-heads.js';

export interface LeanGraph {
  file: string;
  rewritten: boolean;
  /** the graph returns greedy ids instead of logits */
  greedy: boolean;
  /** MatMulNBits nodes switched to int8 activations */
  int8Matmuls: number;
  /** attention matmuls that read each KV head once instead of repeating it (shared-kv-heads.ts) */
  sharedKvHeads: number;
  /** cache outputs that return only their new column (kv-delta.ts): all of the step's, or 0 */
  kvDelta: number;
  /** why a rewrite asked for was not made (the KV-head and cache ones aside: sharedKvReason, kvDeltaReason) */
  reason?: string;
  /** why attention was kept as exported, when that was asked for */
  sharedKvReason?: string;
  /** why the step still returns its whole cache, when a delta was asked for */
  kvDeltaReason?: string;
  /** past inputs the kvDelta step takes as float32 instead of float16 (float32-cache.ts): all of them, or 0 */
  float32Cache: number;
  /** why a float16 cache is still cast at every step, when float32 was asked for */
  float32CacheReason?: string;
  /**
   * Spread into InferenceSession.create's options (last). A rewritten graph lives in the cache while its weights
   * stay in the model directory: onnxruntime is told where its external data is, because it refuses data files
   * reached through links from another directory. Empty for the original file.
   */
  sessionOptions: InferenceSession.SessionOptions;
}

/** What to change in a graph before loading it. */
export interface GraphRewrite {
  /** a decoder graph in this role returns greedy ids instead of its logits */
  greedy?: 'prefill' | 'step';
  /**
   * 4-bit MatMulNBits nodes take int8 activations (onnxruntime's accuracy_level 4, the level onnxruntime-genai's
   * builder picks for CPU): the CPU kernels for fp32 activations dequantise the weights for every row batch, so
   * they are slow and do not scale with rows; the int8 ones are faster for one row and scale. CPU only: other
   * providers read the attribute differently.
   */
  int8Matmuls?: boolean;
  /** attention reads each KV head once instead of a copy per query head (shared-kv-heads.ts) */
  sharedKvHeads?: boolean;
  /**
   * the step returns only each layer's new key/value column and its attention reads past and new apart
   * (kv-delta.ts); the caller must keep the cache in HostBackend's kvDelta layout
   */
  kvDelta?: boolean;
  /**
   * with kvDelta, a float16 cache is taken and returned as float32 holding the same values (float32-cache.ts), so
   * attention does not cast the whole past at every step; the caller widens the prefill's cache as it copies it.
   * For the CPU: on another provider the host cache would cross the bus at twice the size
   */
  float32Cache?: boolean;
}

export interface LeanOptions {
  /** where rewritten graphs are kept; default $XDG_CACHE_HOME/mega-asr/graphs, else <tmpdir>/mega-asr-graphs-<uid> */
  cacheDir?: string;
}

/** Changes whenever the rewrite does, so an old cached graph is never reused. */
const REWRITE_VERSION = 8;
/** MatMulNBits accuracy_level: int8 activations */
const INT8_ACTIVATIONS = 4;
const GREEDY_IDS = 'greedy_ids';

function defaultGraphCacheDir(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return xdg ? join(xdg, 'mega-asr', 'graphs') : join(tmpdir(), `mega-asr-graphs-${process.getuid?.() ?? 'user'}`);
}

const original = (file: string, reason: string): LeanGraph => ({ file, rewritten: false, greedy: false, int8Matmuls: 0, sharedKvHeads: 0, kvDelta: 0, float32Cache: 0, reason, sessionOptions: {} });

/**
 * Returns a graph file to load instead of `file`: a copy in a private cache directory with the rewrites asked for
 * (greedy ids int64 [batch], the argmax over the vocabulary of each row's last position, instead of the logits;
 * int8 activations for 4-bit matmuls; attention reading each KV head once; a step returning only the new cache
 * column, for HostBackend's kvDelta layout, its float16 cache taken as float32), or the original with the reason it was kept. A rewrite that is not possible
 * is left out and said in `reason`; the others are still made. The model directory is never written to.
 */
export async function rewriteGraph(file: string, want: GraphRewrite, o: LeanOptions = {}): Promise<LeanGraph> {
  const source = resolve(file);
  let bytes: Uint8Array;
  let info: Stats;
  try {
    info = await stat(source);
    bytes = await readFile(source);
  } catch (err) {
    return original(file, `cannot read it: ${(err as Error).message}`);
  }
  let lean = bytes;
  let greedy = false;
  let int8Matmuls = 0;
  let sharedKvHeads = 0;
  let kvDelta = 0;
  let float32Cache = 0;
  const reasons: string[] = [];
  let sharedKvReason: string | undefined;
  let kvDeltaReason: string | undefined;
  let float32CacheReason: string | undefined;
  let data: ExternalDataHome;
  try {
    if (want.greedy) {
      try {
        lean = rewriteToGreedy(lean, file, want.greedy);
        greedy = true;
      } catch (err) {
        reasons.push((err as Error).message);
      }
    }
    if (want.int8Matmuls) ({ bytes: lean, count: int8Matmuls } = withInt8Matmuls(lean, file));
    if (want.sharedKvHeads) ({ bytes: lean, count: sharedKvHeads, reason: sharedKvReason } = withSharedKvHeads(lean));
    // after the heads are read once: the cache is then read by the attention matmuls themselves
    if (want.kvDelta) {
      kvDeltaReason = maskedRoomUnreadable(lean, file);
      if (!kvDeltaReason) ({ bytes: lean, count: kvDelta, reason: kvDeltaReason } = withKvDelta(lean));
      if (want.float32Cache && kvDelta > 0) ({ bytes: lean, count: float32Cache, reason: float32CacheReason } = withFloat32Cache(lean, file));
    }
    if (!greedy && int8Matmuls === 0 && sharedKvHeads === 0 && kvDelta === 0) {
      const why = reasons[0] ?? sharedKvReason ?? kvDeltaReason ?? 'no 4-bit matmul to switch to int8 activations';
      return { ...original(file, why), ...(sharedKvReason ? { sharedKvReason } : {}), ...(kvDeltaReason ? { kvDeltaReason } : {}) };
    }
    data = await externalDataHome(source, bytes);
    lean = relocateExternalData(lean, data.renamed);
  } catch (err) {
    return original(file, (err as Error).message);
  }
  const key = createHash('sha256')
    .update(JSON.stringify([source, info.size, info.mtimeMs, want.greedy ?? null, !!want.int8Matmuls, !!want.sharedKvHeads, !!want.kvDelta, !!want.float32Cache, REWRITE_VERSION, data.folder, [...data.renamed].sort()]))
    .digest('hex')
    .slice(0, 16);
  const dir = o.cacheDir ?? defaultGraphCacheDir();
  const target = join(dir, `${basename(file, '.onnx')}.${key}.lean.onnx`);
  try {
    await writeOnce(dir, target, lean);
  } catch (err) {
    return original(file, `cache directory ${dir} is not usable: ${(err as Error).message}`);
  }
  return {
    file: target,
    rewritten: true,
    greedy,
    int8Matmuls,
    sharedKvHeads,
    kvDelta,
    float32Cache,
    ...(reasons.length ? { reason: reasons.join('; ') } : {}),
    ...(sharedKvReason ? { sharedKvReason } : {}),
    ...(kvDeltaReason ? { kvDeltaReason } : {}),
    ...(float32CacheReason ? { float32CacheReason } : {}),
    sessionOptions: { extra: { session: { model_external_initializers_file_folder_path: data.folder } } },
  };
}

/** The decoder graph returning greedy ids (see rewriteGraph). */
export function leanDecoderGraph(file: string, role: 'prefill' | 'step', o: LeanOptions = {}): Promise<LeanGraph> {
  return rewriteGraph(file, { greedy: role }, o);
}

interface ExternalDataHome {
  /** the one folder that really holds the graph's external data files */
  folder: string;
  /** location as written in the graph -> its file name in `folder`, where they differ */
  renamed: Map<string, string>;
}

/**
 * Where the graph's external data really is. onnxruntime follows links in a data path and refuses one that lands
 * outside the folder it is given; the Hugging Face cache links snapshot files to content-named blobs, so the
 * rewritten graph names the blobs themselves.
 */
async function externalDataHome(source: string, bytes: Uint8Array): Promise<ExternalDataHome> {
  const dir = dirname(source);
  const locations = [
    ...new Set(
      readModel(bytes)
        .graph.filter((f) => f.n === GRAPH_INITIALIZER)
        .map((f) => initializerInfo(f).location)
        .filter((l): l is string => l !== undefined),
    ),
  ];
  const real = await Promise.all(
    locations.map((l) => realpath(join(dir, l)).catch((err: Error) => Promise.reject(new Error(`its external data ${l} cannot be found: ${err.message}`)))),
  );
  const folders = [...new Set(real.map((r) => dirname(r)))];
  if (folders.length > 1) throw new Error(`its external data files lie in ${folders.join(' and ')}; onnxruntime takes one folder`);
  const renamed = new Map<string, string>();
  locations.forEach((l, i) => {
    if (l !== basename(real[i]!)) renamed.set(l, basename(real[i]!));
  });
  return { folder: folders[0] ?? dir, renamed };
}

/** The graph with each external data location renamed as the map says (everything else byte for byte). */
function relocateExternalData(bytes: Uint8Array, renamed: ReadonlyMap<string, string>): Uint8Array {
  if (renamed.size === 0) return bytes;
  const model = readModel(bytes);
  const graph = model.graph.map((f) => {
    if (f.n !== GRAPH_INITIALIZER) return f.raw;
    const location = initializerInfo(f).location;
    const to = location === undefined ? undefined : renamed.get(location);
    if (to === undefined) return f.raw;
    // TensorProto.external_data (13): one key/value entry per field; only the location entry is rewritten.
    const tensor = parseMessage(f.bytes).map((t) =>
      t.n === 13 && text(first(sub(t), 1)) === 'location' ? bytesField(13, concat([bytesField(1, 'location'), bytesField(2, to)])) : t.raw,
    );
    return bytesField(GRAPH_INITIALIZER, concat(tensor));
  });
  return writeModel(model, graph);
}

/**
 * Throws unless `dir` is a directory (not a link) of this user that no one else may enter: a graph found there is
 * loaded as is, and the default one lies in the shared tmpdir under a name any local user can create first.
 */
async function assertPrivate(dir: string): Promise<void> {
  const info = await lstat(dir);
  if (info.isSymbolicLink()) throw new Error('it is a symbolic link');
  if (!info.isDirectory()) throw new Error('it is not a directory');
  const uid = process.getuid?.();
  if (uid !== undefined && info.uid !== uid) throw new Error(`it belongs to uid ${info.uid}, not to this user (uid ${uid})`);
  const mode = info.mode & 0o777;
  if ((mode & 0o077) !== 0) throw new Error(`its mode is ${mode.toString(8).padStart(4, '0')}: other users could place a graph there (chmod 700 it, or remove it)`);
}

/** Writes the graph unless it is there; a temporary name and a rename keep concurrent writers from tearing it. */
async function writeOnce(dir: string, target: string, bytes: Uint8Array): Promise<void> {
  // mkdir leaves an existing directory as it is, whoever made it
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await assertPrivate(dir);
  // Same key, same bytes: a graph already there was written by an earlier load.
  if (await stat(target).then(() => true, () => false)) return;
  const temporary = `${target}.tmp-${process.pid}-${threadId}-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(temporary, bytes, { mode: 0o600 });
    await rename(temporary, target);
  } finally {
    await rm(temporary, { force: true });
  }
}

/**
 * The graph with every 4-bit MatMulNBits below accuracy_level 4 set to it (int8 activations), and how many changed.
 * Nodes carrying attributes other than integers are left alone (they could not be written again).
 */
function withInt8Matmuls(bytes: Uint8Array, file: string): { bytes: Uint8Array; count: number } {
  let model;
  try {
    model = readModel(bytes);
  } catch (err) {
    throw new Error(`${file}: not an ONNX model (${(err as Error).message})`);
  }
  let count = 0;
  const graph = model.graph.map((f) => {
    if (f.n !== GRAPH_NODE) return f.raw;
    const n = readNode(f);
    const candidate =
      n.opType === 'MatMulNBits' &&
      n.domain === 'com.microsoft' &&
      n.intAttributes.get('bits') === 4 &&
      n.attributeCount === n.intAttributes.size &&
      (n.intAttributes.get('accuracy_level') ?? 0) < INT8_ACTIVATIONS;
    if (!candidate) return f.raw;
    count++;
    const attributes = new Map([...n.intAttributes, ['accuracy_level', INT8_ACTIVATIONS]]);
    return bytesField(GRAPH_NODE, node(n.opType, n.name, n.inputs, n.outputs, attributes, n.domain));
  });
  return { bytes: count ? writeModel(model, graph) : bytes, count };
}

/**
 * Why a step's attention could not ignore the masked room the kvDelta layout feeds after each row: it takes no
 * attention mask, or no position ids (it would count positions from the past's length); undefined when it can.
 */
function maskedRoomUnreadable(bytes: Uint8Array, file: string): string | undefined {
  const model = readModel(bytes);
  try {
    const c = readDecoderContract(graphInterface(model, file), 'step');
    if (!c.attentionMask) return 'it takes no attention mask, which the room after the rows needs';
    if (!c.positionIds) return 'it takes no position ids, so it would count positions from the room after the rows';
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * The decoder graph with greedy ids in place of its logits output: the last position's logits, ArgMax over the
 * vocabulary. When the logits cover every position and come from an lm_head matmul (through Cast/Identity only),
 * the last position is taken from the lm_head's input instead, so a prefill computes the vocabulary projection
 * for one position rather than all of them. Throws with the reason when the graph is not one this can rewrite.
 */
function rewriteToGreedy(bytes: Uint8Array, file: string, role: 'prefill' | 'step'): Uint8Array {
  let model;
  try {
    model = readModel(bytes);
  } catch (err) {
    throw new Error(`not an ONNX model (${(err as Error).message})`);
  }
  const outputs = model.graph.filter((f) => f.n === GRAPH_OUTPUT);
  const contract = readDecoderContract(graphInterface(model, file), role);
  if (contract.greedyIds) throw new Error(`it already returns ${contract.greedyIds.name}`);
  const logits = outputs.map(tensorInfo).find((t) => t.name === contract.logits!.name)!;
  if (logits.shape.length !== 3) throw new Error(`logits ${logits.name} are [${logits.shape.join(', ')}], not [batch, positions, vocab]`);
  const opset = opsets(model).get('') ?? 0;
  if (opset < 13) throw new Error(`default-domain opset ${opset}: the rewrite needs 13 or newer`);

  const nodes = model.graph.filter((f) => f.n === GRAPH_NODE).map((f) => ({ field: f, node: readNode(f) }));
  const taken = new Set<string>();
  const initializers = new Set<string>();
  for (const f of model.graph) {
    if (f.n === GRAPH_INITIALIZER) initializers.add(initializerInfo(f).name);
    if (f.n === GRAPH_INPUT) taken.add(tensorInfo(f).name);
  }
  initializers.forEach((n) => taken.add(n));
  nodes.forEach(({ node: n }) => n.outputs.forEach((o) => taken.add(o)));
  if (taken.has(GREEDY_IDS)) throw new Error(`it already has a tensor named ${GREEDY_IDS}`);
  const fresh = (hint: string) => {
    let name = `lean/${hint}`;
    for (let i = 1; taken.has(name); i++) name = `lean/${hint}_${i}`;
    taken.add(name);
    return name;
  };
  const lastIndex = fresh('last_position');
  const added: Uint8Array[] = [bytesField(GRAPH_INITIALIZER, int64Initializer(lastIndex, [-1], []))];
  const dropped = new Set<Uint8Array>();

  let last: string;
  const graphOutputs = new Set(outputs.map((f) => tensorInfo(f).name));
  const head = logits.shape[1] === 1 ? undefined : lmHead(nodes, logits.name, initializers, graphOutputs);
  if (head) {
    // Gather the last position of the lm_head's input, then the lm_head and its casts again on [B, hidden].
    last = fresh('last_hidden');
    added.push(bytesField(GRAPH_NODE, node('Gather', last, [head.matmul.inputs[0]!, lastIndex], [last], { axis: 1 })));
    for (const n of [head.matmul, ...head.casts]) {
      const out = fresh(`last_${n.opType.toLowerCase()}`);
      added.push(bytesField(GRAPH_NODE, node(n.opType, out, [last, ...n.inputs.slice(1)], [out], n.intAttributes, n.domain)));
      last = out;
    }
    head.fields.forEach((f) => dropped.add(f));
  } else {
    last = fresh('last_logits');
    added.push(bytesField(GRAPH_NODE, node('Gather', last, [logits.name, lastIndex], [last], { axis: 1 })));
  }
  if (logits.type !== 'float32') {
    // ArgMax kernels are not registered for float16 on every provider; [B, vocab] once per step is cheap to cast.
    const cast = fresh('last_logits_f32');
    added.push(bytesField(GRAPH_NODE, node('Cast', cast, [last], [cast], { to: 1 })));
    last = cast;
  }
  added.push(
    bytesField(GRAPH_NODE, node('ArgMax', fresh('argmax'), [last], [GREEDY_IDS], { axis: 1, keepdims: 0, select_last_index: 0 })),
    bytesField(GRAPH_OUTPUT, valueInfo(GREEDY_IDS, 'int64', [logits.shape[0]!])),
  );
  const kept = model.graph
    .filter((f) => !dropped.has(f.raw) && !(f.n === GRAPH_OUTPUT && tensorInfo(f).name === logits.name))
    .map((f) => f.raw);
  return writeModel(model, [...kept, ...added]);
}

/**
 * The matmul with weights that makes the logits (MatMulNBits, or MatMul with an initializer) and the Cast/Identity
 * nodes between it and the output, when nothing else reads any of their results and they carry only integer
 * attributes (so they can be written again); undefined otherwise.
 */
function lmHead(
  nodes: { field: Field; node: OnnxNode }[],
  logits: string,
  initializers: Set<string>,
  graphOutputs: Set<string>,
): { matmul: OnnxNode; casts: OnnxNode[]; fields: Uint8Array[] } | undefined {
  const producer = new Map(nodes.flatMap((n) => n.node.outputs.map((o) => [o, n] as const)));
  const readers = (tensor: string) => nodes.filter((n) => n.node.inputs.includes(tensor)).length;
  const casts: OnnxNode[] = [];
  const fields: Uint8Array[] = [];
  let tensor = logits;
  for (;;) {
    const made = producer.get(tensor);
    if (!made || made.node.outputs.length !== 1 || made.node.attributeCount !== made.node.intAttributes.size) return undefined;
    // Everything dropped must be read by the next node of the chain alone (the logits by nothing).
    if (readers(tensor) !== (tensor === logits ? 0 : 1) || (tensor !== logits && graphOutputs.has(tensor))) return undefined;
    fields.push(made.field.raw);
    const n = made.node;
    if (!n.domain && (n.opType === 'Cast' || n.opType === 'Identity')) {
      casts.unshift(n);
      tensor = n.inputs[0]!;
      continue;
    }
    const weights = n.inputs.slice(1).filter(Boolean);
    const isHead =
      ((n.opType === 'MatMulNBits' && n.domain === 'com.microsoft') || (n.opType === 'MatMul' && !n.domain)) &&
      weights.length > 0 &&
      weights.every((w) => initializers.has(w));
    return isHead ? { matmul: n, casts, fields } : undefined;
  }
}
