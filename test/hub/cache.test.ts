import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hubCacheDir } from '../../src/hub/cache.js';
import { selectModelFiles } from '../../src/hub/select.js';
import type { RepoFile } from '../../src/hub/api.js';

describe('the Hugging Face cache location', () => {
  it('follows huggingface_hub: HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME or ~/.cache', () => {
    expect(hubCacheDir({ HF_HUB_CACHE: '/c', HF_HOME: '/h' })).toBe('/c');
    expect(hubCacheDir({ HF_HOME: '/data' })).toBe('/data/hub');
    expect(hubCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/huggingface/hub');
    expect(hubCacheDir({})).toBe(join(homedir(), '.cache', 'huggingface', 'hub'));
  });
});

const file = (path: string, size = 100): RepoFile => ({ path, size, oid: 'x'.repeat(40), ...(path.includes('.onnx') ? { lfs: { oid: 'y'.repeat(64), size } } : {}) });

describe('selecting what the engine needs', () => {
  const listing = [
    'README.md', '.gitattributes', 'config.json', 'tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json', 'vocab.json', 'merges.txt',
    'onnx/audio_encoder_int4.onnx', 'onnx/audio_encoder_int4.onnx.data', 'onnx/audio_encoder_int8.onnx', 'onnx/audio_encoder_int8.onnx.data',
    'onnx/audio_encoder_fp32.onnx', 'onnx/audio_encoder_fp32.onnx_data',
    'onnx/decoder_prefill_int4.onnx', 'onnx/decoder_prefill_int4.onnx.data', 'onnx/decoder_prefill_fp16.onnx', 'onnx/decoder_prefill_fp16.onnx.data',
    'onnx/decoder_step_int4.onnx', 'onnx/decoder_step_int4.onnx.data', 'calibration/sample.wav',
  ].map((p) => file(p));

  it('takes the INT8 encoder, both INT4 decoders with their data, tokenizer and configuration only', () => {
    const s = selectModelFiles('acme/x', listing);
    expect(s.graphs).toEqual({ encoder: 'onnx/audio_encoder_int8.onnx', prefill: 'onnx/decoder_prefill_int4.onnx', step: 'onnx/decoder_step_int4.onnx' });
    expect(s.files.map((f) => f.path).sort()).toEqual([
      'config.json', 'merges.txt', 'onnx/audio_encoder_int8.onnx', 'onnx/audio_encoder_int8.onnx.data', 'onnx/decoder_prefill_int4.onnx',
      'onnx/decoder_prefill_int4.onnx.data', 'onnx/decoder_step_int4.onnx', 'onnx/decoder_step_int4.onnx.data', 'preprocessor_config.json',
      'tokenizer.json', 'tokenizer_config.json', 'vocab.json',
    ]);
    expect(s.embeddingTable).toBeUndefined();
  });

  it('falls back to the INT4 encoder, and takes an embedding table the repo ships', () => {
    const s = selectModelFiles('acme/x', [...listing.filter((f) => !f.path.includes('int8')), file('embed_tokens.npy')]);
    expect(s.graphs.encoder).toBe('onnx/audio_encoder_int4.onnx');
    expect(s.embeddingTable).toBe('embed_tokens.npy');
    expect(s.files.map((f) => f.path)).toContain('embed_tokens.npy');
  });

  it('says in one line when the repo is not an export the engine can run', () => {
    expect(() => selectModelFiles('acme/llm', [file('model.safetensors'), file('config.json')])).toThrow(
      /^acme\/llm: no audio_encoder_\*\.onnx, decoder_prefill_\*\.onnx and decoder_step_\*\.onnx found/,
    );
  });
});
