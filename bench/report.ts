import type { BenchClip } from './bench-clips.js';
import type { LevelRun } from './bench-level.js';
import { NO_STAGE_METRICS, stageBreakdown, type Samples, type StageBreakdown } from './report-metrics.js';
import { median, percentile } from './stats.js';

/** What one concurrency level measured, as written to the JSON. Times in ms unless named otherwise. */
export interface LevelResult {
  concurrency: number;
  /** which pass over the levels (1-based; --rounds) */
  round: number;
  windowS: number;
  warmupS: number;
  /** 2xx transcriptions that finished inside the window */
  completed: number;
  requestsPerSecond: number;
  /** seconds of audio in the completed transcriptions per second of window */
  audioSecondsPerSecond: number;
  /** wall time over audio time of the completed requests (what one stream experiences): sum(latency) / sum(audio) */
  realTimeFactor: number | null;
  latencyMs: { p50: number; p95: number; p99: number } | null;
  /** streamed (SSE) requests whose first transcript.text.delta arrived inside the window */
  firstDeltaMs: { n: number; p50: number; max: number } | null;
  /** responses inside the window by HTTP status (2xx included) */
  statuses: Record<string, number>;
  rejected: { 429: number; 503: number };
  non2xx: number;
  /** streamed requests answered 200 that ended in an error event, plus connection errors over the level */
  errors: number;
  /** peak VmRSS of the service process during the level (warm-up included), MiB */
  peakRssMiB: number | null;
  /** the machine's 1-minute load average at the window's end: other work on the machine skews every figure */
  loadAverage: number;
  /** asr_decoded_tokens_total per second of window */
  tokensPerSecond: number | null;
  stages: StageBreakdown | null;
  stagesNote?: string;
}

/** A level's figures; the caller adds its round. */
export function summariseLevel(
  concurrency: number,
  run: LevelRun,
  clips: BenchClip[],
  metrics: { before: Samples; after: Samples },
  peakRssMiB: number | null,
  loadAverage: number,
): Omit<LevelResult, 'round'> {
  const windowS = (run.windowEnd - run.windowStart) / 1000;
  const inWindow = (t: number) => t > run.windowStart && t <= run.windowEnd;
  const finished = run.records.filter((r) => inWindow(r.endedAt));
  const ok = finished.filter((r) => r.ok);
  const audio = ok.reduce((s, r) => s + clips[r.clip]!.seconds, 0);
  const latencies = ok.map((r) => r.endedAt - r.startedAt).sort((a, b) => a - b);
  const firstDeltas = run.records
    .filter((r) => r.firstDeltaAt !== undefined && inWindow(r.firstDeltaAt))
    .map((r) => r.firstDeltaAt! - r.startedAt)
    .sort((a, b) => a - b);
  const statuses: Record<string, number> = {};
  for (const r of finished) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
  const stages = stageBreakdown(metrics.before, metrics.after);
  const tokens = metrics.after.get('asr_decoded_tokens_total');
  return {
    concurrency,
    windowS,
    warmupS: run.warmupS,
    completed: ok.length,
    requestsPerSecond: ok.length / windowS,
    audioSecondsPerSecond: audio / windowS,
    realTimeFactor: audio > 0 ? latencies.reduce((s, l) => s + l, 0) / 1000 / audio : null,
    latencyMs: latencies.length ? { p50: percentile(latencies, 50), p95: percentile(latencies, 95), p99: percentile(latencies, 99) } : null,
    firstDeltaMs: firstDeltas.length ? { n: firstDeltas.length, p50: percentile(firstDeltas, 50), max: firstDeltas.at(-1)! } : null,
    statuses,
    rejected: { 429: statuses[429] ?? 0, 503: statuses[503] ?? 0 },
    non2xx: finished.filter((r) => r.status < 200 || r.status >= 300).length,
    errors: finished.filter((r) => r.status === 200 && !r.ok).length + run.connectionErrors,
    peakRssMiB,
    loadAverage,
    tokensPerSecond: tokens === undefined ? null : (tokens - (metrics.before.get('asr_decoded_tokens_total') ?? 0)) / windowS,
    stages: stages ?? null,
    ...(stages ? {} : { stagesNote: NO_STAGE_METRICS }),
  };
}

/** One level over every round (--rounds > 1). */
export interface AcrossRounds {
  concurrency: number;
  /** audio seconds per second: the median over the rounds (the mean of the middle two for an even count), min, max */
  audioSecondsPerSecond: { median: number; min: number; max: number };
  /**
   * this level's audio s/s over the first level's (the first of --concurrency) within the same round, in round
   * order, and their median; null when the first level finished nothing in some round
   */
  ratioToFirst: { rounds: number[]; median: number } | null;
}

export function acrossRounds(concurrency: number[], levels: LevelResult[]): AcrossRounds[] {
  const rounds = [...new Set(levels.map((l) => l.round))].sort((a, b) => a - b);
  const at = (c: number, round: number) => {
    const level = levels.find((l) => l.concurrency === c && l.round === round);
    if (!level) throw new Error(`no level of ${c} streams in round ${round}`);
    return level.audioSecondsPerSecond;
  };
  const firsts = rounds.map((r) => at(concurrency[0]!, r));
  return concurrency.map((c) => {
    const aps = rounds.map((r) => at(c, r));
    const ratios = aps.map((x, i) => x / firsts[i]!);
    return {
      concurrency: c,
      audioSecondsPerSecond: { median: median(aps), min: Math.min(...aps), max: Math.max(...aps) },
      ratioToFirst: firsts.every((f) => f > 0) ? { rounds: ratios, median: median(ratios) } : null,
    };
  });
}

/** The run as a whole, as written to the JSON. */
export interface BenchReport {
  date: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string };
  server: { dir: string; commit: string | null; uncommittedChanges: boolean; ready: Record<string, unknown>; log: string };
  modelDir: string;
  env: Record<string, string>;
  clips: { name: string; seconds: number }[];
  durationS: number;
  warmupS: number;
  rounds: number;
  /** seconds spent priming the service before the first level (every clip once, not measured) */
  primeS: number;
  /** how many clips priming sent at once */
  primeStreams: number;
  /** VmHWM of the service process at the end: its peak resident memory over the whole run, MiB */
  peakRssMiB: number | null;
  /** in the order they ran */
  levels: LevelResult[];
  /** with --rounds > 1: each level over the rounds, in --concurrency order */
  acrossRounds?: AcrossRounds[];
}

const fixed = (x: number | null | undefined, digits: number) => (x === null || x === undefined ? '–' : x.toFixed(digits));
const time = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? '–' : ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : ms >= 100 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(1)} ms`;
const row = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
const stageMs = (l: LevelResult, stage: keyof StageBreakdown['stages']) => time(l.stages?.stages[stage]?.meanMs);

export function renderMarkdown(r: BenchReport): string {
  const commit = r.server.commit ? `${r.server.commit.slice(0, 10)}${r.server.uncommittedChanges ? ' (+ uncommitted changes)' : ''}` : 'unknown';
  const env = Object.entries(r.env).map(([k, v]) => `${k}=${v}`).join(' ') || 'defaults';
  const byRound = r.rounds > 1;
  const [roundHead, roundRule] = byRound ? [' round |', '---:|'] : ['', ''];
  const roundCell = (l: LevelResult) => (byRound ? [l.round] : []);
  const lines = [
    `## mega-asr bench — ${r.date}`,
    '',
    `- machine: ${r.machine.cpus} × ${r.machine.cpuModel}, ${r.machine.memoryGiB.toFixed(0)} GiB, Node ${r.machine.node}, ${r.machine.platform}`,
    `- server: ${r.server.dir} at ${commit}; env: ${env}`,
    `- model: ${r.modelDir}`,
    `- clips: ${r.clips.length} (${r.clips.map((c) => `${c.name} ${c.seconds.toFixed(1)} s`).join(', ')}), in rotation`,
    `- each level: warm-up ≥ ${r.warmupS} s and until every stream has finished a request; then a window of ≥ ${r.durationS} s from a request's end to another's, over whole rounds of the streams (completions a multiple of the streams); one stream is an SSE probe (first delta)`,
    `- before the first level: every clip transcribed once, ${r.primeStreams} at a time (${fixed(r.primeS, 1)} s, not measured)`,
    ...(byRound ? [`- ${r.rounds} rounds over the levels, every other one in reverse order`] : []),
    `- peak RSS of the service over the run (VmHWM): ${fixed(r.peakRssMiB, 0)} MiB`,
    '',
    `|${roundHead} streams | done | req/s | audio s/s | RTF (wall/audio) | p50 | p95 | p99 | first delta p50 (n) | 429 / 503 | other non-2xx | errors | peak RSS MiB | load avg |`,
    `|${roundRule}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|`,
    ...r.levels.map((l) =>
      row([
        ...roundCell(l),
        l.concurrency,
        l.completed,
        fixed(l.requestsPerSecond, 2),
        fixed(l.audioSecondsPerSecond, 2),
        fixed(l.realTimeFactor, 3),
        time(l.latencyMs?.p50),
        time(l.latencyMs?.p95),
        time(l.latencyMs?.p99),
        l.firstDeltaMs ? `${time(l.firstDeltaMs.p50)} (${l.firstDeltaMs.n})` : '–',
        `${l.rejected[429]} / ${l.rejected[503]}`,
        l.non2xx - l.rejected[429] - l.rejected[503],
        l.errors,
        fixed(l.peakRssMiB, 0),
        fixed(l.loadAverage, 1),
      ]),
    ),
    '',
  ];
  if (r.levels.some((l) => l.rejected[429] > 0)) {
    lines.push('Some requests were refused with 429 and retried at once (autocannon does not back off): those levels measure admission under a storm of retries, not throughput; raise MAX_QUEUE to measure throughput.', '');
  }
  if (r.levels.some((l) => l.stages)) {
    lines.push(
      'Per-stage breakdown reported by the workers (mean per request over the window; a decode step is a request-step: sum of step wall times / steps):',
      '',
      `|${roundHead} streams | audio decode | features | encoder | prefill | decode step | host share of a step | mean batch | tokens/s |`,
      `|${roundRule}---:|---:|---:|---:|---:|---:|---:|---:|---:|`,
      ...r.levels.map((l) =>
        l.stages
          ? row([
              ...roundCell(l),
              l.concurrency,
              stageMs(l, 'audio_decode'),
              stageMs(l, 'features'),
              stageMs(l, 'encoder'),
              stageMs(l, 'prefill'),
              time(l.stages.stepMs),
              l.stages.hostShare === null ? '–' : `${(l.stages.hostShare * 100).toFixed(1)} %`,
              fixed(l.stages.meanBatch, 2),
              fixed(l.tokensPerSecond, 1),
            ])
          : row([...roundCell(l), l.concurrency, NO_STAGE_METRICS, '', '', '', '', '', '', fixed(l.tokensPerSecond, 1)]),
      ),
      '',
    );
  } else {
    lines.push(`Per-stage breakdown: ${NO_STAGE_METRICS}.${r.levels.some((l) => l.tokensPerSecond !== null) ? ` Tokens/s: ${r.levels.map((l) => `${byRound ? `round ${l.round}, ` : ''}${l.concurrency}: ${fixed(l.tokensPerSecond, 1)}`).join(', ')}.` : ''}`, '');
  }
  if (r.acrossRounds) {
    const first = r.acrossRounds[0]!.concurrency;
    lines.push(
      `Over the ${r.rounds} rounds (audio s/s; each level against ${first} stream(s) within the same round, then the median of those ratios):`,
      '',
      `| streams | audio s/s median | min | max | x ${first} stream(s): median | each round |`,
      '|---:|---:|---:|---:|---:|---|',
      ...r.acrossRounds.map((a) =>
        row([
          a.concurrency,
          fixed(a.audioSecondsPerSecond.median, 2),
          fixed(a.audioSecondsPerSecond.min, 2),
          fixed(a.audioSecondsPerSecond.max, 2),
          a.ratioToFirst ? `${fixed(a.ratioToFirst.median, 2)}x` : '–',
          a.ratioToFirst ? a.ratioToFirst.rounds.map((x) => `${fixed(x, 2)}x`).join(', ') : `${first} stream(s) finished nothing in some round`,
        ]),
      ),
      '',
    );
  }
  return lines.join('\n');
}
