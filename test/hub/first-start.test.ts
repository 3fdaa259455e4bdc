import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { checkpointRepo, fixtureRepo, startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { fixtureModel } from '../support/fixture-models.js';
import { repoRoot, sharedPath } from '../support/shared.js';

const entry = join(repoRoot, 'dist', 'server.js');

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** `npm start` as a child process: no MODEL_DIR, the hub and cache given by HF_ENDPOINT and HF_HUB_CACHE. */
async function startService(env: Record<string, string>): Promise<{ child: ChildProcess; base: string; output: () => string }> {
  const port = await freePort();
  const { MODEL_DIR: _unset, ...inherited } = process.env;
  const child = spawn(process.execPath, [entry], {
    env: { ...inherited, HOST: '127.0.0.1', PORT: String(port), ASR_DEVICE: 'cpu', WORKERS: '1', DECODE_WORKERS: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, base: `http://127.0.0.1:${port}`, output: () => out };
}

const status = (url: string) => fetch(url).then((r) => r.status, () => 0);

async function until(check: () => Promise<boolean>, what: string, child: ChildProcess, output: () => string, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (child.exitCode !== null) throw new Error(`server exited while waiting for ${what}:\n${output()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function transcribeClip(base: string): Promise<string> {
  const form = new FormData();
  form.append('model', 'mega-asr');
  form.append('file', new Blob([readFileSync(sharedPath('fixtures', 'voices-in-the-wild', 'far_field.wav'))]), 'far_field.wav');
  const res = await fetch(`${base}/v1/audio/transcriptions`, { method: 'POST', body: form });
  expect(res.status).toBe(200);
  return ((await res.json()) as { text: string }).text;
}

const stop = async (child: ChildProcess) => {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
};

describe('first start without MODEL_DIR (dist/server.js against a fake hub)', () => {
  let hub: FakeHub;
  let cache: string;
  beforeAll(async () => {
    const dir = fixtureModel('default');
    // the repo ships no embedding table: the service fetches the tensor from the base checkpoint too
    hub = await startFakeHub([fixtureRepo(dir, { id: 'acme/no-table-asr' }), checkpointRepo(dir).repo]);
    cache = mkdtempSync(join(tmpdir(), 'hf-first-start-'));
  });
  afterAll(async () => {
    await hub?.close();
    rmSync(cache, { recursive: true, force: true });
  });

  it('answers /health and 503 on /ready while downloading, then transcribes as the same model from MODEL_DIR does', async () => {
    hub.faults.bytesPerSecond = 4 * 1024 * 1024; // ~10 MB to fetch: a few seconds of "downloading"
    const service = await startService({ HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, MODEL: 'acme/no-table-asr' });
    const local = await startService({ MODEL_DIR: fixtureModel('default') });
    try {
      const { child, base, output } = service;
      await until(async () => (await status(`${base}/health`)) === 200, '/health', child, output);
      await until(async () => hub.requests.some((r) => r.server === 'cdn'), 'the download to start', child, output);
      expect(await status(`${base}/health`)).toBe(200);
      const ready = await fetch(`${base}/ready`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ status: 'downloading', readyWorkers: 0 });
      // work is refused in OpenAI's shape meanwhile, not accepted and left hanging
      const form = new FormData();
      form.append('model', 'mega-asr');
      form.append('file', new Blob([new Uint8Array(64)]), 'x.wav');
      const refused = await fetch(`${base}/v1/audio/transcriptions`, { method: 'POST', body: form });
      expect(refused.status).toBe(503);

      await until(async () => (await status(`${base}/ready`)) === 200, '/ready after the download', child, output);
      await until(async () => (await status(`${local.base}/ready`)) === 200, '/ready (MODEL_DIR)', local.child, local.output);
      const text = await transcribeClip(base);
      expect(FIXTURE_SENTENCES).toContain(text);
      expect(text).toBe(await transcribeClip(local.base));

      const logs = output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(logs.find((l) => l.msg === 'downloading the model')).toMatchObject({ model: 'acme/no-table-asr', revision: 'main', cache });
      const files = logs.filter((l) => l.msg === 'downloaded').map((l) => l.file);
      expect(files).toContain('onnx/decoder_step_int4.onnx');
      expect(files).toContain('embed_tokens.safetensors');
      // a fresh cache resumes nothing (the table's own header, written first, is not a download to resume)
      expect(logs.filter((l) => l.msg === 'resuming download')).toEqual([]);
    } finally {
      hub.faults.bytesPerSecond = undefined;
      await Promise.all([stop(service.child), stop(local.child)]);
    }
  });

  it('offline with an empty cache stops at startup with one line saying what to do', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'hf-empty-'));
    try {
      const { child, output } = await startService({ HF_HUB_OFFLINE: '1', HF_HUB_CACHE: empty, MODEL: 'acme/no-table-asr' });
      const code = await new Promise((r) => child.once('exit', r));
      expect(code).toBe(1);
      expect(output()).toContain(`HF_HUB_OFFLINE is set and acme/no-table-asr@main is not complete in the Hugging Face cache ${empty} (nothing is cached for it): run \`mega-asr download\``);
      expect(output()).not.toMatch(/\n\s+at /);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
