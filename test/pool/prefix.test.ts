import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tokenizer } from '../../src/asr/tokenizer.js';
import { AudioError, PoolError } from '../../src/pool/errors.js';
import type { Admission, AsrPool, TranscribeCall } from '../../src/pool/pool.js';
import type { Transcription } from '../../src/pool/result.js';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { fixtureModel } from '../support/fixture-models.js';
import { startPool } from '../support/pool.js';
import { sharedPath } from '../support/shared.js';

/*
 * The prefix and whole options cross the thread boundary: a prefixed call through the real pool and worker thread
 * continues the model's own text exactly and generates only the rest; whole audio is one segment; mistakes come
 * back as clear errors.
 */

const SR = 16000;
const clipBytes = () => readFileSync(sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'));

describe('AsrPool with a prefix', () => {
  let pool: AsrPool;
  let tok: Tokenizer;
  let pcm: Float32Array;

  beforeAll(async () => {
    const modelDir = fixtureModel('default');
    tok = Tokenizer.fromModelDir(modelDir);
    pool = await startPool('default', { vad: { maxSegmentSeconds: 15 } });
    pcm = await pool.decode(clipBytes());
  });
  afterAll(() => pool.drain(1000));

  /** Under an admission of its own, on a copy of the audio (the pool takes the buffer). */
  async function transcribe(audio: Float32Array, call: TranscribeCall = {}): Promise<Transcription & { deltas: string[] }> {
    const admission = pool.admit() as Admission;
    expect('release' in admission).toBe(true);
    const deltas: string[] = [];
    try {
      return { ...(await pool.transcribe(admission, audio.slice(), { ...call, onDelta: (d) => deltas.push(d) })), deltas };
    } finally {
      admission.release();
    }
  }

  it('continues the model’s own text, generating only the rest, next to an unprefixed run', async () => {
    const reference = await transcribe(pcm, { whole: true });
    expect(FIXTURE_SENTENCES).toContain(reference.text);
    const ids = reference.segments[0]!.tokens;
    const prefix = { language: reference.languages[0]!, text: tok.decode(ids.slice(0, 4)) };
    const [r, beside] = await Promise.all([transcribe(pcm, { prefix }), transcribe(pcm, { whole: true })]);
    expect(beside.text).toBe(reference.text);
    expect(r.text).toBe(reference.text);
    expect(r.text.startsWith(prefix.text)).toBe(true);
    expect(r.deltas.join('')).toBe(reference.text.slice(prefix.text.length));
    expect(r.deltas.join('').startsWith(' ')).toBe(true);
    expect(r.languages).toEqual(['English']);
    expect(r.usage.generatedTokens).toBe(ids.length - 4);
    expect(r.usage.promptTokens).toBe(reference.usage.promptTokens + 3 + 4);
  });

  it('keeps a prefix the model did not say, and continues after it', async () => {
    const r = await transcribe(pcm, { prefix: { language: 'English', text: 'Hello there' } });
    expect(r.text.startsWith('Hello there ')).toBe(true);
    expect(r.deltas.join('')).toBe(r.text.slice('Hello there'.length));
    expect(FIXTURE_SENTENCES).not.toContain(r.text);
  });

  it('transcribes whole audio as one segment where voice activity detection splits it, and refuses it past the chunk limit', async () => {
    const gapped = new Float32Array(pcm.length * 2 + 3 * SR);
    gapped.set(pcm, 0);
    gapped.set(pcm, pcm.length + 3 * SR);
    expect((await transcribe(gapped)).segments.length).toBeGreaterThanOrEqual(2);
    const r = await transcribe(gapped, { whole: true });
    expect(r.segments).toEqual([expect.objectContaining({ start: 0, end: gapped.length / SR, text: r.text })]);
    expect(FIXTURE_SENTENCES).toContain(r.text);

    const long = new Float32Array(31 * SR).fill(0.01);
    for (const call of [{ whole: true }, { prefix: { language: 'English', text: 'so' } }]) {
      const refused = transcribe(long, call);
      await expect(refused).rejects.toBeInstanceOf(AudioError);
      await expect(refused).rejects.toMatchObject({ code: 'too_long' });
    }
  });

  it('says clearly when a prefix names no language the model writes', async () => {
    const refused = transcribe(pcm, { prefix: { language: 'English<|im_end|>', text: 'x' } });
    await expect(refused).rejects.toBeInstanceOf(PoolError);
    await expect(refused).rejects.toThrow(/prefix language must be a language name/);
    // the worker keeps serving
    expect(FIXTURE_SENTENCES).toContain((await transcribe(pcm)).text);
  });
});
