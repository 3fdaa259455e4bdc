/**
 * Live streams under load: starts the real service (`node dist/server.js` of this checkout or of --server DIR) on
 * a model, then at each level opens N sessions of GET /v1/realtime?intent=transcription at once, each playing real
 * clips in real time, and reports partial and final latency (and how they grow with turn length), turns
 * transcribed, errors, and the largest N whose partial p95 stays under --bound: the live streams one worker holds.
 *
 *   npm run bench:realtime -- --model-dir DIR [--sessions 1,4,16] [--seconds S] [--turns vad|commit]
 *                             [--bound S] [--clips DIR] [--out FILE] [--env KEY=VALUE ...] [--server DIR]
 *
 * Prints Markdown; --out FILE writes FILE.json and FILE.md. Exit 0 when the run completed, 1 when it could not
 * run (a one-line error), 2 usage.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { BenchService } from './bench-service.js';
import { held, histogramBuckets, renderMarkdown, summariseLevel, type RealtimeLevel, type RealtimeReport } from './realtime-report.js';
import { driveSession, loadRealtimeClips, type RealtimeClip, type TurnMode } from './realtime-session.js';
import { parseMetrics, stageBreakdown } from './report-metrics.js';

const USAGE = `usage: npm run bench:realtime -- --model-dir DIR [--sessions 1,4,16] [--seconds S] [--turns vad|commit]
                                 [--bound S] [--clips DIR] [--out FILE] [--env KEY=VALUE ...] [--server DIR]
  --sessions  sessions open at once at each level (default 1,4,16)
  --seconds   audio each session plays, in whole clips (default 30)
  --turns     vad: server_vad ends the turns (1 s of silence follows each clip; default);
              commit: turn_detection null and a commit at the end of each clip
  --bound     the partial-latency p95, in seconds, a level must stay under to count as held (default 2)
  --clips     folder of .wav clips played in rotation (default ../shared/fixtures/voices-in-the-wild)
  --out       write FILE.json and FILE.md (a .json or .md ending is dropped)
  --env       service setting, repeatable (WORKERS=2, REALTIME_PARTIAL_SECONDS=0.5, ...); MAX_REALTIME_SESSIONS
              defaults to the highest level and MAX_QUEUE to twice that, so that no session is refused
  --server    a built checkout whose dist/server.js to run (default: this one)`;

const repoRoot = resolve(import.meta.dirname, '..');
/** How long a session waits for its last transcripts after its audio ends. */
const SETTLE_TIMEOUT_MS = 120_000;

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
      sessions: { type: 'string', default: '1,4,16' },
      seconds: { type: 'string', default: '30' },
      turns: { type: 'string', default: 'vad' },
      bound: { type: 'string', default: '2' },
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
  if (values.turns !== 'vad' && values.turns !== 'commit') throw new UsageError(`--turns: expected vad or commit, got "${values.turns}"`);
  const sessions = values.sessions.split(',').map((c) => positive('sessions', c.trim(), true));
  const most = Math.max(...sessions);
  const env: Record<string, string> = { MAX_REALTIME_SESSIONS: String(most), MAX_QUEUE: String(2 * most) };
  for (const kv of values.env) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(kv);
    if (!m) throw new UsageError(`--env: expected KEY=VALUE, got "${kv}"`);
    env[m[1]!] = m[2]!;
  }
  return {
    modelDir: resolve(values['model-dir']),
    sessions,
    seconds: positive('seconds', values.seconds, false),
    turns: values.turns as TurnMode,
    boundMs: positive('bound', values.bound, false) * 1000,
    clipsDir: resolve(values.clips ?? join(process.env.SHARED_DIR ?? join(repoRoot, '..', 'shared'), 'fixtures', 'voices-in-the-wild')),
    out: values.out?.replace(/\.(json|md)$/, ''),
    env,
    serverDir: resolve(values.server ?? repoRoot),
  };
}

const PARTIAL_HISTOGRAM = 'realtime_partial_latency_seconds';
const DROPPED_AUDIO = 'realtime_dropped_audio_seconds_total';

async function runLevel(service: BenchService, clips: RealtimeClip[], sessions: number, o: ReturnType<typeof readOptions>): Promise<RealtimeLevel> {
  const before = await service.metrics();
  service.takePeakRssMiB();
  const started = performance.now();
  const records = await Promise.all(
    Array.from({ length: sessions }, (_, i) =>
      driveSession({
        url: service.baseURL.replace(/^http/, 'ws'),
        clips,
        firstClip: i % clips.length,
        seconds: o.seconds,
        turns: o.turns,
        // spread the sessions' appends over the 100 ms between two of them
        offsetMs: (i * 100) / sessions,
        settleTimeoutMs: SETTLE_TIMEOUT_MS,
      }),
    ),
  );
  const wallS = (performance.now() - started) / 1000;
  const loadAverage = loadavg()[0]!;
  const after = await service.metrics();
  const peakRssMiB = service.takePeakRssMiB();
  await service.settle();
  const [was, is] = [parseMetrics(before), parseMetrics(after)];
  const delta = (name: string) => (is.has(name) ? is.get(name)! - (was.get(name) ?? 0) : null);
  return summariseLevel(sessions, records, {
    wallS,
    partial: { before: histogramBuckets(before, PARTIAL_HISTOGRAM), after: histogramBuckets(after, PARTIAL_HISTOGRAM) },
    droppedAudioSeconds: delta(DROPPED_AUDIO),
    stages: stageBreakdown(was, is) ?? null,
    peakRssMiB,
    loadAverage,
  });
}

async function main(argv: string[]): Promise<number> {
  let o: ReturnType<typeof readOptions>;
  try {
    o = readOptions(argv);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      if ((err as Error).message) console.error(`bench:realtime: ${(err as Error).message}`);
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
    console.error(`bench:realtime: the machine is busy (load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs): every figure will be skewed`);
  }
  try {
    const clips = loadRealtimeClips(o.clipsDir);
    const logFile = join(tmpdir(), `mega-asr-bench-realtime-${process.pid}.log`);
    console.error(`bench:realtime: starting ${join(o.serverDir, 'dist', 'server.js')} on ${o.modelDir} (log ${logFile})…`);
    service = await BenchService.start({ serverDir: o.serverDir, modelDir: o.modelDir, env: o.env, logFile });
    const ready = await service.readiness();
    // One session on the shortest clip first: the first runs of each graph are slow and would count against level 1.
    console.error('bench:realtime: warming up with one clip…');
    const shortest = clips.reduce((best, c, i) => (c.seconds < clips[best]!.seconds ? i : best), 0);
    await driveSession({ url: service.baseURL.replace(/^http/, 'ws'), clips, firstClip: shortest, seconds: 0.1, turns: o.turns, offsetMs: 0, settleTimeoutMs: SETTLE_TIMEOUT_MS });
    await service.settle();
    const levels: RealtimeLevel[] = [];
    for (const sessions of o.sessions) {
      console.error(`bench:realtime: ${sessions} session(s) playing ${o.seconds} s each…`);
      const level = await runLevel(service, clips, sessions, o);
      const p = level.partialLatencyMs;
      console.error(
        `bench:realtime: ${sessions} session(s): ${level.turns.completed} turns, ${level.deltas} deltas, partial p50 ${p ? (p.p50 / 1000).toFixed(2) : '–'} s p95 ${p ? (p.p95 / 1000).toFixed(2) : '–'} s, ${level.errors} errors`,
      );
      levels.push(level);
    }
    const heldLevels = levels.filter((l) => held(l, o.boundMs)).map((l) => l.sessions);
    const report: RealtimeReport = {
      date: new Date().toISOString(),
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
        memoryGiB: totalmem() / 2 ** 30,
        node: process.versions.node,
        platform: `${process.platform}-${process.arch}`,
      },
      server: { dir: o.serverDir, ready, log: logFile },
      modelDir: o.modelDir,
      env: o.env,
      clips: clips.map((c) => ({ name: c.name, seconds: c.seconds })),
      turns: o.turns,
      secondsPerSession: o.seconds,
      boundMs: o.boundMs,
      holds: heldLevels.length ? Math.max(...heldLevels) : null,
      peakRssMiB: service.highWaterMiB(),
      levels,
    };
    const markdown = renderMarkdown(report);
    console.log(markdown);
    if (o.out) {
      mkdirSync(dirname(resolve(o.out)), { recursive: true });
      writeFileSync(`${o.out}.json`, `${JSON.stringify(report, null, 2)}\n`);
      writeFileSync(`${o.out}.md`, `${markdown}\n`);
      console.error(`bench:realtime: wrote ${o.out}.json and ${o.out}.md`);
    }
    return 0;
  } catch (err) {
    console.error(`bench:realtime: ${(err as Error).message}`);
    return 1;
  } finally {
    await service?.stop();
  }
}

process.exitCode = await main(process.argv.slice(2));
