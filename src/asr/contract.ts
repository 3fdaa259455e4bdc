import { ModelLoadError } from './errors.js';

/** What a session says about one input or output (onnxruntime-node's ValueMetadata, tensor case). */
export interface TensorInfo {
  name: string;
  type: string;
  shape: readonly (number | string)[];
}

export interface SessionInfo {
  file: string;
  inputs: readonly TensorInfo[];
  outputs: readonly TensorInfo[];
}

export type FloatType = 'float32' | 'float16';

export interface EncoderContract {
  file: string;
  mel: { name: string; rank: 2 | 3 };
  output: { name: string; rank: 2 | 3; type: FloatType };
  /** embedding width when the graph declares it */
  hiddenSize?: number;
}

export interface KvBinding {
  layer: number;
  part: 'key' | 'value';
  /** past input (absent on a prefill graph that takes no cache) */
  input?: string;
  output: string;
}

/** How to drive one decoder graph, read from the session at load time (contract section 9). */
export interface DecoderContract {
  file: string;
  token: { kind: 'input_ids'; name: string } | { kind: 'inputs_embeds'; name: string; type: FloatType };
  /** encoder rows fed separately when the graph embeds input_ids itself */
  audio?: { name: string; rank: 2 | 3; type: FloatType };
  attentionMask?: string;
  positionIds?: { name: string; rank: 2 | 3 };
  kv: KvBinding[];
  kvType: FloatType;
  kvHeads?: number;
  headDim?: number;
  hiddenSize?: number;
  /** absent only when greedyIds is there (a lean graph, src/asr/lean-graph.ts, drops the logits) */
  logits?: { name: string; type: FloatType; span: 'all' | 'last' | 'unknown' };
  /** int64 [B]: the argmax of each row's last-position logits, computed in the graph */
  greedyIds?: { name: string };
}

const describe = (t: TensorInfo) => `${t.name} (${t.type} [${t.shape.join(', ')}])`;
const list = (ts: readonly TensorInfo[]) => ts.map(describe).join(', ') || 'none';
const isFloat = (t: TensorInfo): t is TensorInfo & { type: FloatType } => t.type === 'float32' || t.type === 'float16';
const numeric = (d: number | string | undefined) => (typeof d === 'number' && d > 0 ? d : undefined);

function fail(info: SessionInfo, expected: string, found: string): never {
  throw new ModelLoadError(`${info.file}: expected ${expected}; found ${found}`);
}

export function readEncoderContract(info: SessionInfo): EncoderContract {
  const mels = info.inputs.filter((t) => t.type === 'float32' && (t.shape.length === 2 || t.shape.length === 3));
  if (info.inputs.length !== 1 || mels.length !== 1) {
    fail(info, 'one float32 log-mel input [1, 128, T] or [128, T]', `inputs ${list(info.inputs)}`);
  }
  const mel = mels[0]!;
  const melBins = mel.shape[mel.shape.length - 2];
  if (typeof melBins === 'number' && melBins !== 128) fail(info, 'a mel axis of 128 bins', `inputs ${list(info.inputs)}`);
  const outs = info.outputs.filter((t) => isFloat(t) && (t.shape.length === 2 || t.shape.length === 3));
  const named = outs.filter((t) => /embed|feature|hidden|audio|output/i.test(t.name));
  const out = outs.length === 1 ? outs[0] : named.length === 1 ? named[0] : undefined;
  if (!out || !isFloat(out)) fail(info, 'one float output of audio embeddings [1, N, H] or [N, H]', `outputs ${list(info.outputs)}`);
  return {
    file: info.file,
    mel: { name: mel.name, rank: mel.shape.length as 2 | 3 },
    output: { name: out.name, rank: out.shape.length as 2 | 3, type: out.type },
    hiddenSize: numeric(out.shape[out.shape.length - 1]),
  };
}

/** Layer number and key/value from cache names in the usual spellings (past_key_values.3.key, past.3.k, cache_value_3 ...). */
export function parseKvName(name: string): { layer: number; part: 'key' | 'value' } | undefined {
  const numbers = name.match(/\d+/g);
  if (!numbers) return undefined;
  const layer = Number(numbers[numbers.length - 1]);
  // The last marker decides: "past_key_values.0.key" mentions both words.
  const markers = name.toLowerCase().match(/key|value|(?<![a-z])[kv](?![a-z])/g);
  const last = markers?.[markers.length - 1];
  if (!last) return undefined;
  return { layer, part: last.startsWith('k') ? 'key' : 'value' };
}

function bindKv(info: SessionInfo, tensors: TensorInfo[], what: string): Map<string, { tensor: TensorInfo; layer: number; part: 'key' | 'value' }> {
  const out = new Map<string, { tensor: TensorInfo; layer: number; part: 'key' | 'value' }>();
  for (const t of tensors) {
    const parsed = parseKvName(t.name);
    if (!parsed) fail(info, `${what} names that tell the layer and key/value`, describe(t));
    const id = `${parsed.layer}.${parsed.part}`;
    if (out.has(id)) fail(info, `one ${what} per layer and key/value`, `two for layer ${id}: ${out.get(id)!.tensor.name}, ${t.name}`);
    out.set(id, { tensor: t, ...parsed });
  }
  return out;
}

export function readDecoderContract(info: SessionInfo, role: 'prefill' | 'step'): DecoderContract {
  const pending = new Set(info.inputs);
  const take = (t: TensorInfo | undefined) => {
    if (t) pending.delete(t);
    return t;
  };
  const pastInputs = info.inputs.filter((t) => isFloat(t) && t.shape.length === 4);
  pastInputs.forEach((t) => pending.delete(t));

  const ints = info.inputs.filter((t) => t.type === 'int64');
  const attention = take(ints.find((t) => /mask/i.test(t.name) && t.shape.length === 2));
  const positions = take(
    ints.find((t) => pending.has(t) && /pos/i.test(t.name) && (t.shape.length === 2 || t.shape.length === 3)) ??
      ints.find((t) => pending.has(t) && t.shape.length === 3),
  );
  const idCandidates = ints.filter((t) => pending.has(t) && t.shape.length === 2);
  const ids = take(idCandidates.length === 1 ? idCandidates[0] : idCandidates.find((t) => /ids|token/i.test(t.name)));

  const floats = info.inputs.filter((t) => pending.has(t) && isFloat(t) && (t.shape.length === 2 || t.shape.length === 3));
  let token: DecoderContract['token'];
  let audio: DecoderContract['audio'];
  if (ids) {
    token = { kind: 'input_ids', name: ids.name };
    if (role === 'prefill') {
      const a = take(floats.length === 1 ? floats[0] : floats.find((t) => /audio|feature|embed/i.test(t.name)));
      if (!a || !isFloat(a)) fail(info, 'an audio-embeddings input beside input_ids on the prefill graph', `inputs ${list(info.inputs)}`);
      audio = { name: a.name, rank: a.shape.length as 2 | 3, type: a.type };
    }
  } else {
    const embeds = take(floats.filter((t) => t.shape.length === 3).length === 1 ? floats.find((t) => t.shape.length === 3) : floats.find((t) => /embed/i.test(t.name)));
    if (!embeds || !isFloat(embeds)) fail(info, 'a token input: input_ids int64 [B, S] or inputs_embeds float [B, S, H]', `inputs ${list(info.inputs)}`);
    token = { kind: 'inputs_embeds', name: embeds.name, type: embeds.type };
  }
  if (pending.size > 0) fail(info, 'only token, position, attention-mask and cache inputs', `unknown inputs ${list([...pending])}`);

  const presentOutputs = info.outputs.filter((t) => isFloat(t) && t.shape.length === 4);
  const logitCandidates = info.outputs.filter((t) => isFloat(t) && (t.shape.length === 3 || t.shape.length === 2));
  const logitsTensor = logitCandidates.length === 1 ? logitCandidates[0] : logitCandidates.find((t) => /logit/i.test(t.name));
  const greedy = info.outputs.find((t) => t.name === 'greedy_ids');
  if (greedy && (greedy.type !== 'int64' || greedy.shape.length !== 1)) fail(info, 'greedy_ids as int64 [B]', describe(greedy));
  if (!greedy && (!logitsTensor || !isFloat(logitsTensor))) fail(info, 'a float logits output [B, S, vocab] or greedy_ids int64 [B]', `outputs ${list(info.outputs)}`);
  if (role === 'step' && pastInputs.length === 0) fail(info, 'past key/value inputs on the step graph', `inputs ${list(info.inputs)}`);
  if (presentOutputs.length === 0) fail(info, 'present key/value outputs', `outputs ${list(info.outputs)}`);

  const past = bindKv(info, pastInputs, 'past key/value inputs');
  const present = bindKv(info, presentOutputs, 'present key/value outputs');
  const layers = present.size / 2;
  const kv: KvBinding[] = [];
  for (let layer = 0; layer < layers; layer++) {
    for (const part of ['key', 'value'] as const) {
      const out = present.get(`${layer}.${part}`);
      if (!out) fail(info, `present key and value for layers 0..${layers - 1}`, `outputs ${list(presentOutputs)}`);
      const input = past.get(`${layer}.${part}`);
      if (past.size > 0 && !input) fail(info, `a past input for every present output`, `none for ${out.tensor.name}`);
      kv.push({ layer, part, output: out.tensor.name, ...(input ? { input: input.tensor.name } : {}) });
    }
  }
  if (past.size > present.size) fail(info, 'a present output for every past input', `inputs ${list(pastInputs)}`);
  const kvTypes = new Set([...pastInputs, ...presentOutputs].map((t) => t.type));
  if (kvTypes.size !== 1) fail(info, 'one element type for the whole KV cache', `${[...kvTypes].join(' and ')}`);
  const sample = presentOutputs[0]!;
  const tokenTensor = info.inputs.find((t) => t.name === token.name)!;
  const logitsLength = logitsTensor && (logitsTensor.shape.length === 3 ? logitsTensor.shape[1] : 1);
  const span = logitsLength === 1 ? 'last' : logitsLength === tokenTensor.shape[1] ? 'all' : 'unknown';
  return {
    file: info.file,
    token,
    ...(audio ? { audio } : {}),
    ...(attention ? { attentionMask: attention.name } : {}),
    ...(positions ? { positionIds: { name: positions.name, rank: positions.shape.length as 2 | 3 } } : {}),
    kv,
    kvType: sample.type as FloatType,
    kvHeads: numeric(sample.shape[1]),
    headDim: numeric(sample.shape[3]),
    hiddenSize: token.kind === 'inputs_embeds' ? numeric(tokenTensor.shape[2]) : undefined,
    ...(logitsTensor && isFloat(logitsTensor) ? { logits: { name: logitsTensor.name, type: logitsTensor.type, span } } : {}),
    ...(greedy ? { greedyIds: { name: greedy.name } } : {}),
  };
}

/** A prefill cache of type `from` can feed a step cache of type `to`: the same type, or float16 widened (exactly) when `widens`. */
export function cacheTypesJoin(from: FloatType, to: FloatType, widens: boolean): boolean {
  return from === to || (widens && from === 'float16' && to === 'float32');
}

/**
 * The two decoders must agree on the cache they hand each other; with `widens` (a backend that widens float16 to
 * float32 as it copies the prefill's cache, exactly) a float16 prefill cache may feed a float32 step.
 */
export function checkDecoderPair(prefill: DecoderContract, step: DecoderContract, o: { widens?: boolean } = {}): void {
  const describeKv = (c: DecoderContract) => `${c.kv.length / 2} layers of ${c.kvType} [B, ${c.kvHeads ?? '?'}, L, ${c.headDim ?? '?'}]`;
  if (
    prefill.kv.length !== step.kv.length ||
    !cacheTypesJoin(prefill.kvType, step.kvType, o.widens === true) ||
    prefill.kvHeads !== step.kvHeads ||
    prefill.headDim !== step.headDim
  ) {
    throw new ModelLoadError(`${step.file}: expected the cache of ${prefill.file} (${describeKv(prefill)}); found ${describeKv(step)}`);
  }
  if (prefill.token.kind !== step.token.kind) {
    throw new ModelLoadError(`${step.file}: expected the ${prefill.token.kind} token input of ${prefill.file}; found ${step.token.kind}`);
  }
}
