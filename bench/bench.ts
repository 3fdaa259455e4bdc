/**
 * The service under load, as clients see it: starts the real service (`node dist/server.js` of this checkout or of
 * --server DIR) on a model, then at each concurrency level drives POST /v1/audio/transcriptions with real clips
 * (N-1 autocannon connections and one SSE probe) and reports throughput, real-time factor, latency, time to the
 * first streamed delta, refusals, peak memory and the stage times the workers export on /metrics.
 *
 *   npm run bench -- --model-dir DIR [--concurrency 1,2,4,8] [--duration S] [--warmup S] [--rounds N]
 *                    [--clips DIR] [--out FILE] [--env KEY=VALUE ...] [--server DIR]
 *
 * Before the first level the service transcribes every clip once, as many at a time as the highest level's streams
 * (at most one per clip; not measured), so that no level is the first work of a service just started
 * (bench-level.ts, primeService). With --rounds N the levels run N times, every other round in reverse order, and
 * the report adds each level's median and its ratio to the first level within each round: on a machine whose speed
 * drifts from one minute to the next, one run's pair of levels is one sample of the ratio.
 *
 * Prints Markdown; --out FILE writes FILE.json and FILE.md. Benchmarks print numbers: exit 0 when the run
 * completed, 1 when it could not run (a one-line error), 2 usage.
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { loadClips, type BenchClip } from './bench-clips.js';
import { driveLevel, levelOrder, primeService } from './bench-level.js';
import type { BenchService } from './bench-service.js';
import { gitState, machineInfo, positive, runServiceBench, SERVICE_OPTIONS, serviceSettings, UsageError } from './cli.js';
import { parseMetrics, type Samples } from './report-metrics.js';
import { acrossRounds, renderMarkdown, summariseLevel, type BenchReport, type LevelResult } from './report.js';

const USAGE = `usage: npm run bench -- --model-dir DIR [--concurrency 1,2,4,8] [--duration S] [--warmup S] [--rounds N]
                        [--clips DIR] [--out FILE] [--env KEY=VALUE ...] [--server DIR]
  --concurrency  streams kept busy at each level (default 1,2,4,8)
  --duration     measured seconds per level (default 30), after a warm-up of at least --warmup seconds
                 (default 2) that lasts until every stream has finished one request
  --rounds       run the levels N times, every other round in reverse order (1,8 then 8,1), and report each
                 level's median and its ratio to the first level within each round (default 1)
  --clips        folder of .wav clips sent in rotation (default ../shared/fixtures/voices-in-the-wild)
  --out          write FILE.json and FILE.md (a .json or .md ending is dropped)
  --env          service setting, repeatable (MAX_BATCH=1, WORKERS=2, ...); MAX_QUEUE defaults to the
                 highest concurrency so that every stream is admitted
  --server       a built checkout whose dist/server.js to run (default: this one)`;

function readOptions(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...SERVICE_OPTIONS,
      concurrency: { type: 'string', default: '1,2,4,8' },
      duration: { type: 'string', default: '30' },
      warmup: { type: 'string', default: '2' },
      rounds: { type: 'string', default: '1' },
    },
  });
  const concurrency = values.concurrency.split(',').map((c) => positive('concurrency', c.trim(), true));
  if (new Set(concurrency).size !== concurrency.length) throw new UsageError(`--concurrency: each level once, got "${values.concurrency}"`);
  // every stream is admitted unless the caller says otherwise: a refused stream retries at once (autocannon has
  // no back-off), which measures a storm of 429s rather than the service
  const settings = serviceSettings(values, positionals, { MAX_QUEUE: String(Math.max(...concurrency)) });
  return {
    ...settings,
    concurrency,
    durationS: positive('duration', values.duration, false),
    warmupS: values.warmup === '0' ? 0 : positive('warmup', values.warmup, false),
    rounds: positive('rounds', values.rounds, true),
  };
}

async function runLevels(service: BenchService, clips: BenchClip[], o: ReturnType<typeof readOptions>): Promise<LevelResult[]> {
  const levels: LevelResult[] = [];
  for (const { round, concurrency } of levelOrder(o.concurrency, o.rounds)) {
    const tag = o.rounds > 1 ? `round ${round}/${o.rounds}, ` : '';
    console.error(`bench: ${tag}${concurrency} stream(s): warming up, then ${o.durationS} s measured…`);
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
    const level = { ...summariseLevel(concurrency, run, clips, { before, after }, peak, loadAverage), round };
    console.error(
      `bench: ${tag}${concurrency} stream(s): ${level.completed} done, ${level.audioSecondsPerSecond.toFixed(2)} audio s/s, p50 ${level.latencyMs ? (level.latencyMs.p50 / 1000).toFixed(2) : '–'} s (warm-up ${level.warmupS.toFixed(1)} s)`,
    );
    levels.push(level);
  }
  return levels;
}

process.exitCode = await runServiceBench(
  {
    name: 'bench',
    usage: USAGE,
    readOptions,
    prepare: (o) => loadClips(o.clipsDir),
    async run(service, o, clips, logFile) {
      const ready = await service.readiness();
      console.error('bench: priming: every clip once (not measured)…');
      const primed = await primeService(service.baseURL, clips, Math.max(...o.concurrency));
      const levels = await runLevels(service, clips, o);
      const report: BenchReport = {
        date: new Date().toISOString(),
        machine: machineInfo(),
        server: { dir: o.serverDir, ...gitState(o.serverDir), ready, log: logFile },
        modelDir: o.modelDir,
        env: o.env,
        clips: clips.map((c) => ({ name: c.name, seconds: c.seconds })),
        durationS: o.durationS,
        warmupS: o.warmupS,
        rounds: o.rounds,
        primeS: primed.seconds,
        primeStreams: primed.streams,
        peakRssMiB: service.highWaterMiB(),
        levels,
        ...(o.rounds > 1 ? { acrossRounds: acrossRounds(o.concurrency, levels) } : {}),
      };
      return { report, markdown: renderMarkdown(report) };
    },
  },
  process.argv.slice(2),
);
