import { describe, expect, it } from 'vitest';
import { NO_STAGE_METRICS, parseMetrics, stageBreakdown } from '../../bench/report-metrics.js';
import { levelOrder } from '../../bench/bench-level.js';
import { acrossRounds, type LevelResult } from '../../bench/report.js';
import { median, percentile } from '../../bench/stats.js';

/** A /metrics exposition as prom-client writes it, with the stage histogram and step counters at given totals. */
function exposition(o: { steps: number; rows: number; stepSeconds: number; hostSeconds: number; encoderSeconds: number; requests: number }) {
  const stage = (name: string, sum: number) =>
    [
      `asr_stage_seconds_bucket{le="0.1",stage="${name}"} 1`,
      `asr_stage_seconds_bucket{le="+Inf",stage="${name}"} ${o.requests}`,
      `asr_stage_seconds_sum{stage="${name}"} ${sum}`,
      `asr_stage_seconds_count{stage="${name}"} ${o.requests}`,
    ].join('\n');
  return [
    '# HELP asr_stage_seconds Time per request in each stage',
    '# TYPE asr_stage_seconds histogram',
    stage('encoder', o.encoderSeconds),
    stage('decode_steps', o.stepSeconds),
    stage('decode_steps_host', o.hostSeconds),
    '# TYPE asr_decode_steps_total counter',
    `asr_decode_steps_total ${o.steps}`,
    `asr_decode_step_rows_total ${o.rows}`,
    'process_resident_memory_bytes 123456789',
    `http_requests_total{route="/v1/audio/transcriptions",method="POST",status="200",format="json"} 3`,
    `http_requests_total{route="/metrics",method="GET",status="200",format=""} 4`,
  ].join('\n');
}

describe('bench stage breakdown from two /metrics scrapes', () => {
  it('takes deltas: per-request stage means, per-step wall time, host share and mean batch', () => {
    const before = parseMetrics(exposition({ steps: 100, rows: 100, stepSeconds: 10, hostSeconds: 2, encoderSeconds: 4, requests: 2 }));
    // in the window: 3 requests, 40 request-steps of which 10 alone and 30 in batches of 3 (rows 10 + 90)
    const after = parseMetrics(exposition({ steps: 140, rows: 200, stepSeconds: 14, hostSeconds: 2.4, encoderSeconds: 4.9, requests: 5 }));
    expect(after.get('http_requests_total')).toBe(7); // label sets without a stage are summed
    const b = stageBreakdown(before, after)!;
    expect(b.stages.encoder).toEqual({ count: 3, meanMs: expect.closeTo(300, 9) });
    expect(b.stages.decode_steps!.meanMs).toBeCloseTo(4000 / 3, 9);
    expect(b.stages.prefill).toBeUndefined(); // not reported in the window
    expect(b.steps).toBe(40);
    expect(b.stepMs).toBeCloseTo(100, 9);
    expect(b.hostShare).toBeCloseTo(0.1, 9);
    expect(b.meanBatch).toBeCloseTo(2.5, 9);
  });

  it('says so when the server exports no stage metrics (commits before issue 8)', () => {
    const old = parseMetrics('# TYPE asr_decoded_tokens_total counter\nasr_decoded_tokens_total 42\n');
    expect(old.get('asr_decoded_tokens_total')).toBe(42);
    expect(stageBreakdown(old, old)).toBeUndefined();
    expect(NO_STAGE_METRICS).toBe('stage metrics not reported by this server');
  });

  it('reports nulls rather than dividing by zero when no step ran in the window', () => {
    const same = parseMetrics(exposition({ steps: 5, rows: 5, stepSeconds: 1, hostSeconds: 0.1, encoderSeconds: 1, requests: 1 }));
    expect(stageBreakdown(same, same)).toEqual({ stages: {}, steps: 0, stepMs: null, hostShare: null, meanBatch: null });
  });
});

describe('percentile (nearest rank)', () => {
  it('picks ranks, never interpolates', () => {
    const xs = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 95)).toBe(100);
    expect(percentile(xs, 99)).toBe(100);
    expect(percentile([7], 99)).toBe(7);
    expect(() => percentile([], 50)).toThrow();
  });
});

describe('rounds over the levels', () => {
  it('runs every other round in reverse order', () => {
    expect(levelOrder([1, 8], 3).map((l) => `${l.round}:${l.concurrency}`)).toEqual(['1:1', '1:8', '2:8', '2:1', '3:1', '3:8']);
    expect(levelOrder([1, 2, 4], 1).map((l) => l.concurrency)).toEqual([1, 2, 4]);
  });

  it('takes the median of an odd count, the mean of the middle two of an even one', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(() => median([])).toThrow();
  });

  it('sets each level against the first one within the same round, not against another round', () => {
    const level = (round: number, concurrency: number, aps: number) => ({ round, concurrency, audioSecondsPerSecond: aps }) as LevelResult;
    // round 2 ran on a machine twice as fast: across rounds the ratio would be 4x or 1x, within each it is 2x
    const levels = [level(1, 1, 1), level(1, 8, 2), level(2, 8, 4), level(2, 1, 2), level(3, 1, 1), level(3, 8, 2.6)];
    const [one, eight] = acrossRounds([1, 8], levels);
    expect(one).toEqual({ concurrency: 1, audioSecondsPerSecond: { median: 1, min: 1, max: 2 }, ratioToFirst: { rounds: [1, 1, 1], median: 1 } });
    expect(eight!.audioSecondsPerSecond).toEqual({ median: 2.6, min: 2, max: 4 });
    expect(eight!.ratioToFirst!.rounds).toEqual([2, 2, 2.6]);
    expect(eight!.ratioToFirst!.median).toBe(2);
  });

  it('gives no ratio when the first level finished nothing in a round, and names a level missing from a round', () => {
    const level = (round: number, concurrency: number, aps: number) => ({ round, concurrency, audioSecondsPerSecond: aps }) as LevelResult;
    const [, eight] = acrossRounds([1, 8], [level(1, 1, 0), level(1, 8, 2), level(2, 8, 4), level(2, 1, 2)]);
    expect(eight!.ratioToFirst).toBeNull();
    expect(eight!.audioSecondsPerSecond.median).toBe(3);
    expect(() => acrossRounds([1, 8], [level(1, 1, 1), level(1, 8, 2), level(2, 1, 1)])).toThrow('no level of 8 streams in round 2');
  });
});
