import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelLoadError } from '../../src/asr/errors.js';
import { AudioError, PoolError } from '../../src/pool/errors.js';
import { AsrPool, type Admission, type AdmissionRefusal, type AsrPoolOptions, type PoolLogger, type TranscribeCall } from '../../src/pool/pool.js';
import type { Transcription } from '../../src/pool/result.js';
import { FIXTURE_FILES, FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { TOY_DIMS, writeFullSizeModel } from '../../tools/full-size/model-dir.js';
import { mulberry32 } from '../../tools/random.js';
import { fixtureModel } from '../support/fixture-models.js';
import { sharedPath } from '../support/shared.js';
import { tempDir, transcode } from '../support/transcode.js';

const SR = 16000;
const clipBytes = () => readFileSync(sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'));

interface LogLine {
  level: 'info' | 'warn' | 'error';
  obj: object | string;
  msg: string | undefined;
}

function captureLogger(): { logger: PoolLogger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: LogLine['level']) => (obj: object | string, msg?: string) => void lines.push({ level, obj, msg });
  return { logger: { info: at('info'), warn: at('warn'), error: at('error') }, lines };
}

function options(o: Partial<AsrPoolOptions>): AsrPoolOptions {
  return {
    modelDir: fixtureModel('default'),
    device: 'cpu',
    backend: 'host',
    cudaDeviceId: 0,
    intraOpThreads: 1,
    maxBatch: 8,
    leanGraphs: true,
    cpuInt8Matmuls: true,
    cpuFloat32Cache: true,
    workers: 1,
    decodeWorkers: 1,
    maxQueue: 4,
    chunkSeconds: 30,
    tokensPerSecond: 8,
    tokenBudgetBase: 32,
    logger: captureLogger().logger,
    ...o,
  };
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function isAdmission(a: Admission | AdmissionRefusal): a is Admission {
  return 'release' in a;
}

function admitted(pool: AsrPool): Admission {
  const a = pool.admit();
  if (!isAdmission(a)) throw new Error(`refused: ${a.refused}`);
  return a;
}

/** Transcribes under an admission of its own, released when the work is over (as the HTTP route does). */
async function transcribe(pool: AsrPool, pcm: Float32Array, call?: TranscribeCall): Promise<Transcription> {
  const admission = admitted(pool);
  try {
    return await pool.transcribe(admission, pcm, call);
  } finally {
    admission.release();
  }
}

/** `seconds` of the real clip, repeated as needed. */
async function clipOf(pool: AsrPool, seconds: number): Promise<Float32Array> {
  const clip = await pool.decode(clipBytes());
  const out = new Float32Array(Math.round(seconds * SR));
  for (let at = 0; at < out.length; at += clip.length) out.set(clip.subarray(0, out.length - at), at);
  return out;
}

const sameThreads = (a: readonly Worker[], b: readonly Worker[]) => a.length === b.length && a.every((t, i) => t === b[i]);

describe('AsrPool on the default model, 2 workers', () => {
  const { logger, lines } = captureLogger();
  let pool: AsrPool;
  beforeAll(async () => {
    pool = await AsrPool.start(options({ workers: 2, decodeWorkers: 2, logger }));
    await pool.waitUntilReady(60_000);
  });
  afterAll(() => pool.drain(1000));

  it('is ready once every worker has loaded and warmed up', () => {
    expect(pool.ready).toBe(true);
    expect(pool.threads).toHaveLength(2);
    expect(pool.stats).toEqual({ workers: 2, readyWorkers: 2, busyWorkers: 0, runningSequences: 0, capacity: 16, admitted: 0, queued: 0, draining: false });
  });

  it('decodes an upload and transcribes it, streaming deltas and taking over the buffers', async () => {
    const bytes = clipBytes();
    const pcm = await pool.decode(bytes);
    expect(bytes.byteLength).toBe(0);
    expect(pcm).toBeInstanceOf(Float32Array);
    const seconds = pcm.length / SR;
    expect(seconds).toBeGreaterThan(4);
    expect(seconds).toBeLessThan(9);

    const deltas: string[] = [];
    const r = await transcribe(pool, pcm, { onDelta: (d) => deltas.push(d) });
    expect(FIXTURE_SENTENCES).toContain(r.text);
    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.join('')).toBe(r.text);
    expect(r).toMatchObject({ cancelled: false, truncated: false, languages: ['English'] });
    expect(r.cancelReason).toBeUndefined();
    expect(r.duration).toBeCloseTo(seconds, 6);
    // transferred to the worker, not copied
    expect(pcm.length).toBe(0);
    expect(pcm.buffer.byteLength).toBe(0);
  });

  it('copies a view of part of a larger buffer instead of detaching it', async () => {
    const pcm = await pool.decode(clipBytes());
    const backing = new Float32Array(pcm.length + 100);
    backing.set(pcm, 50);
    const r = await transcribe(pool, backing.subarray(50, 50 + pcm.length), { language: 'English' });
    expect(FIXTURE_SENTENCES).toContain(r.text);
    expect(backing.length).toBe(pcm.length + 100);
  });

  it('serves concurrent requests on both workers', async () => {
    const pcms = await Promise.all([1, 2, 3, 4].map(() => pool.decode(clipBytes())));
    const results = await Promise.all(pcms.map((pcm) => transcribe(pool, pcm)));
    for (const r of results) expect(FIXTURE_SENTENCES).toContain(r.text);
    expect(pool.stats).toMatchObject({ busyWorkers: 0, runningSequences: 0, readyWorkers: 2 });
  });

  it('rejects a bad upload with an AudioError carrying its code', async () => {
    const rand = mulberry32(7);
    const noise = Uint8Array.from({ length: 4096 }, () => Math.floor(rand() * 256));
    const header = new Uint8Array(64);
    header.set(new TextEncoder().encode('RIFF\x38\x00\x00\x00WAVEfmt '));
    for (const bytes of [noise, header]) {
      const err = await pool.decode(bytes).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AudioError);
      expect(['invalid', 'unsupported_format']).toContain((err as AudioError).code);
      expect((err as AudioError).message).not.toBe('');
    }
    // the decode threads keep serving
    expect((await pool.decode(clipBytes())).length).toBeGreaterThan(0);
  });

  it('drops readiness when an idle worker dies and regains it once the replacement is warm', async () => {
    const before = [...pool.threads];
    await before[0]!.terminate();
    expect(pool.ready).toBe(false);
    expect(pool.stats.readyWorkers).toBe(1);
    expect(lines.some((l) => l.level === 'warn' && /exited/.test(l.msg ?? ''))).toBe(true);
    await waitFor(() => pool.ready, 60_000);
    expect(pool.stats.readyWorkers).toBe(2);
    expect(pool.threads).toHaveLength(2);
    expect(pool.threads).toContain(before[1]);
    expect(pool.threads).not.toContain(before[0]);
    const r = await transcribe(pool, await pool.decode(clipBytes()));
    expect(FIXTURE_SENTENCES).toContain(r.text);
  });
});

describe('AsrPool decode threads left idle', () => {
  it('still decode a non-WAV upload after idling past the ffmpeg capability check\'s time limit', async () => {
    const dir = tempDir();
    const flac = transcode(sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'), 'flac', dir).bytes;
    dir.remove();
    const pool = await AsrPool.start(options({}));
    try {
      await pool.waitUntilReady(60_000);
      // the check each decode thread starts while idle has a 10 s limit; an idle thread must still hear ffmpeg exit
      await new Promise((r) => setTimeout(r, 11_000));
      const pcm = await pool.decode(flac);
      expect(pcm.length / SR).toBeGreaterThan(4);
    } finally {
      await pool.drain(1000);
    }
  }, 60_000);
});

describe('AsrPool admission and cancellation on a model that never stops (1 worker, batch 1, queue 1)', () => {
  let pool: AsrPool;
  beforeAll(async () => {
    // a budget of tens of thousands of tokens: every long task here ends by cancellation
    pool = await AsrPool.start(options({ modelDir: fixtureModel('never-stops'), maxBatch: 1, maxQueue: 1, tokensPerSecond: 5000 }));
    await pool.waitUntilReady(60_000);
  });
  afterAll(() => pool.drain(0));

  it('admits running + queued requests, refuses the next with a retry hint, and admits again after a release', () => {
    const a = admitted(pool);
    const b = admitted(pool);
    const refused = pool.admit();
    expect(isAdmission(refused)).toBe(false);
    const { refused: reason, retryAfterSeconds } = refused as AdmissionRefusal;
    expect(reason).toBe('queue_full');
    expect(Number.isInteger(retryAfterSeconds)).toBe(true);
    expect(retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(retryAfterSeconds).toBeLessThanOrEqual(60);
    expect(pool.stats).toMatchObject({ admitted: 2, queued: 2, busyWorkers: 0 });
    a.release();
    a.release();
    expect(pool.stats.admitted).toBe(1);
    const c = admitted(pool);
    expect(isAdmission(pool.admit())).toBe(false);
    b.release();
    c.release();
    expect(pool.stats.admitted).toBe(0);
  });

  it('cancels a running task between decode steps; the same worker then serves the next request', async () => {
    const threads = [...pool.threads];
    const pcm = await clipOf(pool, 5);
    const controller = new AbortController();
    const deltas: string[] = [];
    let abortedAt = 0;
    const r = await transcribe(pool, pcm, {
      signal: controller.signal,
      onDelta: (d) => {
        deltas.push(d);
        if (deltas.length === 5) {
          abortedAt = performance.now();
          controller.abort();
        }
      },
    });
    expect(performance.now() - abortedAt).toBeLessThan(2000);
    expect(r).toMatchObject({ cancelled: true, cancelReason: 'client', truncated: false });
    expect(r.text.length).toBeGreaterThan(0);
    expect(r.usage.generatedTokens).toBeLessThan(1000);
    expect(sameThreads(pool.threads, threads)).toBe(true);

    // 0.1 s: a budget of 532 tokens, decoded to the end
    const next = await transcribe(pool, await clipOf(pool, 0.1));
    expect(next).toMatchObject({ cancelled: false, truncated: true });
    expect(next.usage.generatedTokens).toBe(32 + 500);
    expect(sameThreads(pool.threads, threads)).toBe(true);
  });

  it('cancels a queued task without running it', async () => {
    const running = new AbortController();
    const queued = new AbortController();
    const a = admitted(pool);
    const b = admitted(pool);
    let firstDelta!: () => void;
    const started = new Promise<void>((resolve) => (firstDelta = resolve));
    const first = pool.transcribe(a, await clipOf(pool, 5), { signal: running.signal, onDelta: () => firstDelta() });
    const queuedDeltas: string[] = [];
    const second = pool.transcribe(b, await clipOf(pool, 5), { signal: queued.signal, onDelta: (d) => queuedDeltas.push(d) });
    await started;
    expect(pool.stats).toMatchObject({ admitted: 2, busyWorkers: 1, runningSequences: 1, queued: 1 });
    queued.abort();
    running.abort();
    const [r1, r2] = await Promise.all([first, second]);
    a.release();
    b.release();
    expect(r1).toMatchObject({ cancelled: true, cancelReason: 'client' });
    expect(r1.usage.generatedTokens).toBeGreaterThan(0);
    expect(r2).toMatchObject({ cancelled: true, cancelReason: 'client', text: '', segments: [], usage: { generatedTokens: 0 } });
    expect(r2.duration).toBeCloseTo(5, 6);
    expect(queuedDeltas).toEqual([]);
    expect(pool.stats).toMatchObject({ admitted: 0, busyWorkers: 0, queued: 0 });
  });

  it('returns at once for a signal aborted before the call', async () => {
    const r = await transcribe(pool, await clipOf(pool, 5), { signal: AbortSignal.abort() });
    expect(r).toMatchObject({ cancelled: true, cancelReason: 'client', usage: { generatedTokens: 0 } });
  });

  it('refuses a released admission, and one already running a transcription', async () => {
    const [first, second, third] = await Promise.all([1, 2, 3].map(() => clipOf(pool, 0.1)));
    const a = admitted(pool);
    const running = pool.transcribe(a, first!, { signal: AbortSignal.abort() });
    await expect(pool.transcribe(a, second!)).rejects.toThrow(/already running/);
    expect(await running).toMatchObject({ cancelled: true, cancelReason: 'client' });
    a.release();
    await expect(pool.transcribe(a, third!)).rejects.toThrow(/released admission/);
    expect(pool.stats.admitted).toBe(0);
  });

  it('drain with a tiny grace cancels a never-ending task cooperatively, then closes', async () => {
    let firstDelta!: () => void;
    const started = new Promise<void>((resolve) => (firstDelta = resolve));
    const task = transcribe(pool, await clipOf(pool, 5), { onDelta: () => firstDelta() });
    const late = admitted(pool);
    await started;
    const t0 = performance.now();
    await pool.drain(50);
    expect(performance.now() - t0).toBeLessThan(5000);
    const r = await task;
    expect(r).toMatchObject({ cancelled: true, cancelReason: 'shutdown' });
    expect(pool.threads).toHaveLength(0);
    expect(pool.ready).toBe(false);
    const err = await pool.transcribe(late, new Float32Array(SR)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PoolError);
    expect((err as PoolError).code).toBe('closed');
    late.release();
  });
});

describe('AsrPool admission counts sequences (1 worker, MAX_BATCH 3, queue 1)', () => {
  it('runs three transcriptions at once in one batch, queues a fourth and refuses a fifth', async () => {
    // 5 s at 40 tokens per second: a budget of 232 tokens, decoded to the end by a model that never stops
    const pool = await AsrPool.start(options({ modelDir: fixtureModel('never-stops'), maxBatch: 3, maxQueue: 1, tokensPerSecond: 40 }));
    try {
      await pool.waitUntilReady(60_000);
      expect(pool.stats).toMatchObject({ capacity: 3, runningSequences: 0 });
      const pcms = await Promise.all([1, 2, 3, 4].map(() => clipOf(pool, 5)));
      const admissions = pcms.map(() => admitted(pool));
      const refused = pool.admit();
      expect(refused).toMatchObject({ refused: 'queue_full' });
      expect((refused as AdmissionRefusal).retryAfterSeconds).toBeGreaterThanOrEqual(1);
      const tasks = pcms.map((pcm, i) => pool.transcribe(admissions[i]!, pcm).finally(() => admissions[i]!.release()));
      await waitFor(() => pool.stats.runningSequences === 3, 30_000);
      expect(pool.stats).toMatchObject({ busyWorkers: 1, runningSequences: 3, admitted: 4, queued: 1 });
      const results = await Promise.all(tasks);
      for (const r of results) expect(r).toMatchObject({ truncated: true, cancelled: false, usage: { generatedTokens: 232 } });
      // The first three decoded together: their steps carried more than one row on average.
      for (const r of results.slice(0, 3)) expect(r.timings.stepRows).toBeGreaterThan(r.timings.steps);
      expect(pool.stats).toMatchObject({ runningSequences: 0, admitted: 0, queued: 0 });
    } finally {
      await pool.drain(1000);
    }
  });
});

describe('AsrPool on graphs whose batch is fixed at 1 (2 workers, MAX_BATCH 3, queue 1)', () => {
  it("admits one sequence per worker beside the queue and logs the engine's notice once", async () => {
    const { logger, lines } = captureLogger();
    const pool = await AsrPool.start(options({ modelDir: fixtureModel('batch1'), workers: 2, maxBatch: 3, maxQueue: 1, logger }));
    try {
      await pool.waitUntilReady(60_000);
      expect(pool.stats).toMatchObject({ readyWorkers: 2, capacity: 2 });
      const notices = lines.filter((l) => l.level === 'info' && /one sequence at a time/.test(l.msg ?? ''));
      expect(notices).toHaveLength(1);
      const admissions = [admitted(pool), admitted(pool), admitted(pool)];
      expect(pool.admit()).toMatchObject({ refused: 'queue_full' });
      const pcms = await Promise.all(admissions.map(() => clipOf(pool, 5)));
      const results = await Promise.all(admissions.map((a, i) => pool.transcribe(a, pcms[i]!).finally(() => a.release())));
      for (const r of results) {
        expect(FIXTURE_SENTENCES).toContain(r.text);
        // one row per step: never batched
        expect(r.timings.stepRows).toBe(r.timings.steps);
      }
    } finally {
      await pool.drain(1000);
    }
  });
});

describe('AsrPool on graphs whose batch is fixed at 1 (2 workers, MAX_BATCH 8, queue 4)', () => {
  it('hands a waiting task to whichever worker frees first, never parking it behind a long one', async () => {
    const pool = await AsrPool.start(options({ modelDir: fixtureModel('batch1'), workers: 2, maxBatch: 8, maxQueue: 4 }));
    try {
      await pool.waitUntilReady(60_000);
      expect(pool.stats).toMatchObject({ readyWorkers: 2, capacity: 2 });
      // A keeps one worker for a long time, B the other for much less; C, D and E must then follow B on its
      // worker, in the order they came.
      const seconds = { A: 240, B: 20, C: 1, D: 1, E: 1 };
      const pcms = await Promise.all(Object.values(seconds).map((s) => clipOf(pool, s)));
      const doneAt: Record<string, number> = {};
      const tasks = Object.keys(seconds).map((name, i) => {
        const a = admitted(pool);
        return pool.transcribe(a, pcms[i]!).finally(() => {
          a.release();
          doneAt[name] = performance.now();
        });
      });
      // one sequence per worker: C, D and E wait in the pool, counted as queued
      await waitFor(() => pool.stats.runningSequences === 2, 30_000);
      expect(pool.stats).toMatchObject({ busyWorkers: 2, runningSequences: 2, admitted: 5, queued: 3 });
      const results = await Promise.all(tasks);
      for (const r of results) expect(r.cancelled).toBe(false);
      const order = Object.keys(doneAt).sort((x, y) => doneAt[x]! - doneAt[y]!);
      expect(order).toEqual(['B', 'C', 'D', 'E', 'A']);
    } finally {
      await pool.drain(1000);
    }
  });
});

describe('AsrPool passes CPU_FLOAT32_CACHE to its workers: the decoder they made, in the log', () => {
  // The full-size stand-in's topology at toy widths, fp16 cache: its step can return only the new column, which
  // CPU_FLOAT32_CACHE then holds as float32 (the small fixtures keep the whole cache, so the setting is moot there).
  it('holds the fp16 cache as float32 with cpuFloat32Cache true, as float16 with it false', async () => {
    const model = mkdtempSync(join(tmpdir(), 'pool-toy-full-size-'));
    try {
      writeFullSizeModel(model, { batch: 'dynamic', kv: 'float16', seed: 29, dims: TOY_DIMS });
      const decoderLines = async (cpuFloat32Cache: boolean) => {
        const { logger, lines } = captureLogger();
        const pool = await AsrPool.start(options({ modelDir: model, cpuFloat32Cache, logger }));
        try {
          await pool.waitUntilReady(60_000);
          return lines.filter((l) => l.level === 'info' && /^decoder: /.test(l.msg ?? '')).map((l) => l.msg!);
        } finally {
          await pool.drain(1000);
        }
      };
      const [wide, half] = [await decoderLines(true), await decoderLines(false)];
      expect(wide).toHaveLength(1);
      expect(wide[0]).toContain("a float32 cache (the prefill's float16 rows widened as they join)");
      expect(wide[0]).toContain('only its new cache column');
      expect(half).toHaveLength(1);
      expect(half[0]).toContain('a float16 cache,');
      expect(half[0]).toContain('only its new cache column');
    } finally {
      rmSync(model, { recursive: true, force: true });
    }
  });
});

describe('AsrPool drain with a generous grace', () => {
  it('refuses new requests and lets admitted ones finish', async () => {
    const pool = await AsrPool.start(options({}));
    await pool.waitUntilReady(60_000);
    const pcm = await clipOf(pool, 25);
    const admission = admitted(pool);
    const task = pool.transcribe(admission, pcm).finally(() => admission.release());
    const drained = pool.drain(5000);
    expect(pool.admit()).toMatchObject({ refused: 'draining' });
    expect(pool.ready).toBe(false);
    expect(pool.stats.draining).toBe(true);
    const r = await task;
    expect(r.cancelled).toBe(false);
    expect(r.text.length).toBeGreaterThan(0);
    await drained;
    expect(pool.threads).toHaveLength(0);
    await expect(pool.decode(clipBytes())).rejects.toMatchObject({ name: 'PoolError', code: 'closed' });
  });
});

describe('AsrPool on a model whose encoder fails on long audio', () => {
  it('rejects with PoolError inference_failed and keeps the worker serving', async () => {
    const pool = await AsrPool.start(options({ modelDir: fixtureModel('fails-long') }));
    try {
      await pool.waitUntilReady(60_000);
      const threads = [...pool.threads];
      const err = await transcribe(pool, await clipOf(pool, 12)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PoolError);
      expect((err as PoolError).code).toBe('inference_failed');
      expect((err as PoolError).message).toMatch(/nAudioTokens/);
      const r = await transcribe(pool, await clipOf(pool, 5));
      expect(FIXTURE_SENTENCES).toContain(r.text);
      expect(sameThreads(pool.threads, threads)).toBe(true);
      expect(pool.ready).toBe(true);
    } finally {
      await pool.drain(1000);
    }
  });
});

describe('AsrPool on a model that cannot load', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'mega-asr-broken-'));
    cpSync(fixtureModel('default'), dir, { recursive: true });
    writeFileSync(join(dir, FIXTURE_FILES.step), 'not an onnx model');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('rejects waitUntilReady with the load error and does not respawn endlessly', async () => {
    const { logger, lines } = captureLogger();
    const pool = await AsrPool.start(options({ modelDir: dir, workers: 2, logger }));
    const err = await pool.waitUntilReady(60_000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect((err as Error).message).toContain(FIXTURE_FILES.step);
    expect(pool.admit()).toMatchObject({ refused: 'not_ready' });
    // piscina respawns each initial worker at most once, then gives up
    await waitFor(() => pool.threads.length === 0, 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    expect(pool.threads).toHaveLength(0);
    const failures = lines.filter((l) => /could not load/.test(l.msg ?? '')).length;
    expect(failures).toBeGreaterThanOrEqual(2);
    expect(failures).toBeLessThanOrEqual(4);
    await pool.drain(0);
  });
});
