import { GraphBuilder } from '../onnx-graph.js';
import { gelu, matMulNBits, normWeight, quantLinear } from './layers.js';
import type { WeightFile } from './weights.js';

export interface EncoderDims {
  layers: number;
  width: number;
  heads: number;
  ffn: number;
  /** channels of the three stride-2 convolutions */
  convChannels: number;
  /** rows out: the decoder's hidden size */
  output: number;
}

const MELS = 128;
const CHUNK = 100;
/** rows per full 100-frame chunk after three stride-2 convolutions: 100 -> 50 -> 25 -> 13 */
const CHUNK_ROWS = 13;

/** Signed random values in [2^e, 2^(e+1)) of magnitude, e chosen for an RMS near 1/sqrt(fanIn). */
const fanInExponent = (fanIn: number) => Math.round(Math.log2(1 / Math.sqrt(fanIn) / 1.5));

/**
 * The audio encoder, Qwen3-ASR-shaped: the mel cut into 100-frame chunks, each through three 3x3 stride-2
 * convolutions (128 mel x 100 frames -> 16 x 13) and a Linear to the model width, sinusoidal positions per chunk,
 * the rows of all chunks joined and cut to nAudioTokens(T) (the last chunk's padding dropped), transformer layers
 * (LayerNorm, full self-attention over the whole clip, GELU MLP), a final LayerNorm and a two-layer projection to
 * the decoder's width. Linears are 4-bit MatMulNBits, convolutions float32.
 */
export function buildFullEncoder(d: EncoderDims, w: WeightFile): GraphBuilder {
  const g = new GraphBuilder('audio_encoder');
  const ext = g.external.bind(g);
  const c = d.convChannels;
  const headDim = d.width / d.heads;
  const mel = g.input('input_features', 'float32', [1, MELS, 'num_frames']);
  const x = g.op('Reshape', [mel, g.i64([MELS, -1])]);
  const frames = g.op('Slice', [g.op('Shape', [x]), g.i64([1]), g.i64([2])]);
  const c100 = g.i64([CHUNK]);
  const halfUp = (v: string) => g.op('Div', [g.op('Add', [v, g.i64([1])]), g.i64([2])]);
  // nAudioTokens(T) = 13 * floor(T/100) + c(c(c(T mod 100))), c(x) = ceil(x/2)
  const nTokens = g.op('Add', [
    g.op('Mul', [g.op('Div', [frames, c100]), g.i64([CHUNK_ROWS])]),
    halfUp(halfUp(halfUp(g.op('Mod', [frames, c100])))),
  ]);
  const chunks = g.op('Div', [g.op('Add', [frames, g.i64([CHUNK - 1])]), c100]);
  const padded = g.op('Pad', [x, g.op('Concat', [g.i64([0, 0, 0]), g.op('Sub', [g.op('Mul', [chunks, c100]), frames])], { axis: 0 })]);
  const images = g.op('Unsqueeze', [
    g.op('Transpose', [g.op('Reshape', [padded, g.op('Concat', [g.i64([MELS]), chunks, g.i64([CHUNK])], { axis: 0 })])], { perm: [1, 0, 2] }),
    g.i64([1]),
  ]);

  let y = images;
  [1, c, c].forEach((inChannels, i) => {
    const weight = w.tensor('float32', [c, inChannels, 3, 3], { kind: 'float32', exponent: fanInExponent(9 * inChannels), signed: true });
    const bias = w.tensor('float32', [c], { kind: 'float32', exponent: -6, signed: true });
    const conv = g.op('Conv', [y, ext(`audio_tower.conv2d${i + 1}.weight`, weight), ext(`audio_tower.conv2d${i + 1}.bias`, bias)], {
      kernel_shape: [3, 3],
      pads: [1, 1, 1, 1],
      strides: [2, 2],
    });
    y = gelu(g, conv);
  });
  // [chunks, C, 16, 13] -> [chunks, 13, C * 16] -> width
  const perRow = g.op('Reshape', [g.op('Transpose', [y], { perm: [0, 3, 1, 2] }), g.i64([0, 0, c * (MELS / 8)])]);
  const convOut = matMulNBits(g, perRow, quantLinear(w, 'audio_tower.conv_out', c * (MELS / 8), d.width));
  const positions = new Float32Array(CHUNK_ROWS * d.width);
  for (let p = 0; p < CHUNK_ROWS; p++) {
    for (let j = 0; j < d.width / 2; j++) {
      const angle = p / 10000 ** ((2 * j) / d.width);
      positions[p * d.width + j] = Math.sin(angle);
      positions[p * d.width + d.width / 2 + j] = Math.cos(angle);
    }
  }
  const positioned = g.op('Add', [convOut, ext('audio_tower.positional_embedding', w.constant('encoder-positions', 'float32', [CHUNK_ROWS, d.width], positions))]);
  let h = g.op('Slice', [g.op('Reshape', [positioned, g.i64([-1, d.width])]), g.i64([0]), nTokens, g.i64([0])]);

  const layerNorm = (t: string, name: string) =>
    g.op('LayerNormalization', [t, ext(`${name}.weight`, normWeight(w, d.width)), ext(`${name}.bias`, w.tensor('float32', [d.width], { kind: 'float32', exponent: -8, signed: true }))], {
      axis: -1,
      epsilon: { f: 1e-5 },
    });
  for (let i = 0; i < d.layers; i++) {
    const p = `audio_tower.layers.${i}`;
    const a = layerNorm(h, `${p}.self_attn_layer_norm`);
    const heads = (name: string) =>
      g.op('Transpose', [g.op('Reshape', [matMulNBits(g, a, quantLinear(w, `${p}.self_attn.${name}`, d.width, d.width)), g.i64([-1, d.heads, headDim])])], {
        perm: [1, 0, 2],
      });
    const [q, k, v] = [heads('q_proj'), heads('k_proj'), heads('v_proj')];
    const scores = g.op('Mul', [g.op('MatMul', [q, g.op('Transpose', [k], { perm: [0, 2, 1] })]), g.f32([1 / Math.sqrt(headDim)], [])]);
    const attended = g.op('Reshape', [g.op('Transpose', [g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), v])], { perm: [1, 0, 2] }), g.i64([-1, d.width])]);
    h = g.op('Add', [h, matMulNBits(g, attended, quantLinear(w, `${p}.self_attn.out_proj`, d.width, d.width))]);
    const m = layerNorm(h, `${p}.final_layer_norm`);
    const hiddenMlp = gelu(g, matMulNBits(g, m, quantLinear(w, `${p}.fc1`, d.width, d.ffn)));
    h = g.op('Add', [h, matMulNBits(g, hiddenMlp, quantLinear(w, `${p}.fc2`, d.ffn, d.width))]);
  }
  const projected = gelu(g, matMulNBits(g, layerNorm(h, 'audio_tower.ln_post'), quantLinear(w, 'audio_tower.proj1', d.width, d.width)));
  const rows = matMulNBits(g, projected, quantLinear(w, 'audio_tower.proj2', d.width, d.output));
  g.output('audio_embeds', 'float32', [1, 'num_audio_tokens', d.output], g.op('Unsqueeze', [rows, g.i64([0])]));
  return g;
}
