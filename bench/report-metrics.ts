/**
 * The per-stage breakdown the workers report, read from two scrapes of GET /metrics (before and after a measured
 * window): deltas of asr_stage_seconds{stage} sums and counts, asr_decode_steps_total and
 * asr_decode_step_rows_total. A server without these metrics (older commits) gives `undefined`.
 */

/** The stages the pool records per request (the summed time of that stage for the request). */
export const STAGES = ['audio_decode', 'features', 'encoder', 'prefill', 'decode_steps', 'decode_steps_host'] as const;
export type Stage = (typeof STAGES)[number];

/** Samples of a Prometheus text exposition, summed over every label set except `stage`: `name` or `name{stage}`. */
export type Samples = Map<string, number>;

const SAMPLE = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/;

export function parseMetrics(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (!Number.isFinite(value)) continue;
    const stage = /(?:^|,)\s*stage="([^"]*)"/.exec(m[2] ?? '')?.[1];
    const key = stage === undefined ? m[1]! : `${m[1]}{${stage}}`;
    samples.set(key, (samples.get(key) ?? 0) + value);
  }
  return samples;
}

export interface StageTime {
  /** requests that reported the stage in the window */
  count: number;
  /** mean per request, ms */
  meanMs: number;
}

export interface StageBreakdown {
  stages: Partial<Record<Stage, StageTime>>;
  /** asr_decode_steps_total delta: decode steps summed over requests (a batched step counts once per row) */
  steps: number;
  /** wall time of a decode step as a request sees it: sum(decode_steps) / steps, ms */
  stepMs: number | null;
  /** part of a step spent outside session.run: sum(decode_steps_host) / sum(decode_steps) */
  hostShare: number | null;
  /** rows per step, weighted by the requests in it: asr_decode_step_rows_total / asr_decode_steps_total */
  meanBatch: number | null;
}

export const NO_STAGE_METRICS = 'stage metrics not reported by this server';

/** Deltas between two scrapes; undefined when the server does not export asr_stage_seconds. */
export function stageBreakdown(before: Samples, after: Samples): StageBreakdown | undefined {
  if (![...after.keys()].some((k) => k.startsWith('asr_stage_seconds_count'))) return undefined;
  const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);
  const stages: Partial<Record<Stage, StageTime>> = {};
  for (const stage of STAGES) {
    const count = delta(`asr_stage_seconds_count{${stage}}`);
    if (count > 0) stages[stage] = { count, meanMs: (delta(`asr_stage_seconds_sum{${stage}}`) / count) * 1000 };
  }
  const steps = delta('asr_decode_steps_total');
  const stepSeconds = delta('asr_stage_seconds_sum{decode_steps}');
  const hostSeconds = delta('asr_stage_seconds_sum{decode_steps_host}');
  return {
    stages,
    steps,
    stepMs: steps > 0 ? (stepSeconds / steps) * 1000 : null,
    hostShare: stepSeconds > 0 ? hostSeconds / stepSeconds : null,
    meanBatch: steps > 0 ? delta('asr_decode_step_rows_total') / steps : null,
  };
}
