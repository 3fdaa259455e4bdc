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
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { BenchService } from './bench-service.js';
import { machineInfo, positive, runServiceBench, SERVICE_OPTIONS, serviceSettings, UsageError } from './cli.js';
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

/** How long a session waits for its last transcripts after its audio ends. */
const SETTLE_TIMEOUT_MS = 120_000;

function readOptions(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...SERVICE_OPTIONS,
      sessions: { type: 'string', default: '1,4,16' },
      seconds: { type: 'string', default: '30' },
      turns: { type: 'string', default: 'vad' },
      bound: { type: 'string', default: '2' },
    },
  });
  const sessions = values.sessions.split(',').map((c) => positive('sessions', c.trim(), true));
  const most = Math.max(...sessions);
  const settings = serviceSettings(values, positionals, { MAX_REALTIME_SESSIONS: String(most), MAX_QUEUE: String(2 * most) });
  if (values.turns !== 'vad' && values.turns !== 'commit') throw new UsageError(`--turns: expected vad or commit, got "${values.turns}"`);
  return {
    ...settings,
    sessions,
    seconds: positive('seconds', values.seconds, false),
    turns: values.turns as TurnMode,
    boundMs: positive('bound', values.bound, false) * 1000,
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

process.exitCode = await runServiceBench(
  {
    name: 'bench:realtime',
    usage: USAGE,
    readOptions,
    prepare: (o) => loadRealtimeClips(o.clipsDir),
    async run(service, o, clips, logFile) {
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
        machine: machineInfo(),
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
      return { report, markdown: renderMarkdown(report) };
    },
  },
  process.argv.slice(2),
);
