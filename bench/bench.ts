/**
 * The service under load, as clients see it: starts the real service (`node dist/server.js` of this checkout or of
 * --server DIR) on a model, then at each concurrency level drives POST /v1/audio/transcriptions with real clips
 * (N-1 autocannon connections and one SSE probe) and reports throughput, real-time factor, latency, time to the
 * first streamed delta, refusals, peak memory and the stage times the workers export on /metrics.
 *
 *   npm run bench -- --model-dir DIR [--concurrency 1,2,4,8] [--duration S] [--warmup S] [--clips DIR]
 *                    [--out FILE] [--env KEY=VALUE ...] [--server DIR]
 *
 * Prints Markdown; --out FILE writes FILE.json and FILE.md. Benchmarks print numbers: exit 0 when the run
 * completed, 1 when it could not run (a one-line error), 2 usage.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadClips, type BenchClip } from './bench-clips.js';
import { driveLevel } from './bench-level.js';
import { BenchService } from './bench-service.js';
import { parseMetrics, type Samples } from './report-metrics.js';
import { renderMarkdown, summariseLevel, type BenchReport, type LevelResult } from './report.js';

const USAGE = `usage: npm run bench -- --model-dir DIR [--concurrency 1,2,4,8] [--duration S] [--warmup S] [--clips DIR]
                        [--out FILE] [--env KEY=VALUE ...] [--server DIR]
  --concurrency  streams kept busy at each level (default 1,2,4,8)
  --duration     measured seconds per level (default 30), after a warm-up of at least --warmup seconds
                 (default 2) that lasts until every stream has finished one request
  --clips        folder of .wav clips sent in rotation (default ../shared/fixtures/voices-in-the-wild)
  --out          write FILE.json and FILE.md (a .json or .md ending is dropped)
  --env          service setting, repeatable (MAX_BATCH=1, WORKERS=2, ...); MAX_QUEUE defaults to the
                 highest concurrency so that every stream is admitted
  --server       a built checkout whose dist/server.js to run (default: this one)`;

const repoRoot = resolve(import.meta.dirname, '..');

class UsageError extends Error {}

function positive(name: string, value: string, integer: boolean): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new UsageError(`--${name}: expected a positive ${integer ? 'integer' : 'number'}, got "${value}"`);
  return n;
}

function readOptions(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'model-dir': { type: 'string' },
      concurrency: { type: 'string', default: '1,2,4,8' },
      duration: { type: 'string', default: '30' },
      warmup: { type: 'string', default: '2' },
      clips: { type: 'string' },
      out: { type: 'string' },
      env: { type: 'string', multiple: true, default: [] },
      server: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) throw new UsageError('');
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (!values['model-dir']) throw new UsageError('--model-dir is required');
  const concurrency = values.concurrency.split(',').map((c) => positive('concurrency', c.trim(), true));
  // every stream is admitted unless the caller says otherwise: a refused stream retries at once (autocannon has
  // no back-off), which measures a storm of 429s rather than the service
  const env: Record<string, string> = { MAX_QUEUE: String(Math.max(...concurrency)) };
  for (const kv of values.env) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(kv);
    if (!m) throw new UsageError(`--env: expected KEY=VALUE, got "${kv}"`);
    env[m[1]!] = m[2]!;
  }
  return {
    modelDir: resolve(values['model-dir']),
    concurrency,
    durationS: positive('duration', values.duration, false),
    warmupS: values.warmup === '0' ? 0 : positive('warmup', values.warmup, false),
    clipsDir: resolve(values.clips ?? join(process.env.SHARED_DIR ?? join(repoRoot, '..', 'shared'), 'fixtures', 'voices-in-the-wild')),
    out: values.out?.replace(/\.(json|md)$/, ''),
    env,
    serverDir: resolve(values.server ?? repoRoot),
  };
}

function gitState(dir: string): { commit: string | null; uncommittedChanges: boolean } {
  try {
    const git = (...args: string[]) => execFileSync('git', ['-C', dir, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return { commit: git('rev-parse', 'HEAD'), uncommittedChanges: git('status', '--porcelain', '--untracked-files=no').length > 0 };
  } catch {
    return { commit: null, uncommittedChanges: false };
  }
}

async function runLevels(service: BenchService, clips: BenchClip[], o: ReturnType<typeof readOptions>): Promise<LevelResult[]> {
  const levels: LevelResult[] = [];
  for (const concurrency of o.concurrency) {
    console.error(`bench: ${concurrency} stream(s): warming up, then ${o.durationS} s measured…`);
    let before: Samples = new Map();
    let after: Samples = new Map();
    let loadAverage = 0;
    service.takePeakRssMiB();
    const run = await driveLevel({
      url: service.baseURL,
      concurrency,
      durationS: o.durationS,
      warmupS: o.warmupS,
      clips,
      onWindowStart: async () => void (before = parseMetrics(await service.metrics())),
      onWindowEnd: async () => {
        loadAverage = loadavg()[0]!;
        after = parseMetrics(await service.metrics());
      },
    });
    const peak = service.takePeakRssMiB();
    await service.settle(); // requests cut off at the window's end are cancelled before the next level starts
    const level = summariseLevel(concurrency, run, clips, { before, after }, peak, loadAverage);
    console.error(
      `bench: ${concurrency} stream(s): ${level.completed} done, ${level.audioSecondsPerSecond.toFixed(2)} audio s/s, p50 ${level.latencyMs ? (level.latencyMs.p50 / 1000).toFixed(2) : '–'} s (warm-up ${level.warmupS.toFixed(1)} s)`,
    );
    levels.push(level);
  }
  return levels;
}

async function main(argv: string[]): Promise<number> {
  let o: ReturnType<typeof readOptions>;
  try {
    o = readOptions(argv);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      if ((err as Error).message) console.error(`bench: ${(err as Error).message}`);
      console.error(USAGE);
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
    console.error(`bench: the machine is busy (load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs): every figure will be skewed`);
  }
  try {
    const clips = loadClips(o.clipsDir);
    const logFile = join(tmpdir(), `mega-asr-bench-${process.pid}.log`);
    console.error(`bench: starting ${join(o.serverDir, 'dist', 'server.js')} on ${o.modelDir} (log ${logFile})…`);
    service = await BenchService.start({ serverDir: o.serverDir, modelDir: o.modelDir, env: o.env, logFile });
    const ready = await service.readiness();
    const levels = await runLevels(service, clips, o);
    const report: BenchReport = {
      date: new Date().toISOString(),
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
        memoryGiB: totalmem() / 2 ** 30,
        node: process.versions.node,
        platform: `${process.platform}-${process.arch}`,
      },
      server: { dir: o.serverDir, ...gitState(o.serverDir), ready, log: logFile },
      modelDir: o.modelDir,
      env: o.env,
      clips: clips.map((c) => ({ name: c.name, seconds: c.seconds })),
      durationS: o.durationS,
      warmupS: o.warmupS,
      peakRssMiB: service.highWaterMiB(),
      levels,
    };
    const markdown = renderMarkdown(report);
    console.log(markdown);
    if (o.out) {
      mkdirSync(dirname(resolve(o.out)), { recursive: true });
      writeFileSync(`${o.out}.json`, `${JSON.stringify(report, null, 2)}\n`);
      writeFileSync(`${o.out}.md`, `${markdown}\n`);
      console.error(`bench: wrote ${o.out}.json and ${o.out}.md`);
    }
    return 0;
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    return 1;
  } finally {
    await service?.stop();
  }
}

process.exitCode = await main(process.argv.slice(2));
