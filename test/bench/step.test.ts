import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TOY_DIMS, writeFullSizeModel } from '../../tools/full-size/model-dir.js';
import { fixtureModel } from '../support/fixture-models.js';
import { benchScript } from '../support/cli.js';
import { sharedPath } from '../support/shared.js';
import { lavapipeIcd } from '../support/webgpu.js';
import type { SpeechRate } from '../../bench/speech-rate.js';
import type { StepBenchRow as StepRow } from '../../bench/step.js';

const scratch = mkdtempSync(join(tmpdir(), 'bench-step-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** npm run bench:step -- ARGS, as a child process, with its own graph cache. */
const benchStep = (args: string[], env: Record<string, string> = {}) =>
  benchScript('step', args, { timeoutMs: 120_000, env: { XDG_CACHE_HOME: join(scratch, 'cache'), ...env } });

/** A row's audio seconds per second, by the definitions the report's audioNote gives, from its own figures. */
function expectAudioRate(r: StepRow, speech: SpeechRate): void {
  const decode = r.tokensPerSecond / speech.answerTokensPerAudioSecond;
  const withPrefill = (r.batch * speech.audioSeconds * 1000) / (r.batch * speech.promptTokens * r.prefillMsPerToken + speech.answerTokens * r.stepMs.median);
  // three significant digits
  expect(r.audioSecondsPerSecond.decode / decode).toBeCloseTo(1, 2);
  expect(r.audioSecondsPerSecond.withPrefill / withPrefill).toBeCloseTo(1, 2);
  expect(r.audioSecondsPerSecond.withPrefill).toBeLessThanOrEqual(r.audioSecondsPerSecond.decode);
}

describe('npm run bench:step', () => {
  it('measures every batch x context with and without lean graphs, next to a weights-only floor', async () => {
    const out = join(scratch, 'step.json');
    const result = await benchStep(['--model-dir', fixtureModel('default'), '--batch', '2,1', '--context', '40,70', '--steps', '3', '--lean', 'both', '--int8', 'off', '--out', out]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const report = JSON.parse(readFileSync(out, 'utf8'));
    expect(report).toMatchObject({ bench: 'step', provider: 'cpu', steps: 3, skipped: [] });

    expect(report.variants).toHaveLength(2);
    const [original, lean] = report.variants;
    for (const v of report.variants) {
      // each variant's floor is read from its own step graph
      expect(v.floor.matmuls).toBeGreaterThan(0);
      expect(v.floor.rows.map((r: { batch: number }) => r.batch)).toEqual([1, 2]);
      for (const r of v.floor.rows) expect(r.ms.median).toBeGreaterThan(0);
    }
    expect(original).toMatchObject({ lean: false, sharedKv: false, int8: false, graphs: { prefill: { greedy: false }, step: { greedy: false } } });
    // lean as the engine loads it: KV heads read once where the graph repeats them (the small fixture does not)
    expect(lean).toMatchObject({ lean: true, sharedKv: true, int8: false, graphs: { prefill: { greedy: true, int8Matmuls: 0, sharedKvHeads: 0 }, step: { greedy: true } } });
    expect(lean.graphs.step.file).toContain(join(scratch, 'cache', 'mega-asr', 'graphs'));

    const rows = report.rows as StepRow[];
    expect(rows.map((r) => `${r.lean}/${r.context}/${r.batch}`)).toEqual(
      ['false', 'true'].flatMap((l) => ['40', '70'].flatMap((c) => ['1', '2'].map((b) => `${l}/${c}/${b}`))),
    );
    for (const r of rows) {
      // one floor run beside each measured step, at the row's batch size
      expect(r.floorMs).toBeGreaterThan(0);
      expect(r.stepMs.median).toBeGreaterThan(0);
      expect(r.stepMs.p90).toBeGreaterThanOrEqual(r.stepMs.median);
      expect(r.stepMs.min).toBeLessThanOrEqual(r.stepMs.median);
      // host time is each step's wall time minus its session run: never negative, never more than the step
      expect(r.hostMs.median).toBeGreaterThanOrEqual(0);
      expect(r.hostMs.median).toBeLessThanOrEqual(r.stepMs.median);
      expect(r.runMs.median).toBeLessThanOrEqual(r.stepMs.median);
      expect(r.stepOverFloor).toBeCloseTo(r.stepMs.median / r.floorMs, 1);
      expect(r.tokensPerSecond).toBeCloseTo((r.batch * 1000) / r.stepMs.median, 0);
      // two warm-up steps and the earlier batches' steps come before these, after a prompt of `context` tokens
      expect(r.contextMeasured).toBeGreaterThan(r.context);
      expect(r.contextMeasured).toBeLessThan(r.context + 20);
    }
    expect(result.stdout).toMatch(/^host\/lean floor: \d+ MatMul nodes/m);
    expect(result.stdout).toMatch(/^host\/lean\s+2\s+70\s/m);
    // on the CPU provider the host backend's cache bytes are counted too (they cross nothing there)
    for (const r of rows) expect(r.bytesPerStep.toDevice).toBeGreaterThan(1000);

    // audio seconds per second at the speech rate of the default clips: the shared voices-in-the-wild folder
    const clips = sharedPath('fixtures', 'voices-in-the-wild');
    const texts = readFileSync(join(clips, 'transcripts.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { text: string }).text);
    const speech = report.speech as SpeechRate;
    expect(speech).toMatchObject({ clips: 8, source: clips });
    expect(speech.audioSeconds).toBeGreaterThan(5);
    expect(speech.audioSeconds).toBeLessThan(9);
    // 13 encoder rows a second of audio, and the chat template around them
    expect(speech.promptTokens).toBeGreaterThan(13 * speech.audioSeconds);
    expect(speech.promptTokens).toBeLessThan(13 * speech.audioSeconds + 30);
    // every word at least one token, and the header and <|im_end|> besides
    const words = texts.reduce((n, t) => n + t.split(' ').length, 0) / texts.length;
    expect(speech.answerTokens).toBeGreaterThan(words + 4);
    expect(speech.answerTokensPerAudioSecond).toBeCloseTo(speech.answerTokens / speech.audioSeconds, 2);
    for (const r of rows) expectAudioRate(r, speech);
    expect(report.audioNote).toContain(`8 clips in ${clips}`);
    expect(result.stdout).toContain(report.audioNote);
    expect(result.stdout).toMatch(/\stokens\/s\s+audio s\/s\s+\+prefill\s/);
  });

  it('--kv-delta both --float32-cache both: the whole cache, the new column with the fp16 cache, then held as fp32', async () => {
    // the full-size stand-in's topology at toy widths: 2 layers of fp16 [B, 2, L, 16]
    const model = join(scratch, 'toy-full-size');
    writeFullSizeModel(model, { batch: 'dynamic', kv: 'float16', seed: 7, dims: TOY_DIMS });
    const out = join(scratch, 'step-kv-delta.json');
    const result = await benchStep(['--model-dir', model, '--batch', '2', '--context', '40', '--steps', '2', '--kv-delta', 'both', '--float32-cache', 'both', '--out', out]);
    expect(result.stderr).not.toMatch(/bench:step|\n\s+at /);
    expect(result.code).toBe(0);
    const report = JSON.parse(readFileSync(out, 'utf8'));
    const variants = report.variants as { kvDelta: boolean; float32Cache?: boolean; graphs: { step: { kvDelta: number; float32Cache: number } } }[];
    expect(variants.map((v) => [v.kvDelta, v.float32Cache, v.graphs.step.kvDelta, v.graphs.step.float32Cache])).toEqual([
      [false, undefined, 0, 0],
      [true, false, 4, 0],
      [true, true, 4, 4],
    ]);
    const [whole, half, wide] = (report.rows as StepRow[]).map((r) => r.bytesPerStep);
    // the past cache in (with the room after the rows); out, the whole present cache against each layer's new
    // column, 4 x [1, 2, 1, 16] a row, fp16 then fp32, and the greedy id
    expect(half!.toHost).toBe(2 * (4 * 2 * 16 * 2 + 8));
    expect(wide!.toHost).toBe(2 * (4 * 2 * 16 * 4 + 8));
    expect(half!.toDevice).toBeGreaterThan(whole!.toDevice);
    expect(wide!.toDevice).toBeGreaterThan(1.9 * half!.toDevice);
    expect(whole!.toHost).toBeGreaterThan(whole!.toDevice - 2 * 1000);
    expect(result.stdout).toMatch(/^host\/lean-whole-cache\+int8\s+2\s+40\s/m);
    expect(result.stdout).toMatch(/^host\/lean-float16-cache\+int8\s+2\s+40\s/m);
    expect(result.stdout).toMatch(/^host\/lean\+int8\s+2\s+40\s/m);
  });

  it('refuses bad arguments with one line of usage, not a stack trace', async () => {
    const result = await benchStep(['--model-dir', fixtureModel('default'), '--batch', '0,2']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^bench:step: --batch takes positive integers separated by commas; got '0,2'\nusage: /);
    expect(result.stderr).not.toMatch(/\n\s+at /);
    for (const [args, message] of [
      [['--backend', 'webgpu', '--provider', 'cpu'], '--backend webgpu runs on the webgpu provider; got --provider cpu'],
      [['--backend', 'both', '--int8', 'on'], '--int8 on: int8 matmuls run on the CPU only; the webgpu backend takes --int8 off'],
      [['--backend', 'gpu'], "--backend is host, webgpu or both; got 'gpu'"],
      [['--shared-kv', 'yes'], "--shared-kv is on, off or both; got 'yes'"],
      [['--lean', 'off', '--shared-kv', 'both'], "--shared-kv both: the KV-head rewrite is one of the lean graphs'; --lean off loads the graphs as exported"],
      [['--kv-delta', 'yes'], "--kv-delta is on, off or both; got 'yes'"],
      [['--lean', 'off', '--kv-delta', 'off'], "--kv-delta off: the cache rewrite is one of the lean graphs'; --lean off loads the graphs as exported"],
      [['--backend', 'webgpu', '--kv-delta', 'both'], "--kv-delta both: the webgpu backend keeps the cache as the graph returns it; the rewrite is the host backend's"],
    ]) {
      const refused = await benchStep(['--model-dir', fixtureModel('default'), ...args!]);
      expect(refused.code).toBe(2);
      expect(refused.stderr.split('\n')[0]).toBe(`bench:step: ${message}`);
    }
    const missing = await benchStep(['--model-dir', join(scratch, 'nowhere')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^bench:step: .*nowhere/);
  });

  it('refuses a clips folder it cannot read with one line, before loading any model', async () => {
    const unlisted = join(scratch, 'clips-unlisted');
    mkdirSync(unlisted);
    copyFileSync(sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'), join(unlisted, 'noise.wav'));
    const wrongFile = join(scratch, 'clips-wrong-file');
    mkdirSync(wrongFile);
    writeFileSync(join(wrongFile, 'transcripts.jsonl'), '{"file": "noise.wav", "text": "hello"}\n');
    writeFileSync(join(wrongFile, 'noise.wav'), 'not audio');
    for (const [dir, message] of [
      [join(scratch, 'no-clips'), `no clips folder ${join(scratch, 'no-clips')}`],
      [unlisted, `${join(unlisted, 'transcripts.jsonl')} is missing`],
      [wrongFile, `${join(wrongFile, 'noise.wav')}: not a readable WAV file`],
    ]) {
      const refused = await benchStep(['--model-dir', fixtureModel('default'), '--clips', dir!]);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/^bench:step: --clips: .*\n$/);
      expect(refused.stderr).toContain(message);
      expect(refused.stdout).toBe('');
    }
  });

  it('measures the webgpu backend beside the host one on the same device (lavapipe here), with the bytes a step moves each way', async () => {
    const out = join(scratch, 'step-webgpu.json');
    const args = ['--model-dir', fixtureModel('default'), '--backend', 'both', '--batch', '1,2', '--context', '40', '--steps', '2', '--out', out];
    const result = await benchStep(args, { VK_ICD_FILENAMES: lavapipeIcd() });
    expect(result.stderr).not.toMatch(/bench:step|\n\s+at /);
    expect(result.code).toBe(0);
    const report = JSON.parse(readFileSync(out, 'utf8'));
    expect(report).toMatchObject({ bench: 'step', provider: 'webgpu', backend: 'both', complete: true, skipped: [] });
    expect(report.bytesNote).toMatch(/on cuda or webgpu this crosses PCIe each way, on the cpu provider nothing crosses/);
    expect(report.variants.map((v: { backend: string; int8: boolean }) => `${v.backend}/${v.int8}`)).toEqual(['webgpu/false', 'host/false']);

    const rows = report.rows as StepRow[];
    expect(rows.map((r) => `${r.backend}/${r.batch}`)).toEqual(['webgpu/1', 'webgpu/2', 'host/1', 'host/2']);
    const at = (backend: string, batch: number) => rows.find((r) => r.backend === backend && r.batch === batch)!.bytesPerStep;
    for (const r of rows) expect(r.stepMs.median).toBeGreaterThan(0);
    for (const batch of [1, 2]) {
      // the device-resident cache: a few bytes per sequence each way (its id and position in, its greedy id out)
      const device = at('webgpu', batch);
      for (const n of [device.toDevice, device.toHost]) {
        expect(n).toBeGreaterThan(0);
        expect(n).toBeLessThan(100 * batch);
      }
      // the host backend hands the session the whole cache and gets the whole cache back (the small fixture's step
      // is not one the new-column rewrite matches)
      const host = at('host', batch);
      expect(host.toDevice).toBeGreaterThan(1000 * batch);
      expect(host.toHost).toBeGreaterThan(1000 * batch);
    }
    expect(at('host', 2).toDevice).toBeGreaterThan(at('host', 1).toDevice);
    for (const r of rows) expectAudioRate(r, report.speech as SpeechRate);
    expect(result.stdout).toMatch(/^webgpu\/lean\s+2\s+40\s.*\s\d+ B\s+\d+ B$/m);
    expect(result.stdout).toMatch(/^host\/lean\s+2\s+40\s.*\s[\d.]+ KiB\s+[\d.]+ KiB$/m);
  });
});
