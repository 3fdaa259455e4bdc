import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { SileroVad, type VadStream } from '../../src/audio/silero-vad.js';
import { PoolError } from '../../src/pool/errors.js';
import { VadThread } from '../../src/pool/vad-thread.js';
import { sharedPath } from '../support/shared.js';
import { osThreadCount } from '../support/os-threads.js';
import { piscinaOf } from '../support/vad-thread.js';

const clip = (name: string) => decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));
const errors: unknown[] = [];
const logger = { info: () => {}, warn: () => {}, error: (o: unknown) => void errors.push(o) };

/** Pushes `pcm` in 100 ms pieces (as a live client's appends arrive), collecting the probabilities. */
async function scores(stream: VadStream, pcm: Float32Array): Promise<number[]> {
  const out: number[] = [];
  for (let at = 0; at < pcm.length; at += 1600) out.push(...(await stream.push(pcm.subarray(at, at + 1600))));
  return out;
}

describe('VadThread: Silero VAD for live streams off the HTTP thread', () => {
  let thread: VadThread;
  let here: SileroVad;
  let farField: Float32Array;
  let noise: Float32Array;
  let expected: { farField: number[]; noise: number[] };

  beforeAll(async () => {
    [thread, here] = await Promise.all([VadThread.start(logger), SileroVad.load()]);
    [farField, noise] = [clip('far_field'), clip('noise')];
    // the same model run on this thread: what the VAD thread must reproduce exactly
    expected = { farField: await scores(here.stream(), farField), noise: await scores(here.stream(), noise) };
  });
  afterAll(async () => {
    await Promise.all([thread?.close(), here?.release()]);
  });

  it('scores a stream exactly as Silero on this thread does, frame for frame', async () => {
    const stream = thread.stream();
    const got = await scores(stream, farField);
    expect(got).toHaveLength(Math.floor(farField.length / 512));
    expect(got).toEqual(expected.farField);
    expect(Math.max(...got)).toBeGreaterThan(0.5); // there is speech in it
    stream.close();
  });

  it('keeps each stream its own state when their pushes interleave, and starts afresh after reset', async () => {
    const [a, b] = [thread.stream(), thread.stream()];
    const got: { a: number[]; b: number[] } = { a: [], b: [] };
    const n = Math.min(farField.length, noise.length);
    for (let at = 0; at < n; at += 1600) {
      const [pa, pb] = await Promise.all([a.push(farField.subarray(at, at + 1600)), b.push(noise.subarray(at, at + 1600))]);
      got.a.push(...pa);
      got.b.push(...pb);
    }
    expect(got.a).toEqual(expected.farField.slice(0, got.a.length));
    expect(got.b).toEqual(expected.noise.slice(0, got.b.length));
    // b after a reset is a new stream: noise from its start again, with no memory of the first pass
    b.reset();
    expect(await scores(b, noise)).toEqual(expected.noise);
    a.close();
    b.close();
  });

  it('runs tasks in the order they were sent, however many wait', async () => {
    const streams = Array.from({ length: 8 }, () => thread.stream());
    const order: number[] = [];
    // sent at once: the first runs, seven wait (piscina's default queue ran them 0 1 3 5 7 4 2 6)
    await Promise.all(streams.map((s, i) => s.push(farField.subarray(0, 512)).then(() => order.push(i))));
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    for (const s of streams) s.close();
  });

  it('frees a stream on the thread when it is closed, and refuses pushes after', async () => {
    const held = async () => (await thread.stats()).streams;
    // the earlier tests' streams are closed: the thread lets go of every one
    await vi.waitFor(async () => expect(await held()).toBe(0));
    const streams = [thread.stream(), thread.stream(), thread.stream()];
    await Promise.all(streams.map((s) => s.push(farField.subarray(0, 2048))));
    expect(await held()).toBe(3);
    // closed while its push is still running: the push completes, then the state goes
    const pending = streams[0]!.push(farField.subarray(2048, 4096));
    for (const s of streams) s.close();
    expect(await pending).toHaveLength(4);
    await vi.waitFor(async () => expect(await held()).toBe(0));
    await expect(streams[1]!.push(farField.subarray(0, 512))).rejects.toThrow('VadStream.push after close');
    expect(errors).toEqual([]);
  });
});

describe('VadThread failures', () => {
  it('tells a task that failed on the thread (inference_failed) from a thread that died with it (worker_lost)', async () => {
    const thread = await VadThread.start(logger);
    const pcm = clip('far_field').subarray(0, 1600);
    try {
      const stream = thread.stream();
      expect(await stream.push(pcm)).toHaveLength(3);
      // the idle worker ends; piscina starts another, which does not hold the stream's state
      await piscinaOf(thread).threads[0]!.terminate();
      const lost = stream.push(pcm);
      await expect(lost).rejects.toBeInstanceOf(PoolError);
      await expect(lost).rejects.toMatchObject({ code: 'inference_failed', message: 'voice activity detection: the stream was lost when the voice activity thread restarted' });
      expect(await stream.push(pcm)).toHaveLength(3); // the stream starts afresh, on the new thread

      // A thread ending with a task on it (a stats task: no model run to interrupt). The task may still win the
      // race and be answered first (about 1 in 10 here): then, once the thread is replaced, it is tried again.
      let died: unknown;
      for (let attempt = 0; attempt < 20 && !died; attempt++) {
        await thread.stats(); // the worker is up and idle
        const task = thread.stats().then(() => undefined, (err: unknown) => err);
        const ended = piscinaOf(thread).threads[0]!.terminate();
        died = await task;
        await ended;
      }
      expect(died).toBeInstanceOf(PoolError);
      expect(died).toMatchObject({ code: 'worker_lost', message: expect.stringMatching(/^voice activity detection: the thread was lost \(worker exited/) });
      expect(await thread.stats()).toEqual({ streams: 0 }); // a new thread serves, with no state from the old
      stream.close();
    } finally {
      await thread.close();
    }
  });

  it('refuses tasks once closed, without starting a thread for them', async () => {
    const thread = await VadThread.start(logger);
    const stream = thread.stream();
    await stream.push(clip('noise').subarray(0, 512));
    await thread.close();
    await expect(stream.push(new Float32Array(512))).rejects.toMatchObject({ code: 'closed' });
    await expect(thread.stats()).rejects.toMatchObject({ code: 'closed' });
    stream.close();
    await new Promise((r) => setTimeout(r, 200));
    expect(piscinaOf(thread).threads).toHaveLength(0);
  });

  it('start() rejects with why when the model cannot be loaded, and leaves no thread', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vad-model-'));
    try {
      const notAModel = join(dir, 'not-a-model.onnx');
      writeFileSync(notAModel, 'these bytes are no ONNX graph');
      const before = osThreadCount();
      await expect(VadThread.start(logger, { modelPath: notAModel })).rejects.toThrow(
        new RegExp(`^voice activity detection: could not load Silero VAD: ${notAModel}: onnxruntime could not load it: .*Protobuf parsing failed`),
      );
      await vi.waitFor(() => expect(osThreadCount()).toBe(before), { timeout: 10_000 });
      expect(errors).toEqual([]); // the failure is start()'s answer, not a worker crash
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
