import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, readFileSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The real service as a child process (`node dist/server.js` of a built checkout) on a free loopback port, with
 * its peak memory sampled from /proc and its /metrics and /ready read over HTTP.
 */
export interface ServiceOptions {
  /** a built checkout: DIR/dist/server.js */
  serverDir: string;
  modelDir: string;
  /** overrides on top of the bench's defaults (e.g. MAX_BATCH=1, WORKERS=2) */
  env: Record<string, string>;
  /** the service's stdout and stderr go here */
  logFile: string;
  /** how long the model may take to load */
  readyTimeoutMs?: number;
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => probe.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** kB figures of /proc/PID/status (VmRSS now, VmHWM the peak so far); undefined where /proc is absent. */
function procMemory(pid: number): { rssKb: number; hwmKb: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
    return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
  } catch {
    return undefined;
  }
}

export class BenchService {
  private peakRssKb = 0;
  private readonly sampler: NodeJS.Timeout;
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly baseURL: string,
    readonly logFile: string,
  ) {
    this.sampler = setInterval(() => this.sampleRss(), 200);
    child.once('exit', () => (this.exited = true));
  }

  static async start(o: ServiceOptions): Promise<BenchService> {
    const entry = join(o.serverDir, 'dist', 'server.js');
    if (!existsSync(entry)) throw new Error(`${entry} not found: build that checkout first (npm run build)`);
    const port = await freePort();
    const log = openSync(o.logFile, 'w');
    const child = spawn(process.execPath, [entry], {
      cwd: o.serverDir,
      env: {
        ...process.env,
        LOG_LEVEL: 'info',
        SHUTDOWN_GRACE_SECONDS: '1',
        // as npm start and the image run it: 2 unless this environment or an --env setting says otherwise
        MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
        ...o.env,
        MODEL_DIR: o.modelDir,
        ORT_DISABLE_TELEMETRY: '1',
        HOST: '127.0.0.1',
        PORT: String(port),
      },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    // never leave a loaded model behind, whatever happens to the bench
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    child.once('exit', () => process.off('exit', killOnExit));
    const service = new BenchService(child, `http://127.0.0.1:${port}`, o.logFile);
    try {
      await service.waitUntilReady(o.readyTimeoutMs ?? 20 * 60_000);
    } catch (err) {
      await service.stop();
      throw err;
    }
    return service;
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** What the service said went wrong: its plain lines and its error/fatal log records, the first few. */
  private logErrors(): string {
    const said = readFileSync(this.logFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .flatMap((line) => {
        try {
          const r = JSON.parse(line) as { level?: number; msg?: string; error?: string };
          return (r.level ?? 0) >= 50 ? [`${r.msg ?? ''}${r.error ? `: ${r.error}` : ''}`] : [];
        } catch {
          return [line];
        }
      });
    return [...new Set(said)].slice(0, 3).join('\n');
  }

  private async waitUntilReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.exited) throw new Error(`the service exited before it was ready (log ${this.logFile}):\n${this.logErrors()}`);
      const res = await fetch(`${this.baseURL}/ready`).catch(() => undefined);
      if (res?.ok) return;
      await res?.body?.cancel();
      await sleep(250);
    }
    throw new Error(`the service was not ready after ${timeoutMs / 1000} s (log ${this.logFile})`);
  }

  /** GET /ready's body: the pool's figures (workers, admitted, queued…) as this server reports them. */
  async readiness(): Promise<Record<string, unknown>> {
    const res = await fetch(`${this.baseURL}/ready`);
    return (await res.json()) as Record<string, unknown>;
  }

  async metrics(): Promise<string> {
    const res = await fetch(`${this.baseURL}/metrics`);
    if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
    return res.text();
  }

  /** Waits until nothing is admitted (work cut off at the end of a level has been cancelled), at most `timeoutMs`. */
  async settle(timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await this.readiness();
      const busy = typeof r.admitted === 'number' ? r.admitted : Number(r.queued ?? 0) + Number(r.busyWorkers ?? 0);
      if (!(busy > 0)) return;
      await sleep(200);
    }
    throw new Error(`the service still had work in flight ${timeoutMs / 1000} s after the level ended`);
  }

  private sampleRss(): void {
    const mem = procMemory(this.pid);
    if (mem && mem.rssKb > this.peakRssKb) this.peakRssKb = mem.rssKb;
  }

  /** Peak VmRSS sampled since the last call (every 200 ms), MiB; null where /proc is absent. */
  takePeakRssMiB(): number | null {
    this.sampleRss();
    const peak = this.peakRssKb;
    this.peakRssKb = 0;
    return peak > 0 ? peak / 1024 : null;
  }

  /** VmHWM: the process's peak resident memory since it started, MiB. */
  highWaterMiB(): number | null {
    const mem = procMemory(this.pid);
    return mem && Number.isFinite(mem.hwmKb) ? mem.hwmKb / 1024 : null;
  }

  async stop(): Promise<void> {
    clearInterval(this.sampler);
    if (this.exited) return;
    const gone = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    const killed = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await gone;
    clearTimeout(killed);
  }
}
