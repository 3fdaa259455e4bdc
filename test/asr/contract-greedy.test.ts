import { describe, expect, it } from 'vitest';
import { readDecoderContract, type SessionInfo, type TensorInfo } from '../../src/asr/contract.js';
import { ModelLoadError } from '../../src/asr/errors.js';

const t = (name: string, type: string, shape: (number | string)[]): TensorInfo => ({ name, type, shape });

/** A one-layer step graph with the given outputs besides its cache. */
function stepInfo(outputs: TensorInfo[]): SessionInfo {
  const kv = (prefix: string, length: string) =>
    ['key', 'value'].map((part) => t(`${prefix}.0.${part}`, 'float16', ['batch', 8, length, 128]));
  return {
    file: 'decoder_step.onnx',
    inputs: [
      t('inputs_embeds', 'float16', ['batch', 1, 2048]),
      t('attention_mask', 'int64', ['batch', 'total']),
      t('position_ids', 'int64', ['batch', 1]),
      ...kv('past_key_values', 'past'),
    ],
    outputs: [...outputs, ...kv('present', 'total')],
  };
}

const logits = t('logits', 'float32', ['batch', 1, 151936]);

describe('greedy_ids in the decoder contract', () => {
  it('is read from an int64 [B] output named greedy_ids, and the logits may then be absent', () => {
    const c = readDecoderContract(stepInfo([t('greedy_ids', 'int64', ['batch'])]), 'step');
    expect(c.greedyIds).toEqual({ name: 'greedy_ids' });
    expect(c.logits).toBeUndefined();
    expect(c.kv.map((kv) => kv.output)).toEqual(['present.0.key', 'present.0.value']);
  });

  it('sits beside logits when a graph has both', () => {
    const c = readDecoderContract(stepInfo([logits, t('greedy_ids', 'int64', ['batch'])]), 'step');
    expect(c.greedyIds).toEqual({ name: 'greedy_ids' });
    expect(c.logits).toEqual({ name: 'logits', type: 'float32', span: 'last' });
  });

  it('is absent on a plain logits graph', () => {
    expect(readDecoderContract(stepInfo([logits]), 'step').greedyIds).toBeUndefined();
  });

  it.each([
    ['float32 [B]', t('greedy_ids', 'float32', ['batch'])],
    ['int64 [B, 1]', t('greedy_ids', 'int64', ['batch', 1])],
  ])('refuses greedy_ids as %s with a message naming it', (_, bad) => {
    expect(() => readDecoderContract(stepInfo([bad]), 'step')).toThrow(ModelLoadError);
    expect(() => readDecoderContract(stepInfo([bad]), 'step')).toThrow(/expected greedy_ids as int64 \[B\]; found greedy_ids/);
  });

  it('still requires logits or greedy_ids', () => {
    expect(() => readDecoderContract(stepInfo([t('ids', 'int64', ['batch'])]), 'step')).toThrow(/logits output .* or greedy_ids int64 \[B\]/);
  });
});
