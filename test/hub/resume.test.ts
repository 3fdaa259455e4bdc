import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureModel, type ModelSource } from '../../src/hub/ensure-model.js';
import { downloadFile } from '../../src/hub/fetch-file.js';
import { partialLockPath } from '../../src/hub/lock.js';
import { logProgress, type Progress } from '../../src/hub/progress.js';
import { fixtureRepo, hubSource, startFakeHub, type FakeHub, type FakeRepo } from '../support/fake-hub.js';
import { fixtureModel } from '../support/fixture-models.js';
import { repoRoot } from '../support/shared.js';

const MB = 1024 * 1024;
const bin = join(repoRoot, 'dist', 'cli.js');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const quiet = { info: () => {}, warn: () => {} };
const noBar: Progress = { file: () => ({ start() {}, advance() {}, done() {}, fail() {} }) };

/** The file the interruptions hit: big enough to take seconds at the throttled rate. */
const BIG = 'onnx/decoder_step_int4.onnx.data';
const RATE = 3 * MB;

let hub: FakeHub;
let repo: FakeRepo;
let big: Buffer;
let oid: string;
let dirs: string[] = [];
/** children still running when a test ends (it failed half-way) are killed */
const children = new Set<ChildProcess>();

beforeAll(async () => {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run "npm run build" (npm test does)`);
  repo = fixtureRepo(fixtureModel('default'), { id: 'acme/resume-asr', withTable: true });
  big = randomBytes(12 * MB);
  repo.files[BIG] = big;
  // the downloader checks bytes and hashes, not content: small stand-ins keep the throttled runs short
  repo.files['tokenizer.json'] = Buffer.from('{"model":{"vocab":{}}}');
  repo.files['embed_tokens.safetensors'] = randomBytes(4096);
  oid = sha256(big);
  hub = await startFakeHub([repo]);
});
afterAll(() => hub?.close());
afterEach(() => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
  hub.faults.bytesPerSecond = undefined;
  hub.faults.cutOnce.clear();
  hub.faults.stallOnce.clear();
  hub.faults.forbidRangeOnce.clear();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

function newCache(): string {
  const cache = mkdtempSync(join(tmpdir(), 'hf-resume-'));
  dirs.push(cache);
  return cache;
}

const repoDir = (cache: string) => join(cache, 'models--acme--resume-asr');
const blob = (cache: string) => join(repoDir(cache), 'blobs', oid);
const partialsIn = (cache: string) => readdirSync(join(repoDir(cache), 'blobs')).filter((f) => f.endsWith('.incomplete'));
const transfersOfBig = (from: number) => hub.requests.slice(from).filter((r) => r.server === 'cdn' && r.path.startsWith(`/repos/${oid}?`));
const sizeOf = (path: string) => (existsSync(path) ? statSync(path).size : 0);

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** `node dist/cli.js download` as a real child process on `cache`, off a terminal (log lines on stderr). */
function download(cache: string) {
  const { MODEL_DIR: _unset, HF_TOKEN: _token, ...inherited } = process.env;
  const t0 = Date.now();
  const child = spawn(process.execPath, [bin, 'download'], {
    env: { ...inherited, MODEL: repo.id, HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HOME: cache },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 })));
  return { child, exit };
}

async function until(what: string, ok: () => boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Starts a download, lets the big file get a few MB in, then sends `signal`; returns the bytes left on disk. */
async function interrupted(cache: string, signal: NodeJS.Signals): Promise<{ kept: number; exit: Exit }> {
  hub.faults.bytesPerSecond = RATE;
  const run = download(cache);
  await until('the big file to be under way', () => sizeOf(`${blob(cache)}.incomplete`) >= 3 * MB);
  run.child.kill(signal);
  const exit = await run.exit;
  expect(exit.signal).toBe(signal);
  const kept = sizeOf(`${blob(cache)}.incomplete`);
  expect(kept).toBeGreaterThanOrEqual(3 * MB);
  expect(kept).toBeLessThan(big.length);
  return { kept, exit };
}

/** Reruns the download at once and checks it resumed the big file at `kept` and left the exact file, nothing partial. */
async function resumes(cache: string, kept: number): Promise<Exit> {
  const n = hub.requests.length;
  const rerun = await download(cache).exit;
  expect(rerun.stderr).not.toMatch(/error/i);
  expect(rerun.code).toBe(0);
  const transfers = transfersOfBig(n);
  expect(transfers.map((t) => t.range)).toEqual([`bytes=${kept}-${big.length - 1}`]);
  expect(rerun.stderr).toMatch(new RegExp(`resuming download file=${BIG.replace(/\./g, '\\.')} megabytes=12 resumeAtMegabytes=[1-9]`));
  expect(readFileSync(join(rerun.stdout.trim(), BIG)).equals(big)).toBe(true);
  expect(partialsIn(cache)).toEqual([]);
  expect(readdirSync(join(cache, '.locks', 'models--acme--resume-asr'))).toEqual([]);
  return rerun;
}

describe('an interrupted download resumes on the next run (real processes, throttled hub)', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal}: the lock is released, and a rerun at once continues the partial file with a Range request`, async () => {
      const cache = newCache();
      const { kept } = await interrupted(cache, signal);
      // huggingface_hub's own partial name, and no lock left behind
      expect(partialsIn(cache)).toEqual([`${oid}.incomplete`]);
      expect(existsSync(partialLockPath(blob(cache)))).toBe(false);
      const rerun = await resumes(cache, kept);
      expect(rerun.stderr).not.toContain('waiting for another process');
    });
  }

  it('SIGKILL: the rerun waits until the dead process\'s lock is stale (10 s), then resumes', async () => {
    const cache = newCache();
    const { kept } = await interrupted(cache, 'SIGKILL');
    expect(existsSync(partialLockPath(blob(cache)))).toBe(true);
    const rerun = await resumes(cache, kept);
    expect(rerun.stderr).toContain(`mega-asr: waiting for another process downloading this file file=${BIG}`);
    expect(rerun.ms).toBeGreaterThan(4_000);
    expect(rerun.ms).toBeLessThan(25_000);
  });

  it('a writer frozen past the stale time loses the file to a new owner without spoiling it (writes at fixed offsets)', async () => {
    const cache = newCache();
    hub.faults.bytesPerSecond = RATE;
    const frozen = download(cache);
    await until('the big file to be under way', () => sizeOf(`${blob(cache)}.incomplete`) >= 3 * MB);
    frozen.child.kill('SIGSTOP');
    const kept = sizeOf(`${blob(cache)}.incomplete`);
    // the new owner waits for the frozen one's lock to go stale, then resumes where it stopped
    const n = hub.requests.length;
    const owner = download(cache);
    await until('the new owner to resume', () => transfersOfBig(n).length > 0, 40_000);
    // the frozen writer wakes up mid-way, still holding data in flight: it may write a chunk, then sees the lock is gone
    frozen.child.kill('SIGCONT');
    const [late, done] = await Promise.all([frozen.exit, owner.exit]);
    expect(late.code).toBe(1);
    expect(late.stderr).toMatch(/lost the lock on .*another process may be writing it now; run again/);
    expect(done.code).toBe(0);
    expect(transfersOfBig(n).map((t) => t.range)).toEqual([`bytes=${kept}-${big.length - 1}`]);
    expect(readFileSync(join(done.stdout.trim(), BIG)).equals(big)).toBe(true);
    expect(partialsIn(cache)).toEqual([]);
  }, 90_000);

  it('two processes on one cache at once: each file crosses the wire once, and both print the snapshot', async () => {
    const cache = newCache();
    hub.faults.bytesPerSecond = RATE;
    const n = hub.requests.length;
    const [a, b] = await Promise.all([download(cache).exit, download(cache).exit]);
    expect([a.code, b.code]).toEqual([0, 0]);
    expect(a.stdout).toBe(b.stdout);
    // the one that found a file locked waited for it, then found it complete
    expect(a.stderr + b.stderr).toContain('waiting for another process downloading this file');
    const transfers = hub.requests.slice(n).filter((r) => r.server === 'cdn' || r.path.startsWith('/api/resolve-cache/'));
    const perObject = new Map<string, number>();
    for (const t of transfers) perObject.set(t.path, (perObject.get(t.path) ?? 0) + 1);
    expect(perObject.size).toBeGreaterThanOrEqual(8);
    expect([...perObject.values()].every((count) => count === 1)).toBe(true);
    expect(transfers.every((t) => t.range === undefined)).toBe(true);
    expect(readFileSync(join(a.stdout.trim(), BIG)).equals(big)).toBe(true);
    expect(partialsIn(cache)).toEqual([]);
  });
});

describe('refusals, stalls and leftovers (in process)', () => {
  // HF_HOME too, so no token a login saved on this machine is sent
  const source = (cache: string): ModelSource => ({ ...hubSource(hub, repo.id, cache), HF_HOME: cache });
  const fetchModel = (cache: string) => ensureModel(source(cache), { logger: quiet, progress: noBar });

  it('a CDN 403 to a resumed Range request fails the run with the status but keeps the bytes; the next run resumes them', async () => {
    const cache = newCache();
    hub.faults.cutOnce.add(`${repo.id}/${BIG}`);
    hub.faults.forbidRangeOnce.add(`${repo.id}/${BIG}`);
    const n = hub.requests.length;
    const err = (await fetchModel(cache).catch((e: Error) => e)) as Error;
    expect(err.message).toMatch(new RegExp(`^${repo.id}@[0-9a-f]{40} \\(${BIG.replace(/\./g, '\\.')}\\): .*403.*resuming at byte \\d+; the \\d+ bytes downloaded so far are kept for the next run\\)$`));
    const [whole, refused] = transfersOfBig(n);
    expect(whole!.range).toBeUndefined();
    const kept = sizeOf(`${blob(cache)}.incomplete`);
    expect(kept).toBeGreaterThan(0);
    expect(refused!.range).toBe(`bytes=${kept}-${big.length - 1}`);
    expect(existsSync(partialLockPath(blob(cache)))).toBe(false);

    const m = hub.requests.length;
    const snapshot = await fetchModel(cache);
    expect(transfersOfBig(m).map((t) => t.range)).toEqual([`bytes=${kept}-${big.length - 1}`]);
    expect(readFileSync(join(snapshot, BIG)).equals(big)).toBe(true);
    expect(partialsIn(cache)).toEqual([]);
  });

  it('a transfer that goes silent is aborted after the stall timeout and resumed; progress lines while it runs', async () => {
    const cache = newCache();
    hub.faults.stallOnce.add(`${repo.id}/${BIG}`);
    hub.faults.bytesPerSecond = 24 * MB;
    const lines: { level: string; message: string; fields: Record<string, unknown> }[] = [];
    const logger = {
      info: (fields: Record<string, unknown>, message: string) => lines.push({ level: 'info', message, fields }),
      warn: (fields: Record<string, unknown>, message: string) => lines.push({ level: 'warn', message, fields }),
    };
    const n = hub.requests.length;
    const t0 = Date.now();
    await downloadFile({
      url: `${hub.url}/${repo.id}/resolve/${repo.commit}/${BIG}`,
      label: BIG,
      size: big.length,
      sha256: oid,
      dest: blob(cache),
      fetch: (url, init) => fetch(url, init),
      explainStatus: (status) => new Error(`status ${status}`),
      progress: logProgress(logger, { everyMs: 100 }).file(BIG),
      stallTimeoutMs: 700,
    });
    expect(Date.now() - t0).toBeGreaterThan(700);
    expect(readFileSync(blob(cache)).equals(big)).toBe(true);
    const transfers = transfersOfBig(n);
    expect(transfers.map((t) => t.range === undefined)).toEqual([true, false]);
    expect(Number(/^bytes=(\d+)-/.exec(transfers[1]!.range!)![1])).toBeGreaterThan(0);
    expect(lines.filter((l) => l.level === 'warn')).toEqual([
      { level: 'warn', message: 'download interrupted, resuming', fields: { file: BIG, error: expect.stringMatching(/no data for 0\.7 s/), retryInSeconds: 0.5 } },
    ]);
    const progress = lines.filter((l) => l.message === 'download progress');
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress[0]!.fields).toEqual({ file: BIG, megabytes: expect.any(Number), totalMegabytes: 12, percent: expect.any(Number), megabytesPerSecond: expect.any(Number), etaSeconds: expect.any(Number) });
    expect(lines.at(-1)).toMatchObject({ message: 'downloaded', fields: { file: BIG, megabytes: 12 } });
  });

  it('a lost lock (its directory removed under the download) ends the download with one clear error, not a crash', async () => {
    const cache = newCache();
    hub.faults.bytesPerSecond = 1 * MB;
    const running = fetchModel(cache).catch((e: Error) => e);
    await until('the big file to be under way', () => sizeOf(`${blob(cache)}.incomplete`) > 0);
    rmSync(partialLockPath(blob(cache)), { recursive: true });
    const err = (await running) as Error;
    expect(err.message).toMatch(new RegExp(`^${BIG.replace(/\./g, '\\.')}: lost the lock on .*${oid}\\.incomplete \\(.*\\); another process may be writing it now; run again$`));
    // the bytes stay: whoever owns the lock now resumes them
    expect(sizeOf(`${blob(cache)}.incomplete`)).toBeGreaterThan(0);
  });

  it('waiting for another process\'s lock ends at once when the caller aborts', async () => {
    const cache = newCache();
    mkdirSync(partialLockPath(blob(cache)), { recursive: true });
    const stop = new AbortController();
    const t0 = Date.now();
    const waiting = ensureModel(source(cache), { logger: quiet, progress: noBar, signal: stop.signal }).catch((e: Error) => e);
    await sleep(500);
    stop.abort();
    const err = (await waiting) as Error;
    expect(err.name).toBe('AbortError');
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(sizeOf(`${blob(cache)}.incomplete`)).toBe(0);
  });
});
