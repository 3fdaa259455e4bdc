import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixtureModel } from './support/fixture-models.js';
import { repoRoot, sharedPath } from './support/shared.js';

const entry = join(repoRoot, 'dist', 'server.js');

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** `npm start` as a child process, with JSON logs collected. */
async function start(env: Record<string, string>): Promise<{ child: ChildProcess; base: string; logs: () => Record<string, unknown>[] }> {
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run "npm run build" (npm test does)`);
  const port = await freePort();
  const child = spawn(process.execPath, [entry], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(port), ASR_DEVICE: 'cpu', WORKERS: '1', DECODE_WORKERS: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const status = await fetch(`${base}/ready`).then((r) => r.status, () => 0);
    if (status === 200) break;
    if (child.exitCode !== null) throw new Error(`server exited early:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const logs = () =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { child, base, logs };
}

const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

const upload = (base: string) => {
  const form = new FormData();
  form.append('model', 'mega-asr');
  form.append('file', new Blob([readFileSync(sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'))]));
  return fetch(`${base}/v1/audio/transcriptions`, { method: 'POST', body: form });
};

/** Starts a transcription and resolves once it runs on the worker (with the response still to come). */
async function transcriptionRunning(base: string): Promise<{ response: Promise<Response> }> {
  const response = upload(base);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && !(await (await fetch(`${base}/metrics`)).text()).includes('asr_busy_workers 1')) {
    await new Promise((r) => setTimeout(r, 10));
  }
  return { response };
}

describe('npm start (dist/server.js)', () => {
  it('on SIGTERM refuses new work, reports not ready, finishes the request in flight and exits 0', async () => {
    const { child, base, logs } = await start({ MODEL_DIR: fixtureModel('never-stops'), ASR_TOKENS_PER_SECOND: '150', SHUTDOWN_GRACE_SECONDS: '30' });
    const inFlight = (await transcriptionRunning(base)).response;
    const exit = exited(child);
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 50));
    // still listening while it drains: probes see 503, new work is refused in OpenAI's shape
    expect((await fetch(`${base}/ready`)).status).toBe(503);
    const refused = await upload(base);
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('service_unavailable');

    const res = await inFlight;
    expect(res.status).toBe(200);
    const body = (await res.json()) as { text: string };
    expect(body.text.length).toBeGreaterThan(20);
    expect(await exit).toBe(0);

    const lines = logs();
    expect(lines.some((l) => l.msg === 'draining')).toBe(true);
    expect(lines.some((l) => l.msg === 'stopped')).toBe(true);
    // every request log line carries its request id; no per-token lines
    const requestLines = lines.filter((l) => 'req' in l || 'res' in l);
    expect(requestLines.length).toBeGreaterThan(0);
    for (const l of requestLines) expect(l.reqId).toBeTruthy();
    expect(lines.length).toBeLessThan(60);
  });

  it('with a short grace period cancels the transcription between decode steps and still exits 0', async () => {
    const { child, base } = await start({ MODEL_DIR: fixtureModel('never-stops'), ASR_TOKENS_PER_SECOND: '500', SHUTDOWN_GRACE_SECONDS: '0.2' });
    const inFlight = (await transcriptionRunning(base)).response;
    const exit = exited(child);
    child.kill('SIGTERM');
    const res = await inFlight;
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('service_unavailable');
    expect(await exit).toBe(0);
  });

  it('does not let a stalled upload hold shutdown past the grace period', async () => {
    const { child, base } = await start({ MODEL_DIR: fixtureModel('default'), SHUTDOWN_GRACE_SECONDS: '0.5' });
    const { port } = new URL(base);
    const socket = connect(Number(port), '127.0.0.1');
    socket.on('error', () => {});
    socket.write('POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n');
    await new Promise((r) => setTimeout(r, 300)); // the upload has a slot and stalls (it holds no queue place)
    const exit = exited(child);
    const t0 = Date.now();
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000);
    socket.destroy();
  });

  it('says once, not once per worker, that graphs with a fixed batch decode one sequence at a time', async () => {
    const { child, logs } = await start({ MODEL_DIR: fixtureModel('batch1'), WORKERS: '2', MAX_BATCH: '4' });
    const exit = exited(child);
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    const lines = logs();
    const notices = lines.filter((l) => /one sequence at a time/.test(String(l.msg)));
    expect(notices).toHaveLength(1);
    expect(notices[0]!.level).toBe(30); // pino's info
    expect(lines.filter((l) => l.msg === 'ASR worker ready').map((l) => l.maxBatch)).toEqual([1, 1]);
    // the service's capacity: one sequence per worker
    expect(lines.find((l) => l.msg === 'workers loaded and warm: ready')).toMatchObject({ workers: 2, sequences: 2 });
  });

  it('fails at startup with a clear message when the model cannot be loaded', async () => {
    const child = spawn(process.execPath, [entry], {
      env: { ...process.env, MODEL_DIR: '/nonexistent/model', PORT: String(await freePort()), HOST: '127.0.0.1', ASR_DEVICE: 'cpu' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    expect(await exited(child)).toBe(1);
    expect(out).toMatch(/\/nonexistent\/model does not exist/);
    expect(out).not.toMatch(/\n\s+at /);
  });
});
