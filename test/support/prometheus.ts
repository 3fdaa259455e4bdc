import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';

/** One series of an instant query: its labels and its value (NaN and ±Inf as Prometheus writes them). */
export interface Sample {
  metric: Record<string, string>;
  value: number;
}

export interface Prometheus {
  url: string;
  /** Instant query (GET /api/v1/query) at the current time; a PromQL error throws with Prometheus' message. */
  query(expr: string): Promise<Sample[]>;
  /** Values of `label` over the series `match` selects (GET /api/v1/label/<label>/values, what Grafana's label_values() asks). */
  labelValues(label: string, match: string): Promise<string[]>;
  /** Polls `read` until it returns something other than undefined, or throws after `ms`. */
  until<T>(what: string, read: () => Promise<T | undefined>, ms?: number): Promise<T>;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (released before the caller binds it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().once('error', reject).listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function until<T>(what: string, read: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await read();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** `promtool check config` on a file: its exit status and output (promtool ships in Debian's prometheus package). */
export function promtoolCheckConfig(path: string): { status: number | null; output: string } {
  const run = spawnSync('promtool', ['check', 'config', path], { encoding: 'utf8', timeout: 30_000 });
  if (run.error) throw new Error(`promtool did not run: ${run.error.message} (install Debian's prometheus package)`);
  return { status: run.status, output: run.stdout + run.stderr };
}

/**
 * The real Prometheus server (the `prometheus` binary on PATH) on a free loopback port, with `config`
 * written to a temporary directory that also holds its TSDB. Resolves once /-/ready answers 200.
 */
export async function startPrometheus(config: unknown): Promise<Prometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'mega-asr-prometheus-'));
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, stringify(config));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    'prometheus',
    [`--config.file=${configFile}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let spawnError: Error | undefined;
  child.once('error', (err) => (spawnError = err));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null && !spawnError) {
      child.kill('SIGTERM');
      const killed = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killed);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const query = async (expr: string): Promise<Sample[]> => {
    const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] } };
    if (body.status !== 'success' || !body.data) throw new Error(`Prometheus refused ${JSON.stringify(expr)}: ${body.error ?? res.status}`);
    if (body.data.resultType !== 'vector') throw new Error(`${JSON.stringify(expr)} gave a ${body.data.resultType}, not an instant vector`);
    return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  };

  const labelValues = async (label: string, match: string): Promise<string[]> => {
    const res = await fetch(`${url}/api/v1/label/${encodeURIComponent(label)}/values?${new URLSearchParams({ 'match[]': match })}`, {
      signal: AbortSignal.timeout(10_000),
    });
    const body = (await res.json()) as { status: string; error?: string; data?: string[] };
    if (body.status !== 'success' || !body.data) throw new Error(`Prometheus refused label ${label} of ${match}: ${body.error ?? res.status}`);
    return body.data;
  };

  try {
    await until('Prometheus to answer /-/ready', async () => {
      if (spawnError) throw new Error(`prometheus did not start: ${spawnError.message} (install Debian's prometheus package)`);
      if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}:\n${log}`);
      const status = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status, () => 0);
      return status === 200 ? true : undefined;
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, query, labelValues, until, stop };
}
