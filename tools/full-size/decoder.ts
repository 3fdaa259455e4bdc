import { GraphBuilder, type Dim, type ExternalRef } from '../onnx-graph.js';
import { BLOCK, matMulNBits, normWeight, quantLinear, rmsNorm, typicalScale, type FixedRow, type QuantLinear } from './layers.js';
import { SCRIPT_MARKER, type TextScript } from './script.js';
import type { WeightFile } from './weights.js';

export interface DecoderDims {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ffn: number;
  vocab: number;
}

/** Token ids the engine stops on. */
export const STOP_IDS = { endOfText: 151643, imEnd: 151645 } as const;

interface LayerWeights {
  inputNorm: ExternalRef;
  q: QuantLinear;
  k: QuantLinear;
  v: QuantLinear;
  o: QuantLinear;
  qNorm: ExternalRef;
  kNorm: ExternalRef;
  postNorm: ExternalRef;
  gate: QuantLinear;
  up: QuantLinear;
  down: QuantLinear;
}

export interface DecoderWeights {
  layers: LayerWeights[];
  finalNorm: ExternalRef;
  lmHead: QuantLinear;
}

/** How much larger than the typical block scale a script row's one weight is: random scales stay below 4/3 of it. */
const SCRIPT_SCALE = 8;

/**
 * lm_head rows for the script: the row of the script's token c is zero but for its weight c, 15 x 8 typical
 * scales (a random row's weight c is at most 15 x 4/3 typical scales). A final hidden state that is a large
 * multiple of channel c alone then makes token c win by a wide margin (see buildFullDecoder's `script`).
 */
function scriptRows(script: TextScript, hidden: number): FixedRow[] {
  const typical = typicalScale(hidden);
  return script.tokens.map((row, c) => {
    const codes = new Uint8Array(hidden / 2);
    codes[c >> 1] = c % 2 === 0 ? 0x0f : 0xf0;
    const scale = new Float32Array(hidden / BLOCK).fill(typical);
    scale[Math.floor(c / BLOCK)] = SCRIPT_SCALE * typical;
    return { row, codes, zeroPoints: 0x00, scale };
  });
}

/**
 * The decoder's weights, written once and shared by the prefill and step graphs. lm_head's <|endoftext|> row
 * dequantises to zeros and its <|im_end|> row to a positive constant; with the final hidden state centred
 * (zero mean) both logits are 0 while the others are random around 0, so neither stop token ever wins, unless
 * the hidden state is replaced by ones (see stopAfter), which makes <|im_end|> win by a wide margin. With a
 * script, its tokens' rows are set too (scriptRows).
 */
export function decoderWeights(w: WeightFile, d: DecoderDims, script?: TextScript): DecoderWeights {
  const layers = Array.from({ length: d.layers }, (_, i): LayerWeights => {
    const p = `model.layers.${i}`;
    return {
      inputNorm: normWeight(w, d.hidden),
      q: quantLinear(w, `${p}.self_attn.q_proj`, d.hidden, d.heads * d.headDim),
      k: quantLinear(w, `${p}.self_attn.k_proj`, d.hidden, d.kvHeads * d.headDim),
      v: quantLinear(w, `${p}.self_attn.v_proj`, d.hidden, d.kvHeads * d.headDim),
      o: quantLinear(w, `${p}.self_attn.o_proj`, d.heads * d.headDim, d.hidden),
      // Large q/k norm weights make attention peaky: with random weights a flat softmax averages the context
      // into the same vector for every sequence, and every clip would say the same noise.
      qNorm: w.tensor('float32', [d.headDim], { kind: 'float32', exponent: 1, signed: false }),
      kNorm: w.tensor('float32', [d.headDim], { kind: 'float32', exponent: 1, signed: false }),
      postNorm: normWeight(w, d.hidden),
      gate: quantLinear(w, `${p}.mlp.gate_proj`, d.hidden, d.ffn),
      up: quantLinear(w, `${p}.mlp.up_proj`, d.hidden, d.ffn),
      down: quantLinear(w, `${p}.mlp.down_proj`, d.ffn, d.hidden),
    };
  });
  const finalNorm = normWeight(w, d.hidden);
  const lmHead = quantLinear(w, 'lm_head', d.hidden, d.vocab, [
    { row: STOP_IDS.endOfText, codes: 0x88, zeroPoints: 0x88 },
    { row: STOP_IDS.imEnd, codes: 0xff, zeroPoints: 0x00, scale: typicalScale(d.hidden) },
    ...(script ? scriptRows(script, d.hidden) : []),
  ]);
  return { layers, finalNorm, lmHead };
}

export interface DecoderGraphOptions {
  kind: 'prefill' | 'step';
  batch: 'dynamic' | 1;
  kv: 'float16' | 'float32';
  /** every row says <|im_end|> after this many generated tokens (default: never) */
  stopAfter?: number;
  /** every row says the script's header and as many words as its audio allows, then <|im_end|> (not with stopAfter) */
  script?: TextScript;
}

const FLOAT = 1;
const FLOAT16 = 10;
const BOOL = 9;
const ROPE_THETA = 1_000_000;
/** The script's one-hot final state: large enough that its token's logit beats every random row by far. */
const SCRIPT_LOUDNESS = 64;
/** How much of the computed final state is kept beside it (logits move by ~0.01: far below the margin). */
const SCRIPT_TRACE = 0.01;

/**
 * A Qwen3 decoder graph in the plain ops a torch export writes: RMSNorm, q/k RMSNorm, RoPE from position_ids,
 * grouped-query attention with the KV heads repeated, the mask added to the scores (per row, so left-padded rows
 * batch), SwiGLU, every Linear a 4-bit MatMulNBits.
 *
 * With stopAfter, the last channel of layer 0's key cache carries a flag: 1 for positions a prefill wrote (the
 * prompt), 0 for positions a step wrote. Summed over the positions a row's mask keeps, it gives the row's prompt
 * length, so position + 1 - prompt length is how many tokens the row has generated: batch-safe, whatever the
 * padding, because padding is masked.
 *
 * With a script, the prefill's flag is 0 on script tokens too (their embedding's last channel is SCRIPT_MARKER),
 * so a forced prefix counts as said: position + 1 - (the other prompt tokens) is how far into the script the row
 * is, and those other tokens minus the template's are its audio rows. The final hidden state becomes a one-hot of
 * that script index (scriptRows make its token win), or ones (<|im_end|>) once the audio's words are said; a trace
 * of the computed state is added so that every layer still feeds the logits and none is optimised away.
 */
export function buildFullDecoder(d: DecoderDims, weights: DecoderWeights, o: DecoderGraphOptions): GraphBuilder {
  if (o.stopAfter !== undefined && o.script) throw new Error('a decoder stops after N tokens or follows a script, not both');
  const g = new GraphBuilder(`decoder_${o.kind}`);
  const ext = (name: string, ref: ExternalRef) => g.external(name, ref);
  const batch: Dim = o.batch === 1 ? 1 : 'batch_size';
  const seq: Dim = 'sequence_length';
  const total: Dim = o.kind === 'prefill' ? seq : 'total_sequence_length';
  const kvShape = (len: Dim): Dim[] => [batch, d.kvHeads, len, d.headDim];
  const scalar = (v: number) => g.f32([v], []);
  const lastAxis = (from: number, to: number) => (x: string) => g.op('Slice', [x, g.i64([from]), g.i64([to]), g.i64([-1])]);

  const embeds = g.input('inputs_embeds', 'float32', [batch, seq, d.hidden]);
  let h = embeds;
  const mask = g.input('attention_mask', 'int64', [batch, total]);
  const position = g.op('Cast', [g.input('position_ids', 'int64', [batch, seq])], { to: FLOAT });

  // RoPE tables for this call's positions: [B, 1, S, headDim].
  const half = d.headDim / 2;
  const invFreq = g.f32(Array.from({ length: half }, (_, i) => ROPE_THETA ** (-(2 * i) / d.headDim)));
  const freqs = g.op('Mul', [g.op('Unsqueeze', [position, g.i64([-1])]), invFreq]);
  const angles = g.op('Unsqueeze', [g.op('Concat', [freqs, freqs], { axis: -1 }), g.i64([1])]);
  const [cos, sin] = [g.op('Cos', [angles]), g.op('Sin', [angles])];
  const rope = (t: string) => {
    const rotated = g.op('Concat', [g.op('Neg', [lastAxis(half, d.headDim)(t)]), lastAxis(0, half)(t)], { axis: -1 });
    return g.op('Add', [g.op('Mul', [t, cos]), g.op('Mul', [rotated, sin])]);
  };

  // Scores bias [B, 1, S, L]: 0 where the row's mask keeps the column and the column is not in the future.
  const keep = g.op('Cast', [mask], { to: BOOL });
  const scalarDim = (shapeOf: string, axis: number) => g.op('Squeeze', [g.op('Slice', [g.op('Shape', [shapeOf]), g.i64([axis]), g.i64([axis + 1])]), g.i64([0])]);
  const totalLength = scalarDim(mask, 1);
  const seqLength = scalarDim(h, 1);
  const columns = g.op('Range', [g.i64([0], []), totalLength, g.i64([1], [])]);
  const rows = g.op('Range', [g.op('Sub', [totalLength, seqLength]), totalLength, g.i64([1], [])]);
  const causal = g.op('LessOrEqual', [g.op('Unsqueeze', [columns, g.i64([0])]), g.op('Unsqueeze', [rows, g.i64([1])])]);
  const allowed = g.op('And', [g.op('Unsqueeze', [keep, g.i64([1, 2])]), causal]);
  const scoresBias = g.op('Where', [allowed, scalar(0), scalar(-1e9)]);
  const scale = scalar(1 / Math.sqrt(d.headDim));
  const groups = d.heads / d.kvHeads;

  const counting = o.stopAfter !== undefined || o.script !== undefined;
  /** the flag a position writes: [B, 1, S, 1] or a scalar */
  const promptFlag = () => {
    if (o.kind === 'step') return scalar(0);
    if (!o.script) return scalar(1);
    const isScript = g.op('Equal', [lastAxis(d.hidden - 1, d.hidden)(embeds), scalar(SCRIPT_MARKER)]);
    return g.op('Unsqueeze', [g.op('Where', [isScript, scalar(0), scalar(1)]), g.i64([1])]);
  };
  let promptLength: string | undefined;
  weights.layers.forEach((lw, i) => {
    const p = `model.layers.${i}`;
    const x = rmsNorm(g, h, ext(`${p}.input_layernorm.weight`, lw.inputNorm));
    const headsOf = (t: string, n: number, norm?: string) => {
      let r = g.op('Reshape', [t, g.i64([0, 0, n, d.headDim])]);
      if (norm) r = rmsNorm(g, r, norm);
      return g.op('Transpose', [r], { perm: [0, 2, 1, 3] });
    };
    const q = rope(headsOf(matMulNBits(g, x, lw.q), d.heads, ext(`${p}.self_attn.q_norm.weight`, lw.qNorm)));
    let k = rope(headsOf(matMulNBits(g, x, lw.k), d.kvHeads, ext(`${p}.self_attn.k_norm.weight`, lw.kNorm)));
    let v = headsOf(matMulNBits(g, x, lw.v), d.kvHeads);
    if (i === 0 && counting) {
      const flag = g.op('Expand', [promptFlag(), g.op('Shape', [lastAxis(d.headDim - 1, d.headDim)(k)])]);
      k = g.op('Concat', [lastAxis(0, d.headDim - 1)(k), flag], { axis: -1 });
    }
    if (o.kv === 'float16') [k, v] = [g.op('Cast', [k], { to: FLOAT16 }), g.op('Cast', [v], { to: FLOAT16 })];
    const cache = (part: 'key' | 'value', fresh: string) => {
      const present =
        o.kind === 'step'
          ? g.op('Concat', [g.input(`past_key_values.${i}.${part}`, o.kv, kvShape('past_sequence_length')), fresh], { axis: 2 })
          : fresh;
      g.output(`present.${i}.${part}`, o.kv, kvShape(total), present);
      return o.kv === 'float16' ? g.op('Cast', [present], { to: FLOAT }) : present;
    };
    const keys = cache('key', k);
    const values = cache('value', v);
    if (i === 0 && counting) {
      const flags = g.op('Reshape', [g.op('Slice', [keys, g.i64([0, d.headDim - 1]), g.i64([1, d.headDim]), g.i64([1, 3])]), g.i64([0, -1])]);
      promptLength = g.op('ReduceSum', [g.op('Where', [keep, flags, scalar(0)]), g.i64([1])], { keepdims: 1 });
    }
    // repeat_kv: [B, kvHeads, L, D] -> [B, heads, L, D]
    const repeat = (t: string) =>
      g.op('Reshape', [g.op('Expand', [g.op('Unsqueeze', [t, g.i64([2])]), g.i64([1, 1, groups, 1, 1])]), g.i64([0, d.heads, -1, d.headDim])]);
    const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [q, g.op('Transpose', [repeat(keys)], { perm: [0, 1, 3, 2] })]), scale]), scoresBias]);
    const attended = g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), repeat(values)]);
    const merged = g.op('Reshape', [g.op('Transpose', [attended], { perm: [0, 2, 1, 3] }), g.i64([0, 0, d.heads * d.headDim])]);
    h = g.op('Add', [h, matMulNBits(g, merged, lw.o)]);

    const y = rmsNorm(g, h, ext(`${p}.post_attention_layernorm.weight`, lw.postNorm));
    const gate = matMulNBits(g, y, lw.gate);
    const swish = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), matMulNBits(g, y, lw.up)]);
    h = g.op('Add', [h, matMulNBits(g, swish, lw.down)]);
  });

  const normed = rmsNorm(g, h, ext('model.norm.weight', weights.finalNorm));
  let last = g.op('Sub', [normed, g.op('ReduceMean', [normed], { axes: [-1], keepdims: 1 })]);
  if (promptLength) {
    // the tokens the row has said: those it generated, and with a script the forced ones too
    const said = g.op('Sub', [g.op('Add', [position, scalar(1)]), promptLength]);
    if (o.script) {
      const s = o.script;
      const audioRows = g.op('Sub', [promptLength, scalar(s.templateTokens)]);
      const words = g.op('Min', [g.op('Floor', [g.op('Div', [audioRows, scalar(s.rowsPerWord)])]), scalar(s.words.length)]);
      const stop = g.op('GreaterOrEqual', [said, g.op('Add', [words, scalar(s.headerTokens)])]);
      const channels = g.op('Range', [scalar(0), scalar(d.hidden), scalar(1)]);
      const oneHot = g.op('Where', [g.op('Equal', [g.op('Unsqueeze', [said, g.i64([-1])]), channels]), scalar(SCRIPT_LOUDNESS), scalar(0)]);
      const next = g.op('Where', [g.op('Unsqueeze', [stop, g.i64([-1])]), scalar(1), oneHot]);
      last = g.op('Add', [next, g.op('Mul', [last, scalar(SCRIPT_TRACE)])]);
    } else {
      const stop = g.op('GreaterOrEqual', [said, scalar(o.stopAfter!)]);
      last = g.op('Where', [g.op('Unsqueeze', [stop, g.i64([-1])]), scalar(1), last]);
    }
  }
  g.output('logits', 'float32', [batch, seq, d.vocab], matMulNBits(g, last, weights.lmHead));
  return g;
}
