import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readDecoderContract, type SessionInfo } from '../../src/asr/contract.js';
import { nAudioTokens } from '../../src/asr/prompt.js';
import { decoderEmbeddingInput } from '../../src/hub/graph-signature.js';
import { FIXTURE_FILES } from '../../tools/fixture/model-dir.js';
import { STOP_IDS } from '../../tools/full-size/decoder.js';
import { EMBEDDING_FILE, FULL_SIZE_DIMS, TOY_DIMS, writeFullSizeModel, type FullSizeDims, type FullSizeOptions } from '../../tools/full-size/model-dir.js';
import { decodeBatch, inputMeta, openFixtureDecoder, type FixtureDecoder } from './decoder-rows.js';

const { onnx } = onnxProto;

const SMALL = TOY_DIMS;
const STOPS: number[] = [STOP_IDS.endOfText, STOP_IDS.imEnd];

const dirs: string[] = [];
function generate(o: Partial<FullSizeOptions>, dims: FullSizeDims = SMALL) {
  const dir = mkdtempSync(join(tmpdir(), 'full-size-'));
  dirs.push(dir);
  const report = writeFullSizeModel(dir, { batch: 'dynamic', kv: 'float16', seed: 7, dims, ...o });
  return { dir, report };
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Graph inputs and outputs as readDecoderContract wants them, read with onnx-proto (no weights loaded). */
function signature(file: string): { info: SessionInfo; model: onnxProto.onnx.ModelProto } {
  const model = onnx.ModelProto.decode(readFileSync(file));
  const types: Record<number, string> = { 1: 'float32', 7: 'int64', 10: 'float16' };
  const tensor = (v: onnxProto.onnx.IValueInfoProto) => ({
    name: v.name!,
    type: types[v.type!.tensorType!.elemType!]!,
    shape: v.type!.tensorType!.shape!.dim!.map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue))),
  });
  return { info: { file, inputs: model.graph!.input!.map(tensor), outputs: model.graph!.output!.map(tensor) }, model };
}

describe('the full-size topology at toy widths', () => {
  let d: FixtureDecoder;
  let stopping: FixtureDecoder;
  beforeAll(async () => {
    d = await openFixtureDecoder(generate({}).dir);
    stopping = await openFixtureDecoder(generate({ stopAfter: 3 }).dir);
  });
  afterAll(async () => Promise.all([d.release(), stopping.release()]));

  it('the encoder returns exactly nAudioTokens(T) rows of the decoder width', async () => {
    const session = await InferenceSession.create(join(generate({}).dir, FIXTURE_FILES.encoder));
    try {
      for (const frames of [1, 37, 99, 100, 101, 250, 1000, 1234]) {
        const mel = new Tensor('float32', new Float32Array(128 * frames).map((_, i) => Math.sin(i)), [1, 128, frames]);
        const rows = (await session.run({ input_features: mel })).audio_embeds!;
        expect(rows.dims).toEqual([1, nAudioTokens(frames), 64]);
        expect((rows.data as Float32Array).every(Number.isFinite)).toBe(true);
      }
    } finally {
      await session.release();
    }
  });

  it('rows of a left-padded batch decode as they do alone', async () => {
    const seqs = await Promise.all([d.sequence(420, 0.2), d.sequence(150, -0.4), d.sequence(260, 0.9)]);
    const alone = await Promise.all(seqs.map(async (s) => (await decodeBatch(d, [s], { steps: 8 }))[0]!));
    expect(new Set(alone.map((t) => t.join())).size).toBe(3);
    expect(await decodeBatch(d, seqs, { steps: 8 })).toEqual(alone);
  });

  it('never says a stop token by default: both stop logits sit at 0, below the best', async () => {
    const s = await d.sequence(300, 0.1);
    const seen: number[][] = [];
    const tokens = await decodeBatch(d, [s], {
      steps: 6,
      logits: (_, t) => {
        const data = t.data as Float32Array;
        const row = data.subarray(data.length - t.dims[2]!);
        seen.push([row[STOP_IDS.endOfText]!, row[STOP_IDS.imEnd]!, row.reduce((a, b) => Math.max(a, b))]);
      },
    });
    expect(tokens.flat().some((t) => STOPS.includes(t))).toBe(false);
    for (const [endOfText, imEnd, best] of seen) {
      expect(endOfText).toBe(0);
      expect(Math.abs(imEnd!)).toBeLessThan(0.05);
      expect(best).toBeGreaterThan(1);
    }
  });

  it('--stop-after 3 ends every row of a ragged batch with <|im_end|> after exactly 3 tokens', async () => {
    const seqs = await Promise.all([stopping.sequence(420, 0.2), stopping.sequence(150, -0.4)]);
    const rows = await decodeBatch(stopping, seqs, { steps: 5 });
    for (const tokens of rows) {
      expect(tokens.slice(0, 3).some((t) => STOPS.includes(t))).toBe(false);
      expect(tokens.slice(3)).toEqual([STOP_IDS.imEnd, STOP_IDS.imEnd, STOP_IDS.imEnd]);
    }
    // Batch-safe: each row as it is alone.
    expect(rows).toEqual(await Promise.all(seqs.map(async (q) => (await decodeBatch(stopping, [q], { steps: 5 }))[0]!)));
  });

  it('--batch 1 declares every decoder input and output with batch 1; the default a named batch dimension', async () => {
    const fixed = generate({ batch: 1 }).dir;
    for (const [dir, batch] of [
      [fixed, 1],
      [dirs[0]!, 'batch_size'],
    ] as const) {
      for (const file of [FIXTURE_FILES.prefill, FIXTURE_FILES.step]) {
        const { info } = signature(join(dir, file));
        for (const t of [...info.inputs, ...info.outputs]) expect(t.shape[0]).toBe(batch);
      }
    }
    const session = await InferenceSession.create(join(fixed, FIXTURE_FILES.step));
    expect(inputMeta(session, 'inputs_embeds').shape).toEqual([1, 'sequence_length', 64]);
    await session.release();
  });

  it('--kv float32 keeps the cache in float32 and decodes', async () => {
    const f32 = await openFixtureDecoder(generate({ kv: 'float32' }).dir);
    try {
      expect(inputMeta(f32.step, 'past_key_values.0.key')).toMatchObject({ type: 'float32', shape: ['batch_size', 2, 'past_sequence_length', 16] });
      const tokens = (await decodeBatch(f32, [await f32.sequence(200, 0.3)], { steps: 3 }))[0]!;
      expect(tokens).toHaveLength(4);
      expect(tokens.some((t) => STOPS.includes(t))).toBe(false);
    } finally {
      await f32.release();
    }
  });

  it('gives the contract the engine reads: inputs_embeds, mask, 2-D positions, fp16 cache, all-position logits', () => {
    const dir = dirs[0]!;
    const prefill = readDecoderContract(signature(join(dir, FIXTURE_FILES.prefill)).info, 'prefill');
    const step = readDecoderContract(signature(join(dir, FIXTURE_FILES.step)).info, 'step');
    expect(prefill).toMatchObject({
      token: { kind: 'inputs_embeds', name: 'inputs_embeds', type: 'float32' },
      attentionMask: 'attention_mask',
      positionIds: { name: 'position_ids', rank: 2 },
      kvType: 'float16',
      kvHeads: 2,
      headDim: 16,
      hiddenSize: 64,
      logits: { name: 'logits', type: 'float32', span: 'all' },
    });
    expect(step.kv).toHaveLength(4);
    expect(step.kv[3]).toEqual({ layer: 1, part: 'value', input: 'past_key_values.1.value', output: 'present.1.value' });
  });
});

describe('one real full-size generation', () => {
  let dir: string;
  let seconds: number;
  let files: Record<string, number>;
  beforeAll(() => {
    ({ dir, report: { seconds, files } } = generate({ stopAfter: 64 }, FULL_SIZE_DIMS));
  }, 180_000);

  it('is written in well under a minute', () => {
    expect(seconds).toBeLessThan(60);
  });

  it('has Qwen3-ASR-1.7B-sized files, the two decoders sharing one weight file', () => {
    const { decoder } = FULL_SIZE_DIMS;
    const prefillData = join(dir, `${FIXTURE_FILES.prefill}.data`);
    const stepData = join(dir, `${FIXTURE_FILES.step}.data`);
    expect(files[`${FIXTURE_FILES.prefill}.data`]).toBeGreaterThan(1.0e9);
    expect(files[`${FIXTURE_FILES.prefill}.data`]).toBeLessThan(1.2e9);
    expect(statSync(stepData).ino).toBe(statSync(prefillData).ino);
    expect(files[`${FIXTURE_FILES.encoder}.data`]).toBeGreaterThan(1.8e8);
    expect(files[`${FIXTURE_FILES.encoder}.data`]).toBeLessThan(2.5e8);
    expect(files[EMBEDDING_FILE]! - decoder.vocab * decoder.hidden * 2).toBeLessThan(256);
    for (const f of Object.values(FIXTURE_FILES)) expect(files[f]).toBeLessThan(1e6);
  });

  it('decoders: 28 layers x 7 MatMulNBits plus lm_head, 4-bit, block 32, with zero points', () => {
    const { decoder: d } = FULL_SIZE_DIMS;
    for (const file of [FIXTURE_FILES.prefill, FIXTURE_FILES.step]) {
      const { model } = signature(join(dir, file));
      expect(model.opsetImport!.map((o) => o.domain)).toContain('com.microsoft');
      const nbits = model.graph!.node!.filter((n) => n.opType === 'MatMulNBits');
      expect(nbits).toHaveLength(28 * 7 + 1);
      const shapes = new Map<string, number>();
      for (const n of nbits) {
        expect(n.domain).toBe('com.microsoft');
        expect(n.input).toHaveLength(4);
        const attr = Object.fromEntries(n.attribute!.map((a) => [a.name, Number(a.i)]));
        expect(attr).toMatchObject({ bits: 4, block_size: 32 });
        shapes.set(`${attr.K}x${attr.N}`, (shapes.get(`${attr.K}x${attr.N}`) ?? 0) + 1);
      }
      expect(Object.fromEntries(shapes)).toEqual({
        [`${d.hidden}x${d.hidden}`]: 56, // q, o
        [`${d.hidden}x${d.kvHeads * d.headDim}`]: 56, // k, v
        [`${d.hidden}x${d.ffn}`]: 56, // gate, up
        [`${d.ffn}x${d.hidden}`]: 28, // down
        [`${d.hidden}x${d.vocab}`]: 1, // lm_head
      });
      const ops = new Set(model.graph!.node!.map((n) => n.opType));
      for (const op of ['Softmax', 'Expand', 'Sin', 'Cos', 'Sigmoid', 'ReduceMean']) expect(ops).toContain(op);
    }
  });

  it('encoder: three stride-2 convolutions, 24 layers x 6 MatMulNBits, conv_out and a two-layer projection', () => {
    const { model } = signature(join(dir, FIXTURE_FILES.encoder));
    const convs = model.graph!.node!.filter((n) => n.opType === 'Conv');
    expect(convs).toHaveLength(3);
    expect(model.graph!.node!.filter((n) => n.opType === 'MatMulNBits')).toHaveLength(24 * 6 + 3);
    expect(model.graph!.output![0]!.type!.tensorType!.shape!.dim!.map((x) => x.dimParam || Number(x.dimValue))).toEqual([1, 'num_audio_tokens', 2048]);
  });

  it('reads as the engine reads it, through the download’s graph-signature reader too', async () => {
    expect(await decoderEmbeddingInput(join(dir, FIXTURE_FILES.prefill))).toEqual({ width: 2048 });
    const step = readDecoderContract(signature(join(dir, FIXTURE_FILES.step)).info, 'step');
    expect(step).toMatchObject({ kvType: 'float16', kvHeads: 8, headDim: 128, hiddenSize: 2048, logits: { span: 'all' } });
    expect(step.kv).toHaveLength(56);
  });
});
