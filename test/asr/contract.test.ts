import { describe, expect, it } from 'vitest';
import {
  checkDecoderPair,
  parseKvName,
  readDecoderContract,
  readEncoderContract,
  type DecoderContract,
  type SessionInfo,
  type TensorInfo,
} from '../../src/asr/contract.js';
import { ModelLoadError } from '../../src/asr/errors.js';

const t = (name: string, type: string, shape: (number | string)[]): TensorInfo => ({ name, type, shape });

const VOCAB = 151936;
const HEADS = 8;
const HEAD_DIM = 128;
const HIDDEN = 2048;

/** Optimum / transformers.js naming: past_key_values.N.key|value -> present.N.key|value. */
function kvTensors(layers: number, type = 'float32', prefix = 'past_key_values', length = 'past_sequence_length'): TensorInfo[] {
  const out: TensorInfo[] = [];
  for (let l = 0; l < layers; l++) {
    for (const part of ['key', 'value']) out.push(t(`${prefix}.${l}.${part}`, type, ['batch_size', HEADS, length, HEAD_DIM]));
  }
  return out;
}

interface DecoderOptions {
  file?: string;
  token?: 'input_ids' | 'inputs_embeds';
  positions?: 2 | 3 | 'none';
  past?: boolean;
  layers?: number;
  kvType?: string;
  logits?: 'all' | 'last';
  extraInputs?: TensorInfo[];
  audio?: TensorInfo;
}

function decoderInfo(o: DecoderOptions = {}): SessionInfo {
  const layers = o.layers ?? 2;
  const inputs: TensorInfo[] = [];
  if ((o.token ?? 'inputs_embeds') === 'inputs_embeds') inputs.push(t('inputs_embeds', 'float32', ['batch_size', 'sequence_length', HIDDEN]));
  else inputs.push(t('input_ids', 'int64', ['batch_size', 'sequence_length']));
  if (o.audio) inputs.push(o.audio);
  inputs.push(t('attention_mask', 'int64', ['batch_size', 'total_sequence_length']));
  const positions = o.positions ?? 3;
  if (positions === 2) inputs.push(t('position_ids', 'int64', ['batch_size', 'sequence_length']));
  if (positions === 3) inputs.push(t('position_ids', 'int64', [3, 'batch_size', 'sequence_length']));
  if (o.past ?? true) inputs.push(...kvTensors(layers, o.kvType));
  inputs.push(...(o.extraInputs ?? []));
  const logitsShape = o.logits === 'last' ? ['batch_size', 1, VOCAB] : ['batch_size', 'sequence_length', VOCAB];
  return {
    file: o.file ?? 'decoder_model_merged.onnx',
    inputs,
    outputs: [t('logits', 'float32', logitsShape), ...kvTensors(layers, o.kvType, 'present', 'total_sequence_length')],
  };
}

/** The error must be a ModelLoadError that names the file, what was expected and what was found. */
function expectLoadError(fn: () => unknown, file: string, expected: RegExp, found: RegExp): void {
  let error: unknown;
  try {
    fn();
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(ModelLoadError);
  const message = (error as Error).message;
  expect(message.startsWith(`${file}: expected `), message).toBe(true);
  const [, what, seen] = /^[^:]+: expected (.*); found (.*)$/s.exec(message) ?? [];
  expect(what, message).toMatch(expected);
  expect(seen, message).toMatch(found);
}

describe('parseKvName', () => {
  it.each<[string, { layer: number; part: 'key' | 'value' } | undefined]>([
    ['past_key_values.12.value', { layer: 12, part: 'value' }],
    ['past_key_values.0.key', { layer: 0, part: 'key' }],
    ['present.27.key', { layer: 27, part: 'key' }],
    ['present.3.value', { layer: 3, part: 'value' }],
    ['past.3.k', { layer: 3, part: 'key' }],
    ['past.3.v', { layer: 3, part: 'value' }],
    ['cache_value_3', { layer: 3, part: 'value' }],
    ['cache_key_11', { layer: 11, part: 'key' }],
    ['present_value.5', { layer: 5, part: 'value' }],
    ['past_state.0', undefined],
    ['kvcache.1', undefined],
    ['past_key_values.key', undefined],
  ])('%s', (name, expected) => {
    expect(parseKvName(name)).toEqual(expected);
  });
});

describe('readEncoderContract', () => {
  it('reads a [1, 128, T] input and a [1, N, H] output', () => {
    const c = readEncoderContract({
      file: 'audio_encoder.onnx',
      inputs: [t('input_features', 'float32', [1, 128, 'T'])],
      outputs: [t('audio_embeds', 'float32', [1, 'N', HIDDEN])],
    });
    expect(c).toEqual({
      file: 'audio_encoder.onnx',
      mel: { name: 'input_features', rank: 3 },
      output: { name: 'audio_embeds', rank: 3, type: 'float32' },
      hiddenSize: HIDDEN,
    });
  });

  it('reads a [128, T] input and a float16 [N, H] output', () => {
    const c = readEncoderContract({
      file: 'enc.onnx',
      inputs: [t('mel', 'float32', [128, 'frames'])],
      outputs: [t('last_hidden_state', 'float16', ['rows', 1024])],
    });
    expect(c.mel).toEqual({ name: 'mel', rank: 2 });
    expect(c.output).toEqual({ name: 'last_hidden_state', rank: 2, type: 'float16' });
    expect(c.hiddenSize).toBe(1024);
  });

  it('accepts a symbolic mel axis and leaves hiddenSize open when symbolic', () => {
    const c = readEncoderContract({
      file: 'enc.onnx',
      inputs: [t('input_features', 'float32', ['batch', 'mel', 'T'])],
      outputs: [t('audio_features', 'float32', ['batch', 'N', 'hidden'])],
    });
    expect(c.mel.rank).toBe(3);
    expect(c.hiddenSize).toBeUndefined();
  });

  it('picks the embeddings output by name among several float outputs', () => {
    const c = readEncoderContract({
      file: 'enc.onnx',
      inputs: [t('input_features', 'float32', [1, 128, 'T'])],
      outputs: [t('attn_probs', 'float32', [1, 'N', 'N']), t('audio_embeds', 'float32', [1, 'N', HIDDEN])],
    });
    expect(c.output.name).toBe('audio_embeds');
  });

  it('rejects an encoder with two inputs', () => {
    expectLoadError(
      () =>
        readEncoderContract({
          file: 'enc2.onnx',
          inputs: [t('input_features', 'float32', [1, 128, 'T']), t('feature_lens', 'int64', [1])],
          outputs: [t('audio_embeds', 'float32', [1, 'N', HIDDEN])],
        }),
      'enc2.onnx',
      /one float32 log-mel input/,
      /input_features \(float32 \[1, 128, T\]\), feature_lens \(int64 \[1\]\)/,
    );
  });

  it('rejects a float16 or 4-D mel input', () => {
    for (const input of [t('input_features', 'float16', [1, 128, 'T']), t('input_features', 'float32', [1, 1, 128, 'T'])]) {
      expectLoadError(
        () => readEncoderContract({ file: 'enc.onnx', inputs: [input], outputs: [t('audio_embeds', 'float32', [1, 'N', HIDDEN])] }),
        'enc.onnx',
        /log-mel input/,
        /input_features/,
      );
    }
  });

  it('rejects a mel axis of 64', () => {
    expectLoadError(
      () =>
        readEncoderContract({
          file: 'mel64.onnx',
          inputs: [t('input_features', 'float32', [1, 64, 'T'])],
          outputs: [t('audio_embeds', 'float32', [1, 'N', HIDDEN])],
        }),
      'mel64.onnx',
      /128 bins/,
      /\[1, 64, T\]/,
    );
  });

  it('rejects ambiguous or missing embedding outputs', () => {
    expectLoadError(
      () =>
        readEncoderContract({
          file: 'enc.onnx',
          inputs: [t('input_features', 'float32', [1, 128, 'T'])],
          outputs: [t('audio_embeds', 'float32', [1, 'N', HIDDEN]), t('hidden_states', 'float32', [1, 'N', HIDDEN])],
        }),
      'enc.onnx',
      /one float output/,
      /audio_embeds.*hidden_states/,
    );
    expectLoadError(
      () =>
        readEncoderContract({
          file: 'enc.onnx',
          inputs: [t('input_features', 'float32', [1, 128, 'T'])],
          outputs: [t('audio_lengths', 'int64', [1])],
        }),
      'enc.onnx',
      /one float output/,
      /audio_lengths \(int64 \[1\]\)/,
    );
  });
});

describe('readDecoderContract', () => {
  it('reads the Optimum inputs_embeds prefill graph with [3, B, S] positions', () => {
    const c = readDecoderContract(decoderInfo({ file: 'decoder_prefill.onnx' }), 'prefill');
    const kv = [0, 1].flatMap((layer) =>
      (['key', 'value'] as const).map((part) => ({ layer, part, input: `past_key_values.${layer}.${part}`, output: `present.${layer}.${part}` })),
    );
    expect(c).toEqual({
      file: 'decoder_prefill.onnx',
      token: { kind: 'inputs_embeds', name: 'inputs_embeds', type: 'float32' },
      attentionMask: 'attention_mask',
      positionIds: { name: 'position_ids', rank: 3 },
      kv,
      kvType: 'float32',
      kvHeads: HEADS,
      headDim: HEAD_DIM,
      hiddenSize: HIDDEN,
      logits: { name: 'logits', type: 'float32', span: 'all' },
    } satisfies DecoderContract);
  });

  it('reads [B, S] positions and last-position logits', () => {
    const c = readDecoderContract(decoderInfo({ positions: 2, logits: 'last' }), 'step');
    expect(c.positionIds).toEqual({ name: 'position_ids', rank: 2 });
    expect(c.logits?.span).toBe('last');
  });

  it('works without positions and reports an unknown logits span', () => {
    const info = decoderInfo({ positions: 'none' });
    const odd: SessionInfo = { ...info, outputs: [t('logits', 'float32', ['batch_size', 'n', VOCAB]), ...info.outputs.slice(1)] };
    const c = readDecoderContract(odd, 'prefill');
    expect(c.positionIds).toBeUndefined();
    expect(c.logits?.span).toBe('unknown');
  });

  it('reads a float16 cache and float16 logits', () => {
    const info = decoderInfo({ kvType: 'float16' });
    const c = readDecoderContract({ ...info, outputs: [t('logits', 'float16', ['batch_size', 'sequence_length', VOCAB]), ...info.outputs.slice(1)] }, 'step');
    expect(c.kvType).toBe('float16');
    expect(c.logits?.type).toBe('float16');
    expect(readDecoderContract(decoderInfo(), 'step').kvType).toBe('float32');
  });

  it('reads kvHeads and headDim from numeric dims only', () => {
    const info: SessionInfo = {
      file: 'd.onnx',
      inputs: [t('inputs_embeds', 'float32', ['b', 's', 'h']), t('past.0.k', 'float32', ['b', 'heads', 'p', 'dim']), t('past.0.v', 'float32', ['b', 'heads', 'p', 'dim'])],
      outputs: [t('logits', 'float32', ['b', 's', VOCAB]), t('present.0.k', 'float32', ['b', 'heads', 't', 'dim']), t('present.0.v', 'float32', ['b', 'heads', 't', 'dim'])],
    };
    const c = readDecoderContract(info, 'step');
    expect(c.kvHeads).toBeUndefined();
    expect(c.headDim).toBeUndefined();
    expect(c.hiddenSize).toBeUndefined();
    const numeric: SessionInfo = {
      ...info,
      inputs: [t('inputs_embeds', 'float32', ['b', 's', 1024]), t('past.0.k', 'float32', ['b', 4, 'p', 64]), t('past.0.v', 'float32', ['b', 4, 'p', 64])],
      outputs: [t('logits', 'float32', ['b', 's', VOCAB]), t('present.0.k', 'float32', ['b', 4, 't', 64]), t('present.0.v', 'float32', ['b', 4, 't', 64])],
    };
    const n = readDecoderContract(numeric, 'step');
    expect([n.kvHeads, n.headDim, n.hiddenSize]).toEqual([4, 64, 1024]);
  });

  it('finds inputs by role whatever their names', () => {
    const info: SessionInfo = {
      file: 'custom.onnx',
      inputs: [
        t('pos', 'int64', [3, 'b', 's']),
        t('past_key_values.0.key', 'float16', ['b', HEADS, 'p', HEAD_DIM]),
        t('embeds', 'float16', ['b', 's', HIDDEN]),
        t('past.0.v', 'float16', ['b', HEADS, 'p', HEAD_DIM]),
        t('past.1.k', 'float16', ['b', HEADS, 'p', HEAD_DIM]),
        t('cache_value_1', 'float16', ['b', HEADS, 'p', HEAD_DIM]),
        t('mask', 'int64', ['b', 't']),
      ],
      outputs: [
        t('cache_key_out_1', 'float16', ['b', HEADS, 't', HEAD_DIM]),
        t('out_value_1', 'float16', ['b', HEADS, 't', HEAD_DIM]),
        t('scores', 'float16', ['b', 1, VOCAB]),
        t('present.0.key', 'float16', ['b', HEADS, 't', HEAD_DIM]),
        t('present.0.value', 'float16', ['b', HEADS, 't', HEAD_DIM]),
      ],
    };
    const c = readDecoderContract(info, 'step');
    expect(c.token).toEqual({ kind: 'inputs_embeds', name: 'embeds', type: 'float16' });
    expect(c.positionIds).toEqual({ name: 'pos', rank: 3 });
    expect(c.attentionMask).toBe('mask');
    expect(c.logits).toEqual({ name: 'scores', type: 'float16', span: 'last' });
    expect(c.kv).toEqual([
      { layer: 0, part: 'key', input: 'past_key_values.0.key', output: 'present.0.key' },
      { layer: 0, part: 'value', input: 'past.0.v', output: 'present.0.value' },
      { layer: 1, part: 'key', input: 'past.1.k', output: 'cache_key_out_1' },
      { layer: 1, part: 'value', input: 'cache_value_1', output: 'out_value_1' },
    ]);
    expect(c.kvType).toBe('float16');
  });

  it('binds an audio input beside input_ids on the prefill graph', () => {
    const audio = t('audio_features', 'float32', ['n_audio', HIDDEN]);
    const c = readDecoderContract(decoderInfo({ token: 'input_ids', audio, past: false, positions: 2 }), 'prefill');
    expect(c.token).toEqual({ kind: 'input_ids', name: 'input_ids' });
    expect(c.audio).toEqual({ name: 'audio_features', rank: 2, type: 'float32' });
    expect(c.hiddenSize).toBeUndefined();
    expect(c.positionIds).toEqual({ name: 'position_ids', rank: 2 });
    expect(c.kv).toHaveLength(4);
    for (const b of c.kv) expect(b.input).toBeUndefined();
    expect(c.kv.map((b) => b.output)).toEqual(['present.0.key', 'present.0.value', 'present.1.key', 'present.1.value']);
    expect(c.logits?.span).toBe('all');

    const rank3 = readDecoderContract(decoderInfo({ token: 'input_ids', audio: t('audio_embeds', 'float16', [1, 'n', HIDDEN]), kvType: 'float16' }), 'prefill');
    expect(rank3.audio).toEqual({ name: 'audio_embeds', rank: 3, type: 'float16' });
  });

  it('takes input_ids without an audio input on the step graph', () => {
    const c = readDecoderContract(decoderInfo({ token: 'input_ids', logits: 'last' }), 'step');
    expect(c.token).toEqual({ kind: 'input_ids', name: 'input_ids' });
    expect(c.audio).toBeUndefined();
    expect(c.logits?.span).toBe('last');
  });

  it('rejects an input_ids prefill graph with no audio input', () => {
    expectLoadError(() => readDecoderContract(decoderInfo({ file: 'p.onnx', token: 'input_ids' }), 'prefill'), 'p.onnx', /audio-embeddings input/, /input_ids \(int64/);
  });

  it('rejects an unknown extra input', () => {
    expectLoadError(
      () => readDecoderContract(decoderInfo({ file: 'extra.onnx', extraInputs: [t('use_cache_branch', 'bool', [1])] }), 'step'),
      'extra.onnx',
      /only token, position, attention-mask and cache inputs/,
      /unknown inputs use_cache_branch \(bool \[1\]\)/,
    );
  });

  it('rejects a graph without a token input', () => {
    const info = decoderInfo({ file: 'notoken.onnx' });
    expectLoadError(
      () => readDecoderContract({ ...info, inputs: info.inputs.filter((x) => x.name !== 'inputs_embeds') }, 'step'),
      'notoken.onnx',
      /token input/,
      /attention_mask/,
    );
  });

  it('rejects a step graph without past inputs', () => {
    expectLoadError(() => readDecoderContract(decoderInfo({ file: 'step.onnx', past: false }), 'step'), 'step.onnx', /past key\/value inputs/, /inputs_embeds/);
    // the same graph is a fine prefill graph
    expect(readDecoderContract(decoderInfo({ past: false }), 'prefill').kv.every((b) => b.input === undefined)).toBe(true);
  });

  it('rejects a graph without present outputs', () => {
    const info = decoderInfo({ file: 'nopresent.onnx' });
    expectLoadError(() => readDecoderContract({ ...info, outputs: info.outputs.slice(0, 1) }, 'step'), 'nopresent.onnx', /present key\/value outputs/, /logits/);
  });

  it('rejects a graph without logits', () => {
    const info = decoderInfo({ file: 'nologits.onnx' });
    expectLoadError(() => readDecoderContract({ ...info, outputs: info.outputs.slice(1) }, 'step'), 'nologits.onnx', /logits/, /present\.0\.key/);
  });

  it('rejects a past input without a matching present output', () => {
    const info = decoderInfo({ file: 'kv.onnx', layers: 2 });
    const outputs = info.outputs.filter((x) => !x.name.startsWith('present.1.'));
    expectLoadError(() => readDecoderContract({ ...info, outputs }, 'step'), 'kv.onnx', /a present output for every past input/, /past_key_values\.1\.key/);
  });

  it('rejects a present output without a matching past input', () => {
    const info = decoderInfo({ file: 'kv.onnx', layers: 2 });
    const inputs = info.inputs.filter((x) => x.name !== 'past_key_values.1.value');
    expectLoadError(() => readDecoderContract({ ...info, inputs }, 'step'), 'kv.onnx', /a past input for every present output/, /present\.1\.value/);
  });

  it('rejects present outputs with a layer missing', () => {
    const info = decoderInfo({ file: 'gap.onnx', layers: 3, past: false });
    const outputs = info.outputs.filter((x) => !x.name.startsWith('present.1.'));
    expectLoadError(() => readDecoderContract({ ...info, outputs }, 'prefill'), 'gap.onnx', /present key and value for layers 0\.\.1/, /present\.2\.key/);
  });

  it('rejects a mixed float16/float32 cache', () => {
    const info = decoderInfo({ file: 'mixed.onnx', kvType: 'float16' });
    const inputs = info.inputs.map((x) => (x.name === 'past_key_values.1.value' ? { ...x, type: 'float32' } : x));
    expectLoadError(() => readDecoderContract({ ...info, inputs }, 'step'), 'mixed.onnx', /one element type for the whole KV cache/, /float32 and float16|float16 and float32/);
  });

  it('rejects cache names that do not tell key from value', () => {
    const info = decoderInfo({ file: 'names.onnx', layers: 1 });
    const inputs = info.inputs.map((x) => (x.name === 'past_key_values.0.value' ? { ...x, name: 'past_state.0' } : x));
    expectLoadError(() => readDecoderContract({ ...info, inputs }, 'step'), 'names.onnx', /names that tell the layer and key\/value/, /past_state\.0 \(float32/);
  });

  it('rejects two caches for the same layer and part', () => {
    const info = decoderInfo({ file: 'dup.onnx', layers: 1 });
    const inputs = [...info.inputs, t('cache_key_0', 'float32', ['batch_size', HEADS, 'p', HEAD_DIM])];
    expectLoadError(() => readDecoderContract({ ...info, inputs }, 'step'), 'dup.onnx', /one past key\/value inputs per layer/, /past_key_values\.0\.key, cache_key_0/);
  });
});

describe('checkDecoderPair', () => {
  const prefill = readDecoderContract(decoderInfo({ file: 'prefill.onnx', layers: 2 }), 'prefill');

  it('accepts graphs that agree on the cache and token kind', () => {
    expect(() => checkDecoderPair(prefill, readDecoderContract(decoderInfo({ file: 'step.onnx', layers: 2, logits: 'last' }), 'step'))).not.toThrow();
  });

  it('rejects different layer counts', () => {
    const step = readDecoderContract(decoderInfo({ file: 'step.onnx', layers: 3 }), 'step');
    expectLoadError(() => checkDecoderPair(prefill, step), 'step.onnx', /cache of prefill\.onnx \(2 layers of float32 \[B, 8, L, 128\]\)/, /3 layers of float32/);
  });

  it('rejects a different cache element type', () => {
    const step = readDecoderContract(decoderInfo({ file: 'step.onnx', kvType: 'float16' }), 'step');
    expectLoadError(() => checkDecoderPair(prefill, step), 'step.onnx', /2 layers of float32/, /2 layers of float16/);
  });

  it('lets a float32 step take a float16 prefill cache only from a backend that widens it', () => {
    const half = readDecoderContract(decoderInfo({ file: 'prefill.onnx', layers: 2, kvType: 'float16' }), 'prefill');
    const step = readDecoderContract(decoderInfo({ file: 'step.onnx', layers: 2 }), 'step');
    expect(() => checkDecoderPair(half, step, { widens: true })).not.toThrow();
    expectLoadError(() => checkDecoderPair(half, step), 'step.onnx', /2 layers of float16/, /2 layers of float32/);
    // narrowing would lose the prefill's precision: never
    const halfStep = readDecoderContract(decoderInfo({ file: 'step.onnx', layers: 2, kvType: 'float16' }), 'step');
    expectLoadError(() => checkDecoderPair(prefill, halfStep, { widens: true }), 'step.onnx', /2 layers of float32/, /2 layers of float16/);
  });

  it('rejects a different head layout', () => {
    const info = decoderInfo({ file: 'step.onnx', layers: 1 });
    const reshape = (x: TensorInfo) => (x.shape.length === 4 ? { ...x, shape: ['b', 4, 'p', HEAD_DIM] } : x);
    const step = readDecoderContract({ ...info, inputs: info.inputs.map(reshape), outputs: info.outputs.map(reshape) }, 'step');
    const pre1 = readDecoderContract(decoderInfo({ file: 'prefill.onnx', layers: 1 }), 'prefill');
    expectLoadError(() => checkDecoderPair(pre1, step), 'step.onnx', /\[B, 8, L, 128\]/, /\[B, 4, L, 128\]/);
  });

  it('rejects different token kinds', () => {
    const step = readDecoderContract(decoderInfo({ file: 'step.onnx', token: 'input_ids' }), 'step');
    expectLoadError(() => checkDecoderPair(prefill, step), 'step.onnx', /inputs_embeds token input of prefill\.onnx/, /input_ids/);
  });
});
