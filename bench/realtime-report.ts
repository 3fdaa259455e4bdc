import type { SessionRecord, TurnMode } from './realtime-session.js';
import type { StageBreakdown } from './report-metrics.js';
import { percentile } from './stats.js';

/** What one level (N sessions at once) measured, as written to the JSON. Times in ms unless named otherwise. */
export interface RealtimeLevel {
  sessions: number;
  wallS: number;
  /** seconds of audio sent over all sessions */
  audioSeconds: number;
  turns: { completed: number; failed: number; unfinished: number; completedPerSession: { min: number; mean: number } };
  deltas: number;
  /** deltas that arrived before their turn's last audio was sent: text while the speaker was still talking */
  deltasWhileSpeaking: number;
  /** completed turns whose transcript is not their deltas joined (must be 0) */
  mismatches: number;
  /** `error` events and connection errors */
  errors: number;
  /** sessions the server closed before they were done (e.g. 1013 beyond MAX_REALTIME_SESSIONS) */
  brokenCloses: number;
  /** the first few distinct problems, for the reader */
  problems: string[];
  /** the server's own figure (realtime_partial_latency_seconds over the level): from the arrival of the last audio
   *  sample a delta's text covers to the delta; quantiles interpolated in the histogram's buckets */
  partialLatencyMs: Quantiles | null;
  /** client side: from sending the turn's last audio (speech_stopped's audio_end_ms, or the commit) to its transcript */
  finalLatencyMs: Quantiles | null;
  /** client side: from sending the turn's first audio to its first delta */
  firstDeltaMs: Quantiles | null;
  /** completed turns by length (first to last audio sent) */
  byTurnLength: { fromS: number; toS: number | null; turns: number; deltasPerTurn: number; finalLatencyMs: Quantiles | null }[];
  /** deltas by when they arrived, in seconds into their turn; gap: time since the turn's previous text (or its start) */
  byPosition: { fromS: number; toS: number | null; deltas: number; gapMs: Quantiles | null }[];
  /** realtime_dropped_audio_seconds_total over the level */
  droppedAudioSeconds: number | null;
  /** what the workers did over the level (asr_stage_seconds and decode-step counters): each partial and each final
   *  is one transcription, so the encoder's count is the transcriptions run */
  stages: StageBreakdown | null;
  peakRssMiB: number | null;
  loadAverage: number;
}

export interface Quantiles {
  n: number;
  p50: number;
  p95: number;
}

export interface RealtimeReport {
  date: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string };
  server: { dir: string; ready: Record<string, unknown>; log: string };
  modelDir: string;
  env: Record<string, string>;
  clips: { name: string; seconds: number }[];
  turns: TurnMode;
  /** audio each session plays (whole clips) */
  secondsPerSession: number;
  /** the partial-latency p95 a level must stay under to count as held */
  boundMs: number;
  /** the largest level held: every turn transcribed, no errors or refusals, partial p95 within the bound */
  holds: number | null;
  peakRssMiB: number | null;
  levels: RealtimeLevel[];
}

function quantiles(values: number[]): Quantiles | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return { n: sorted.length, p50: percentile(sorted, 50), p95: percentile(sorted, 95) };
}

/** Cumulative bucket counts of one histogram, by upper bound (Infinity for +Inf), from a Prometheus text exposition. */
export function histogramBuckets(text: string, name: string): Map<number, number> {
  const buckets = new Map<number, number>();
  const line = new RegExp(`^${name}_bucket\\{(?:[^}]*,)?le="([^"]+)"[^}]*\\}\\s+(\\S+)`);
  for (const l of text.split('\n')) {
    const m = line.exec(l);
    if (!m) continue;
    const le = m[1] === '+Inf' ? Infinity : Number(m[1]);
    buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]));
  }
  return buckets;
}

/**
 * p50/p95 of what a histogram counted between two scrapes, in ms: linear within the bucket that holds the rank
 * (as Prometheus' histogram_quantile); a rank in the +Inf bucket reads as the last finite bound.
 */
export function histogramQuantiles(before: Map<number, number>, after: Map<number, number>): Quantiles | null {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const counts = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0));
  const total = counts.at(-1) ?? 0;
  if (total <= 0) return null;
  const at = (q: number) => {
    const rank = q * total;
    const i = counts.findIndex((c) => c >= rank);
    const upper = bounds[i]!;
    const lower = i === 0 ? 0 : bounds[i - 1]!;
    if (upper === Infinity) return lower * 1000;
    const below = i === 0 ? 0 : counts[i - 1]!;
    const inBucket = counts[i]! - below;
    return (lower + (inBucket > 0 ? ((rank - below) / inBucket) * (upper - lower) : 0)) * 1000;
  };
  return { n: total, p50: at(0.5), p95: at(0.95) };
}

const BUCKET_S = 2;
const LAST_BUCKET_S = 8;
const bucketOf = (seconds: number) => Math.min(Math.floor(seconds / BUCKET_S) * BUCKET_S, LAST_BUCKET_S);
const BUCKETS = Array.from({ length: LAST_BUCKET_S / BUCKET_S + 1 }, (_, i) => i * BUCKET_S);
const bucketRange = (fromS: number) => ({ fromS, toS: fromS === LAST_BUCKET_S ? null : fromS + BUCKET_S });

export function summariseLevel(
  sessions: number,
  records: SessionRecord[],
  o: {
    wallS: number;
    partial: { before: Map<number, number>; after: Map<number, number> };
    droppedAudioSeconds: number | null;
    stages: StageBreakdown | null;
    peakRssMiB: number | null;
    loadAverage: number;
  },
): RealtimeLevel {
  const turns = records.flatMap((r) => r.turns);
  const completed = turns.filter((t) => t.completedAt !== undefined);
  const ended = completed.filter((t) => t.endedAt !== undefined);
  const problems = [
    ...records.flatMap((r) => r.errors),
    ...records.flatMap((r) => (r.brokenClose ? [`closed by the server: ${r.brokenClose.code} ${r.brokenClose.reason}`] : [])),
    ...turns.flatMap((t) => (t.failed ? [`turn failed: ${t.failed}`] : [])),
  ];
  const perSession = records.map((r) => r.turns.filter((t) => t.completedAt !== undefined).length);
  return {
    sessions,
    wallS: o.wallS,
    audioSeconds: records.reduce((s, r) => s + r.audioSeconds, 0),
    turns: {
      completed: completed.length,
      failed: turns.filter((t) => t.failed !== undefined).length,
      unfinished: records.reduce((s, r) => s + r.unfinished, 0),
      completedPerSession: { min: Math.min(...perSession), mean: perSession.reduce((a, b) => a + b, 0) / records.length },
    },
    deltas: turns.reduce((s, t) => s + t.deltas.length, 0),
    deltasWhileSpeaking: ended.reduce((s, t) => s + t.deltas.filter((at) => at < t.endedAt! - t.startedAt).length, 0),
    mismatches: completed.filter((t) => t.transcript !== t.text).length,
    errors: records.reduce((s, r) => s + r.errors.length, 0),
    brokenCloses: records.filter((r) => r.brokenClose).length,
    problems: [...new Set(problems)].slice(0, 5),
    partialLatencyMs: histogramQuantiles(o.partial.before, o.partial.after),
    finalLatencyMs: quantiles(ended.map((t) => t.completedAt! - t.endedAt!)),
    firstDeltaMs: quantiles(turns.flatMap((t) => t.deltas.slice(0, 1))),
    byTurnLength: BUCKETS.map((fromS) => {
      const inBucket = ended.filter((t) => bucketOf((t.endedAt! - t.startedAt) / 1000) === fromS);
      return {
        ...bucketRange(fromS),
        turns: inBucket.length,
        deltasPerTurn: inBucket.length ? inBucket.reduce((s, t) => s + t.deltas.length, 0) / inBucket.length : 0,
        finalLatencyMs: quantiles(inBucket.map((t) => t.completedAt! - t.endedAt!)),
      };
    }),
    byPosition: BUCKETS.map((fromS) => {
      const gaps = turns.flatMap((t) => t.deltas.flatMap((at, i) => (bucketOf(at / 1000) === fromS ? [at - (i ? t.deltas[i - 1]! : 0)] : [])));
      return { ...bucketRange(fromS), deltas: gaps.length, gapMs: quantiles(gaps) };
    }),
    droppedAudioSeconds: o.droppedAudioSeconds,
    stages: o.stages,
    peakRssMiB: o.peakRssMiB,
    loadAverage: o.loadAverage,
  };
}

/** A level is held when every turn was transcribed without errors or refusals and partial p95 is within the bound. */
export function held(l: RealtimeLevel, boundMs: number): boolean {
  const clean = l.errors === 0 && l.brokenCloses === 0 && l.turns.failed === 0 && l.turns.unfinished === 0 && l.turns.completed > 0;
  return clean && l.partialLatencyMs !== null && l.partialLatencyMs.p95 <= boundMs;
}

const fixed = (x: number | null | undefined, digits: number) => (x === null || x === undefined ? '–' : x.toFixed(digits));
const time = (ms: number | null | undefined) => (ms === null || ms === undefined ? '–' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
const pair = (q: Quantiles | null) => (q ? `${time(q.p50)} / ${time(q.p95)}` : '–');
const row = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
const range = (b: { fromS: number; toS: number | null }) => (b.toS === null ? `≥ ${b.fromS} s` : `${b.fromS}–${b.toS} s`);

export function renderMarkdown(r: RealtimeReport): string {
  const env = Object.entries(r.env).map(([k, v]) => `${k}=${v}`).join(' ') || 'defaults';
  const lines = [
    `## mega-asr bench:realtime — ${r.date}`,
    '',
    `- machine: ${r.machine.cpus} × ${r.machine.cpuModel}, ${r.machine.memoryGiB.toFixed(0)} GiB, Node ${r.machine.node}, ${r.machine.platform}`,
    `- server: ${r.server.dir}; env: ${env}`,
    `- model: ${r.modelDir}`,
    `- each session plays ≥ ${r.secondsPerSession} s of clips in real time (24 kHz PCM16, an append every 100 ms), from ${r.clips.length} clips in rotation (${r.clips.map((c) => `${c.name} ${c.seconds.toFixed(1)} s`).join(', ')}); turns: ${r.turns === 'vad' ? 'server_vad (1 s of silence after each clip)' : 'turn_detection null, a commit at the end of each clip'}`,
    `- partial latency: the server's histogram (realtime_partial_latency_seconds: from the last audio sample a delta covers to the delta); final: from sending a turn's last audio${r.turns === 'vad' ? " (speech_stopped's audio_end_ms, so it includes the 500 ms of silence server_vad waits for)" : ' (the commit)'} to its completed transcript, seen by the client`,
    `- **live streams one worker holds: ${r.holds ?? 'none of the levels tried'}** (largest level with every turn transcribed, no errors or refusals, partial p95 ≤ ${time(r.boundMs)}); peak RSS of the service (VmHWM): ${fixed(r.peakRssMiB, 0)} MiB`,
    '',
    '| sessions | turns done (per session min / mean) | deltas (while speaking) | partial p50 / p95 | first delta p50 / p95 | final p50 / p95 | failed / unfinished | errors | refused | dropped audio s | final ≠ deltas | transcriptions run (encoder / prefill / step mean, mean batch) | peak RSS MiB | load avg |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...r.levels.map((l) =>
      row([
        l.sessions,
        `${l.turns.completed} (${l.turns.completedPerSession.min} / ${fixed(l.turns.completedPerSession.mean, 1)})`,
        `${l.deltas} (${l.deltasWhileSpeaking})`,
        pair(l.partialLatencyMs),
        pair(l.firstDeltaMs),
        pair(l.finalLatencyMs),
        `${l.turns.failed} / ${l.turns.unfinished}`,
        l.errors,
        l.brokenCloses,
        fixed(l.droppedAudioSeconds, 1),
        l.mismatches,
        l.stages
          ? `${l.stages.stages.encoder?.count ?? 0} (${time(l.stages.stages.encoder?.meanMs)} / ${time(l.stages.stages.prefill?.meanMs)} / ${time(l.stages.stepMs)}, ${fixed(l.stages.meanBatch, 2)})`
          : '–',
        fixed(l.peakRssMiB, 0),
        fixed(l.loadAverage, 1),
      ]),
    ),
    '',
    'With turn length: final latency (p50 / p95) by the length of the turn, and the time between one delta and the turn\'s previous text (p50 / p95) by when the delta arrived in its turn (each partial re-transcribes the whole turn so far, so both grow with it):',
    '',
    `| sessions | ${BUCKETS.map((b) => `turns ${range(bucketRange(b))}: n, final`).join(' | ')} | ${BUCKETS.map((b) => `deltas at ${range(bucketRange(b))}: n, gap`).join(' | ')} |`,
    `|---:|${BUCKETS.map(() => '---:|').join('')}${BUCKETS.map(() => '---:|').join('')}`,
    ...r.levels.map((l) =>
      row([
        l.sessions,
        ...l.byTurnLength.map((b) => (b.turns ? `${b.turns}, ${pair(b.finalLatencyMs)}` : '–')),
        ...l.byPosition.map((b) => (b.deltas ? `${b.deltas}, ${pair(b.gapMs)}` : '–')),
      ]),
    ),
    '',
  ];
  const problems = r.levels.filter((l) => l.problems.length);
  if (problems.length) {
    lines.push('Problems seen (first few per level):', '', ...problems.map((l) => `- ${l.sessions} sessions: ${l.problems.join('; ')}`), '');
  }
  return lines.join('\n');
}
