import { readFileSync } from 'node:fs';
import { InferenceSession, type Tensor } from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { vulkanLoaderOpens, WebGpuBackend } from '../../src/asr/backends/webgpu.js';
import { AsrEngine, type ChunkOptions, type ChunkResult, type EngineOptions } from '../../src/asr/engine.js';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { megaAsr } from '../support/cli.js';
import { fixtureModel } from '../support/fixture-models.js';
import { sharedPath } from '../support/shared.js';
import { useLavapipe } from '../support/webgpu.js';

/*
 * The webgpu backend on Mesa's software Vulkan (lavapipe): the same transcripts token for token as the host backend
 * on the KV-sensitive fixture (a cache row, mask or position of another row corrupts a transcript), with ragged
 * prompts, rows joining and leaving, a cancel, a budget cut and a failed step; a few bytes per row and step between
 * JavaScript and the device; every device tensor it made disposed once its sequences are done. Shader compilation
 * on lavapipe takes seconds per new shape, so the cases share one engine and few shapes.
 */

useLavapipe();

/** Every gpu-buffer tensor any session of this process returns (the backend's and its device graphs'). */
const deviceOutputs: Tensor[] = [];
// InferenceSession is typed as a factory; at run time it is the class every session is made from
const sessions = (InferenceSession as unknown as { prototype: InferenceSession }).prototype;
const run = sessions.run;
/** the next run of a session this picks fails (once): a device graph or a decoder failing mid-batch */
let failNext: ((session: InferenceSession) => boolean) | undefined;
sessions.run = async function (this: InferenceSession, ...args: Parameters<typeof run>) {
  if (failNext?.(this)) {
    failNext = undefined;
    throw new Error('failed on purpose');
  }
  const out = await run.apply(this, args);
  for (const t of Object.values(out)) if (t.location === 'gpu-buffer') deviceOutputs.push(t);
  return out;
} as typeof run;
/** device tensors not disposed: the embedding table uploaded at load is the only one an idle engine keeps */
const undisposed = () => deviceOutputs.filter((t) => t.location !== 'none');

const quiet = { warn: () => {}, info: () => {} };
const load = (extra: Partial<EngineOptions> = {}) => AsrEngine.load({ modelDir: fixtureModel('default'), device: 'cpu', logger: quiet, maxBatch: 4, ...extra });
const clip = (name: string) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));

interface Job {
  pcm: Float32Array;
  options: Partial<ChunkOptions>;
}

describe('the webgpu backend on lavapipe', () => {
  let host: AsrEngine;
  let gpu: AsrEngine;
  let jobs: Job[];
  let solo: ChunkResult[];
  const transcribe = (engine: AsrEngine, job: Job, extra: Partial<ChunkOptions> = {}) => engine.transcribeChunk(job.pcm, { maxNewTokens: 40, ...job.options, ...extra });

  beforeAll(async () => {
    // ragged prompts: different clips, a forced language, a context
    jobs = [
      { pcm: clip('noise'), options: {} },
      { pcm: clip('far_field'), options: { language: 'English' } },
      { pcm: clip('echo'), options: { context: 'Qwen3-ASR, a kitchen, hot words: fox' } },
      { pcm: clip('mixed'), options: {} },
      { pcm: clip('dropout'), options: {} },
    ];
    host = await load();
    solo = [];
    for (const job of jobs) solo.push(await transcribe(host, job));
    gpu = await load({ backend: 'webgpu' });
  });
  afterAll(async () => {
    await gpu?.release();
    await host?.release();
  });

  it('loads every session on WebGPU with the device-resident backend', () => {
    expect(gpu.provider).toBe('webgpu');
    expect(gpu.backend).toBeInstanceOf(WebGpuBackend);
    expect(gpu.batching).toEqual({ dynamic: true, maxBatch: 4 });
    expect(new Set(solo.map((r) => r.text)).size).toBeGreaterThanOrEqual(3);
  });

  it('decodes ragged concurrent prompts token for token as the host backend, rows joining as others leave', async () => {
    const together = await Promise.all(jobs.map((job) => transcribe(gpu, job)));
    together.forEach((r, i) => expect(r.tokens, `job ${i}`).toEqual(solo[i]!.tokens));
    // five requests, four rows: the fifth joins when the first leaves
    const rows = together.reduce((a, r) => a + r.timings.stepRows, 0) / together.reduce((a, r) => a + r.timings.steps, 0);
    expect(rows).toBeGreaterThan(2);
    expect(gpu.backend.liveHandles).toBe(0);
    expect(undisposed()).toHaveLength(1);
  });

  it('sends 24 bytes per row and step and reads back 8: no cache, logit or embedding crosses', async () => {
    const backend = gpu.backend as WebGpuBackend;
    const r = await transcribe(gpu, jobs[0]!);
    expect(r.tokens).toEqual(solo[0]!.tokens);
    // the last step had one row: its id and first column to the step-inputs graph, the column count, its position
    expect(backend.lastStepTraffic).toEqual({ toDevice: 8 + 8 + 8 + 8, toHost: 8 });
  });

  it('drops a cancelled row and a row cut at its budget mid-batch, lets a late one join, and the others stay exact', async () => {
    let checks = 0;
    let late: Promise<ChunkResult> | undefined;
    const together = await Promise.all(
      jobs.slice(0, 3).map((job, i) =>
        transcribe(gpu, job, [
          { shouldStop: () => (++checks === 3 && (late = transcribe(gpu, jobs[3]!)), false) },
          { shouldStop: () => checks > 6 },
          { maxNewTokens: 5 },
        ][i]),
      ),
    );
    expect(together[0]!.tokens).toEqual(solo[0]!.tokens);
    expect(together[1]).toMatchObject({ cancelled: true });
    expect(solo[1]!.tokens.slice(0, together[1]!.tokens.length)).toEqual(together[1]!.tokens);
    expect(together[1]!.tokens.length).toBeLessThan(solo[1]!.tokens.length);
    expect(together[2]).toMatchObject({ truncated: true, tokens: solo[2]!.tokens.slice(0, 5) });
    expect((await late!).tokens).toEqual(solo[3]!.tokens);
    expect(gpu.backend.liveHandles).toBe(0);
    expect(undisposed()).toHaveLength(1);
  });

  it('fails every row of a failed step, disposes every cache on the device, and keeps working', async () => {
    const step = gpu.sessions.step;
    const original = step.run;
    let steps = 0;
    step.run = ((...args: Parameters<typeof original>) => (++steps === 3 ? Promise.reject(new Error('step failed on purpose')) : original.apply(step, args))) as typeof original;
    const outcomes = await Promise.allSettled(jobs.slice(0, 3).map((job) => transcribe(gpu, job)));
    step.run = original;
    for (const o of outcomes) expect(o).toMatchObject({ status: 'rejected', reason: { message: 'step failed on purpose' } });
    expect(gpu.backend.liveHandles).toBe(0);
    expect(undisposed()).toHaveLength(1);
    expect((await transcribe(gpu, jobs[2]!)).tokens).toEqual(solo[2]!.tokens);
  });

  it.each([
    ['a row joining the batch (the append graph)', (s: InferenceSession) => s.inputNames.includes('row_pads')],
    ['a prefill', (s: InferenceSession) => s === (gpu.sessions.prefill as InferenceSession)],
  ])('fails only what %s touched when it fails, disposes every cache on the device, and keeps working', async (_, which) => {
    failNext = which;
    const outcomes = await Promise.allSettled(jobs.slice(0, 3).map((job) => transcribe(gpu, job)));
    expect(failNext).toBeUndefined();
    expect(outcomes.some((o) => o.status === 'rejected')).toBe(true);
    outcomes.forEach((o, i) => {
      if (o.status === 'rejected') expect(o.reason).toMatchObject({ message: 'failed on purpose' });
      else expect(o.value.tokens).toEqual(solo[i]!.tokens);
    });
    expect(gpu.backend.liveHandles).toBe(0);
    expect(undisposed()).toHaveLength(1);
    expect((await transcribe(gpu, jobs[1]!)).tokens).toEqual(solo[1]!.tokens);
  });

  it('frees the table and its device graphs on release', async () => {
    const other = await load({ backend: 'webgpu' });
    expect(undisposed()).toHaveLength(2);
    await other.release();
    expect(undisposed()).toHaveLength(1);
  });
});

describe('the webgpu backend on the other graph contracts', () => {
  // fp16-kv: fp16 embeddings from an fp16 table, fp16 cache, [3, B, S] positions, all-position logits;
  // input-ids: ids into the graph (no table on the device), no mask, so one sequence at a time
  it.each(['fp16-kv', 'input-ids'] as const)('%s: the same tokens as the host backend, two requests at once', async (variant) => {
    const pcm = [clip('noise'), clip('echo')];
    const host = await AsrEngine.load({ modelDir: fixtureModel(variant), device: 'cpu', logger: quiet, maxBatch: 4 });
    const gpu = await AsrEngine.load({ modelDir: fixtureModel(variant), backend: 'webgpu', logger: quiet, maxBatch: 4 });
    try {
      const alone: ChunkResult[] = [];
      for (const p of pcm) alone.push(await host.transcribeChunk(p, { maxNewTokens: 30 }));
      const together = await Promise.all(pcm.map((p) => gpu.transcribeChunk(p, { maxNewTokens: 30 })));
      together.forEach((r, i) => expect(r.tokens).toEqual(alone[i]!.tokens));
      expect(alone[0]!.tokens.length).toBeGreaterThan(5);
      expect(gpu.backend.liveHandles).toBe(0);
    } finally {
      await gpu.release();
      await host.release();
    }
  });
});

describe('ASR_BACKEND=webgpu through the CLI', () => {
  const noise = sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav');

  it('transcribes on lavapipe and says so', async () => {
    const r = await megaAsr(['transcribe', noise, '--model-dir', fixtureModel('default'), '--json'], { ASR_BACKEND: 'webgpu', VK_ICD_FILENAMES: process.env.VK_ICD_FILENAMES! });
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { text: string; provider: string };
    expect(result.provider).toBe('webgpu');
    expect(FIXTURE_SENTENCES).toContain(result.text);
  });

  it('tells a Vulkan loader that opens from one that is missing or broken', () => {
    expect(vulkanLoaderOpens()).toBe(true); // .ci/run installs libvulkan1
    expect(vulkanLoaderOpens('libvulkan-not-installed.so.1')).toBe(false);
    expect(vulkanLoaderOpens('/dev/null')).toBe(false);
  });

  it('is a one-line startup error naming what is missing when no Vulkan driver can be found', async () => {
    const r = await megaAsr(['transcribe', noise, '--model-dir', fixtureModel('default')], { ASR_BACKEND: 'webgpu', VK_ICD_FILENAMES: '/nonexistent/icd.json' });
    expect(r.code).toBe(1);
    // Vulkan's loader and Dawn write their own warnings first (native code, not ours to silence); ours is one line
    const lines = r.stderr.trim().split('\n');
    expect(lines.filter((l) => l.startsWith('mega-asr:'))).toHaveLength(1);
    expect(lines.at(-1)).toMatch(/^mega-asr: ASR_BACKEND=webgpu, but the WebGPU execution provider could not start: .*adapter.*\(the Vulkan loader is there, but no adapter: it needs a Vulkan driver/);
    expect(r.stderr).not.toMatch(/\n\s+at .*\.(js|ts):\d+/);
  });
});
