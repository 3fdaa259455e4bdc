import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tensor } from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { AsrEngine, type ChunkOptions } from '../../src/asr/engine.js';
import { InferenceError, ModelLoadError } from '../../src/asr/errors.js';
import { FIXTURE_SENTENCES, REPEATED_TEXT, RUNAWAY_TEXT, type FixtureVariantName } from '../../tools/fixture/model-dir.js';
import { CLIP_NAMES, fixtureModel } from '../support/fixture-models.js';
import { sharedPath } from '../support/shared.js';

const clip = (name: string) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));
const quiet = { warn: () => {} };
const load = (variant: FixtureVariantName, extra: Partial<Parameters<typeof AsrEngine.load>[0]> = {}) =>
  AsrEngine.load({ modelDir: fixtureModel(variant), device: 'cpu', logger: quiet, ...extra });
const budget: ChunkOptions = { maxNewTokens: 120 };

type Feeds = Record<string, Tensor>;
/** Wraps one session's run so a test can alter what the engine feeds it (a fault the fixture must notice). */
function tamper(engine: AsrEngine, which: 'encoder' | 'prefill' | 'step', change: (feeds: Feeds) => Feeds, times = Infinity) {
  const session = engine.sessions[which];
  const run = session.run.bind(session);
  let left = times;
  session.run = ((feeds: Feeds, ...rest: unknown[]) =>
    (run as (f: Feeds, ...r: unknown[]) => ReturnType<typeof run>)(left-- > 0 ? change(feeds) : feeds, ...rest)) as typeof session.run;
}

const variants: FixtureVariantName[] = ['default', 'input-ids', 'fp16-kv', 'npy-f32'];

describe('engine on generated models of every contract variant', () => {
  const engines = new Map<FixtureVariantName, AsrEngine>();
  const pcm = new Map<string, Float32Array>();

  /** the default model with its graphs as they are: the logits path */
  let logitsEngine: AsrEngine;

  beforeAll(async () => {
    for (const v of variants) engines.set(v, await load(v));
    logitsEngine = await load('default', { leanGraphs: false });
    for (const name of CLIP_NAMES) pcm.set(name, clip(name));
  });
  afterAll(async () => Promise.all([...engines.values(), logitsEngine].map((e) => e.release())));

  it('reads each contract from the sessions', () => {
    const d = engines.get('default')!;
    expect(d.prefillContract.token).toEqual({ kind: 'inputs_embeds', name: 'inputs_embeds', type: 'float32' });
    expect(d.prefillContract).toMatchObject({ kvType: 'float32', kvHeads: 2, headDim: 8, attentionMask: 'attention_mask' });
    expect(d.prefillContract.positionIds).toEqual({ name: 'position_ids', rank: 2 });
    // lean graphs (the default): greedy ids instead of logits
    expect(d.prefillContract.greedyIds).toEqual({ name: 'greedy_ids' });
    expect(d.stepContract.logits).toBeUndefined();
    expect(d.stepContract.kv).toHaveLength(6);
    expect(d.embeddings?.table.dtype).toBe('bfloat16');
    expect(d.encoderContract).toMatchObject({ mel: { rank: 3 }, output: { rank: 3 }, hiddenSize: 16 });

    const ids = engines.get('input-ids')!;
    expect(ids.prefillContract.token.kind).toBe('input_ids');
    expect(ids.prefillContract.audio).toEqual({ name: 'audio_features', rank: 3, type: 'float32' });
    expect(ids.prefillContract).toMatchObject({ kvType: 'float16', positionIds: { rank: 3 }, greedyIds: { name: 'greedy_ids' } });
    expect(logitsEngine.prefillContract.logits).toEqual({ name: 'logits', type: 'float32', span: 'last' });
    expect(logitsEngine.stepContract.greedyIds).toBeUndefined();
    expect(ids.prefillContract.attentionMask).toBeUndefined();
    expect(ids.embeddings).toBeUndefined();
    expect(ids.encoderContract).toMatchObject({ mel: { name: 'mel', rank: 2 }, output: { rank: 2 } });

    const f16 = engines.get('fp16-kv')!;
    expect(f16.prefillContract.token).toMatchObject({ kind: 'inputs_embeds', type: 'float16' });
    expect(f16.embeddings?.table.dtype).toBe('float16');
    expect(engines.get('npy-f32')!.embeddings?.table.dtype).toBe('float32');
  });

  it('gives every variant the same transcript of each clip, in auto and forced language', async () => {
    const heard = new Set<string>();
    for (const name of CLIP_NAMES) {
      const audio = pcm.get(name)!;
      const reference = await engines.get('default')!.transcribeChunk(audio, budget);
      expect(FIXTURE_SENTENCES).toContain(reference.text);
      expect(reference.language).toBe('English');
      expect(reference.rawText).toBe(`language English<asr_text>${reference.text}`);
      expect(reference.truncated).toBe(false);
      heard.add(reference.text);
      for (const [v, engine] of [...engines, ['default (logits)', logitsEngine] as const]) {
        expect((await engine.transcribeChunk(audio, budget)).text, `${v} ${name} auto`).toBe(reference.text);
        const forced = await engine.transcribeChunk(audio, { ...budget, language: 'English' });
        expect(forced, `${v} ${name} forced`).toMatchObject({ text: reference.text, rawText: reference.text, language: 'English' });
      }
    }
    // The audio chooses the sentence, so different clips are heard differently.
    expect(heard.size).toBeGreaterThanOrEqual(3);
  });

  it('streams deltas that add up to the transcript, without the language header', async () => {
    for (const language of [undefined, 'English'] as const) {
      const deltas: string[] = [];
      const r = await engines.get('default')!.transcribeChunk(pcm.get('echo')!, {
        ...budget,
        ...(language ? { language } : {}),
        onDelta: (d) => deltas.push(d),
      });
      expect(deltas.length).toBeGreaterThan(3);
      expect(deltas.join('')).toBe(r.text);
    }
  });

  it('puts context text in the prompt without changing what the model hears', async () => {
    const engine = engines.get('default')!;
    const plain = await engine.transcribeChunk(pcm.get('noise')!, budget);
    const withContext = await engine.transcribeChunk(pcm.get('noise')!, { ...budget, context: 'Qwen3-ASR, kitchen' });
    expect(withContext.promptTokens).toBeGreaterThan(plain.promptTokens);
    expect(withContext.text).toBe(plain.text);
  });

  it('transcribes a clip shorter than 0.5 s (zero-padded to 50 frames, 7 audio rows)', async () => {
    const r = await engines.get('input-ids')!.transcribeChunk(pcm.get('noise')!.subarray(0, 3200), budget);
    expect(FIXTURE_SENTENCES).toContain(r.text);
    expect(r.promptTokens).toBe(7 + 15); // the auto-language prompt around 2 pads is 17 ids (golden)
  });

  it('warms up by running every session once on a few tokens, leaving no cache behind', async () => {
    const engine = await load('default');
    try {
      const runs = { encoder: 0, prefill: 0, step: 0 };
      for (const which of ['encoder', 'prefill', 'step'] as const) tamper(engine, which, (f) => ((runs[which] += 1), f));
      await engine.warmUp();
      expect(runs.encoder).toBe(1);
      expect(runs.prefill).toBe(1);
      expect(runs.step).toBeGreaterThanOrEqual(1);
      expect(runs.step).toBeLessThanOrEqual(3);
      expect(engine.backend.liveHandles).toBe(0);
    } finally {
      await engine.release();
    }
  });

  it('stops cooperatively between decode steps', async () => {
    let checks = 0;
    // the first check is before the prefill, the next ones after each token
    const r = await engines.get('default')!.transcribeChunk(pcm.get('noise')!, { ...budget, shouldStop: () => ++checks >= 4 });
    expect(r.cancelled).toBe(true);
    expect(r.tokens).toHaveLength(3);
  });
});

describe('the generated model notices a wrong decode loop', () => {
  let engine: AsrEngine;
  let idsEngine: AsrEngine;
  let audio: Float32Array;
  let expected: string;

  beforeAll(async () => {
    audio = clip('far_field');
    engine = await load('default');
    idsEngine = await load('input-ids');
    expected = (await engine.transcribeChunk(audio, budget)).text;
  });
  afterAll(async () => Promise.all([engine.release(), idsEngine.release()]));

  /** A fresh engine whose feeds to one session are altered, so the fault cannot leak into other tests. */
  const transcriptWith = async (variant: FixtureVariantName, which: 'prefill' | 'step', change: (f: Feeds) => Feeds, times = Infinity) => {
    const fresh = await load(variant);
    try {
      tamper(fresh, which, change, times);
      return (await fresh.transcribeChunk(audio, { maxNewTokens: 60 })).text;
    } finally {
      await fresh.release();
    }
  };

  it('a position id off by one', async () => {
    const text = await transcriptWith('default', 'step', (f) => {
      const p = f.position_ids!;
      return { ...f, position_ids: new Tensor('int64', (p.data as BigInt64Array).map((x) => x + 1n), p.dims) };
    });
    expect(text).not.toBe(expected);
    expect(text).toContain('#');
  });

  it('past tensors of two layers swapped', async () => {
    const text = await transcriptWith('default', 'step', (f) => ({
      ...f,
      'past_key_values.0.key': f['past_key_values.1.key']!,
      'past_key_values.1.key': f['past_key_values.0.key']!,
    }));
    expect(text).not.toBe(expected);
  });

  it('key and value of one layer swapped', async () => {
    const text = await transcriptWith('default', 'step', (f) => ({
      ...f,
      'past_key_values.2.key': f['past_key_values.2.value']!,
      'past_key_values.2.value': f['past_key_values.2.key']!,
    }));
    expect(text).not.toBe(expected);
  });

  it('one past tensor dropped (an empty cache in its place): the present the step writes into no longer fits', async () => {
    const text = transcriptWith('default', 'step', (f) => ({
      ...f,
      'past_key_values.1.value': new Tensor('float32', new Float32Array(0), [1, 2, 0, 8]),
    }));
    await expect(text).rejects.toThrow(/present\.1\.value/);
  });

  it('an attention mask of the wrong length', async () => {
    const text = await transcriptWith('default', 'step', (f) => {
      const n = f.attention_mask!.dims[1]! + 1;
      return { ...f, attention_mask: new Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]) };
    });
    expect(text).not.toBe(expected);
  });

  it('one audio pad too many (input_ids graph scattering the audio itself): the cache is longer than the prompt', async () => {
    const text = transcriptWith(
      'input-ids',
      'prefill',
      (f) => {
        const ids = Array.from(f.input_ids!.data as BigInt64Array);
        const at = ids.indexOf(151676n);
        ids.splice(at, 0, 151676n);
        const s = ids.length;
        const positions = Array.from({ length: 3 * s }, (_, i) => BigInt(i % s));
        return {
          ...f,
          input_ids: new Tensor('int64', BigInt64Array.from(ids), [1, s]),
          position_ids: new Tensor('int64', BigInt64Array.from(positions), [3, 1, s]),
        };
      },
      1,
    );
    // the prefill writes into buffers of the prompt's shape; onnxruntime's own words name the shape it computed
    await expect(text).rejects.toThrow(/returned a cache of another shape than \[1, 2, 92, 8\] for 92 prompt tokens: .*\{1,2,93,8\}/);
  });

  it('an audio row left as the pad token embedding', async () => {
    const padRow = new Float32Array(16);
    engine.embeddings!.rowToFloat32(151676, padRow, 0);
    const text = await transcriptWith(
      'default',
      'prefill',
      (f) => {
        const embeds = f.inputs_embeds!;
        const data = Float32Array.from(embeds.data as Float32Array);
        // Row 9 is the first audio row of a prompt with empty context (golden prompt.json).
        data.set(padRow, 9 * 16);
        return { ...f, inputs_embeds: new Tensor('float32', data, embeds.dims) };
      },
      1,
    );
    expect(text).not.toBe(expected);
  });

  it('the engine refuses an encoder whose row count is not nAudioTokens(T)', async () => {
    const fresh = await load('default');
    const session = fresh.sessions.encoder;
    const run = session.run.bind(session);
    session.run = (async (feeds: Feeds) => {
      const out = await run(feeds);
      const rows = out.audio_embeds as Tensor;
      const [, n, h] = rows.dims as [number, number, number];
      return { audio_embeds: new Tensor('float32', (rows.data as Float32Array).slice(0, (n - 1) * h), [1, n - 1, h]) };
    }) as typeof session.run;
    await expect(fresh.transcribeChunk(audio, budget)).rejects.toThrow(InferenceError);
    await expect(fresh.transcribeChunk(audio, budget)).rejects.toThrow(/expected nAudioTokens\(\d+\) = \d+ rows/);
    await fresh.release();
  });
});

describe('stop rule, budget and repetition repair', () => {
  it('stops on <|im_end|>; a loop that ignored it would run away', async () => {
    const engine = await load('default');
    const audio = clip('mixed');
    const right = await engine.transcribeChunk(audio, budget);
    expect(right.text).not.toContain(RUNAWAY_TEXT.trim());
    const wrong = await engine.transcribeChunk(audio, { maxNewTokens: 40, stopTokenIds: [151643] });
    expect(wrong.text.startsWith(right.text)).toBe(true);
    expect(wrong.text).toContain(RUNAWAY_TEXT);
    expect(wrong.truncated).toBe(true);
    await engine.release();
  });

  it('stops on <|endoftext|> too', async () => {
    const engine = await load('endoftext');
    const audio = clip('mixed');
    const r = await engine.transcribeChunk(audio, budget);
    expect(FIXTURE_SENTENCES).toContain(r.text);
    expect(r.truncated).toBe(false);
    expect((await engine.transcribeChunk(audio, { maxNewTokens: 40, stopTokenIds: [151645] })).text).toContain(RUNAWAY_TEXT);
    await engine.release();
  });

  it('a model that never stops is cut by the token budget and says so', async () => {
    const engine = await load('never-stops');
    const r = await engine.transcribeChunk(clip('noise'), { maxNewTokens: 50 });
    expect(r.truncated).toBe(true);
    expect(r.tokens).toHaveLength(50);
    await engine.release();
  });

  it('repairs a repeated phrase like the reference', async () => {
    const engine = await load('repeats');
    const r = await engine.transcribeChunk(clip('noise'), { maxNewTokens: 300 });
    expect(r.truncated).toBe(false);
    expect(r.rawText.split(REPEATED_TEXT)).toHaveLength(31);
    expect(FIXTURE_SENTENCES.map((s) => s + REPEATED_TEXT)).toContain(r.text);
    await engine.release();
  });
});

describe('loading', () => {
  it('auto falls back to CPU with one warning; an explicit cuda that cannot load is a startup error', async () => {
    const warnings: string[] = [];
    const engine = await AsrEngine.load({ modelDir: fixtureModel('default'), device: 'auto', logger: { warn: (m) => warnings.push(m) } });
    expect(engine.provider).toBe('cpu');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/CUDA execution provider unavailable.*running on CPU/);
    await engine.release();
    await expect(AsrEngine.load({ modelDir: fixtureModel('default'), device: 'cuda', logger: quiet })).rejects.toThrow(
      /ASR_DEVICE=cuda, but the CUDA execution provider could not start/,
    );
  });

  it('names what is missing or wrong in the model directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'asr-broken-'));
    try {
      await expect(AsrEngine.load({ modelDir: join(dir, 'nope'), device: 'cpu' })).rejects.toThrow(/does not exist/);
      cpSync(fixtureModel('default'), dir, { recursive: true });
      rmSync(join(dir, 'embed_tokens.safetensors'));
      await expect(AsrEngine.load({ modelDir: dir, device: 'cpu' })).rejects.toThrow(
        /decoder_prefill_int4\.onnx takes inputs_embeds.*\.npy or \.safetensors; found none/,
      );
      writeFileSync(join(dir, 'preprocessor_config.json'), JSON.stringify({ feature_size: 80 }));
      await expect(AsrEngine.load({ modelDir: dir, device: 'cpu' })).rejects.toThrow(ModelLoadError);
      await expect(AsrEngine.load({ modelDir: dir, device: 'cpu' })).rejects.toThrow(/feature_size = 128.*found 80/);
      rmSync(join(dir, 'onnx', 'decoder_step_int4.onnx'));
      writeFileSync(join(dir, 'preprocessor_config.json'), '{}');
      await expect(AsrEngine.load({ modelDir: dir, device: 'cpu' })).rejects.toThrow(/expected onnx\/audio_encoder_\*\.onnx/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
