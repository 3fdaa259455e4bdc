/**
 * What every bench that runs the real service shares: its common options (--model-dir, --clips, --out, --env,
 * --server), the usage and exit-code rules (0 ran, 1 could not run, 2 usage), stopping the service on SIGINT or
 * SIGTERM, the machine and checkout it ran on, and writing FILE.json and FILE.md.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { BenchService } from './bench-service.js';
import { defaultClipsDir } from './speech-rate.js';

export class UsageError extends Error {}

const repoRoot = resolve(import.meta.dirname, '..');

export function positive(name: string, value: string, integer: boolean): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new UsageError(`--${name}: expected a positive ${integer ? 'integer' : 'number'}, got "${value}"`);
  return n;
}

/** parseArgs options every service bench takes. */
export const SERVICE_OPTIONS = {
  'model-dir': { type: 'string' },
  clips: { type: 'string' },
  out: { type: 'string' },
  env: { type: 'string', multiple: true, default: [] as string[] },
  server: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export interface ServiceSettings {
  modelDir: string;
  clipsDir: string;
  /** FILE of --out, without a .json or .md ending */
  out: string | undefined;
  /** the service's environment: the bench's defaults, then every --env KEY=VALUE */
  env: Record<string, string>;
  serverDir: string;
}

/** The service's environment: `defaults`, then every --env KEY=VALUE. */
export function serviceEnv(assignments: string[], defaults: Record<string, string>): Record<string, string> {
  const env = { ...defaults };
  for (const kv of assignments) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(kv);
    if (!m) throw new UsageError(`--env: expected KEY=VALUE, got "${kv}"`);
    env[m[1]!] = m[2]!;
  }
  return env;
}

/** Writes FILE.json and FILE.md (when --out was given) and says so. */
export function writeReport(name: string, out: string | undefined, report: unknown, markdown: string): void {
  if (!out) return;
  mkdirSync(dirname(resolve(out)), { recursive: true });
  writeFileSync(`${out}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${out}.md`, `${markdown}\n`);
  console.error(`${name}: wrote ${out}.json and ${out}.md`);
}

/** The common options read and checked; `defaults` are service settings --env may override. */
export function serviceSettings(
  values: { 'model-dir'?: string; clips?: string; out?: string; env: string[]; server?: string; help?: boolean },
  positionals: string[],
  defaults: Record<string, string>,
): ServiceSettings {
  if (values.help) throw new UsageError('');
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (!values['model-dir']) throw new UsageError('--model-dir is required');
  return {
    modelDir: resolve(values['model-dir']),
    clipsDir: resolve(values.clips ?? defaultClipsDir()),
    out: values.out?.replace(/\.(json|md)$/, ''),
    env: serviceEnv(values.env, defaults),
    serverDir: resolve(values.server ?? repoRoot),
  };
}

export function machineInfo() {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: totalmem() / 2 ** 30,
    node: process.versions.node,
    platform: `${process.platform}-${process.arch}`,
  };
}

export function gitState(dir: string): { commit: string | null; uncommittedChanges: boolean } {
  try {
    const git = (...args: string[]) => execFileSync('git', ['-C', dir, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return { commit: git('rev-parse', 'HEAD'), uncommittedChanges: git('status', '--porcelain', '--untracked-files=no').length > 0 };
  } catch {
    return { commit: null, uncommittedChanges: false };
  }
}

export interface ServiceBench<O extends ServiceSettings, P> {
  /** as the messages name it: bench, bench:realtime, ... */
  name: string;
  usage: string;
  /** throws UsageError (or parseArgs' own errors) on bad arguments */
  readOptions(argv: string[]): O;
  /** what the run needs that can fail before a model is loaded (the clips) */
  prepare(o: O): P;
  /** the bench's work on the started service; returns the report and its Markdown */
  run(service: BenchService, o: O, prepared: P, logFile: string): Promise<{ report: unknown; markdown: string }>;
}

/**
 * Runs a service bench from its argv: usage errors print the usage (exit 2); otherwise it prepares, the service
 * starts on the model, the bench runs, its Markdown is printed and, with --out, written with the JSON report (exit 0); a failure
 * is one line (exit 1). The service is stopped on every way out, SIGINT and SIGTERM included.
 */
export async function runServiceBench<O extends ServiceSettings, P>(bench: ServiceBench<O, P>, argv: string[]): Promise<number> {
  let o: O;
  try {
    o = bench.readOptions(argv);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      if ((err as Error).message) console.error(`${bench.name}: ${(err as Error).message}`);
      console.error(bench.usage);
      return 2;
    }
    throw err;
  }
  let service: BenchService | undefined;
  // interrupted: the loaded model must not outlive the bench
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void (service?.stop() ?? Promise.resolve()).finally(() => process.exit(130)));
  }
  if (loadavg()[0]! > cpus().length) {
    console.error(`${bench.name}: the machine is busy (load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs): every figure will be skewed`);
  }
  try {
    const prepared = bench.prepare(o);
    const logFile = join(tmpdir(), `mega-asr-${bench.name.replace(':', '-')}-${process.pid}.log`);
    console.error(`${bench.name}: starting ${join(o.serverDir, 'dist', 'server.js')} on ${o.modelDir} (log ${logFile})…`);
    service = await BenchService.start({ serverDir: o.serverDir, modelDir: o.modelDir, env: o.env, logFile });
    const { report, markdown } = await bench.run(service, o, prepared, logFile);
    console.log(markdown);
    writeReport(bench.name, o.out, report, markdown);
    return 0;
  } catch (err) {
    console.error(`${bench.name}: ${(err as Error).message}`);
    return 1;
  } finally {
    await service?.stop();
  }
}
