import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../../bench/report.js';
import { fixtureModel } from '../support/fixture-models.js';
import { benchScript } from '../support/cli.js';
import { sharedPath } from '../support/shared.js';

const out = mkdtempSync(join(tmpdir(), 'bench-test-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** `npm run bench -- ARGS` as a child process. */
const bench = (args: string[]) => benchScript('bench', args, { timeoutMs: 90_000 });

describe('npm run bench', () => {
  it('drives the real service at each concurrency level, over two rounds, and reports every figure in JSON and Markdown', async () => {
    const clips = sharedPath('fixtures', 'voices-in-the-wild');
    const res = await bench(['--model-dir', fixtureModel('default'), '--clips', clips, '--concurrency', '1,2', '--duration', '2', '--warmup', '0.5', '--rounds', '2', '--out', join(out, 'run.json')]);
    expect(res.stderr).not.toMatch(/bench: (?!starting|priming|\d+ stream|round \d+\/\d+, \d+ stream|wrote|the machine is busy)/);
    expect(res.code).toBe(0);

    const report = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')) as BenchReport;
    expect(report.clips).toHaveLength(8);
    const [shortest, longest] = [Math.min(...report.clips.map((c) => c.seconds)), Math.max(...report.clips.map((c) => c.seconds))];
    // the second round runs the levels in reverse
    expect(report.rounds).toBe(2);
    expect(report.primeStreams).toBe(2); // every clip once before the first level, as many at once as the most streams
    expect(report.levels.map((l) => [l.round, l.concurrency])).toEqual([[1, 1], [1, 2], [2, 2], [2, 1]]);
    for (const l of report.levels) {
      expect(l.completed).toBeGreaterThan(0);
      expect(l.windowS).toBeGreaterThanOrEqual(2);
      expect(l.requestsPerSecond).toBeCloseTo(l.completed / l.windowS, 6);
      // the window spans whole rounds of the streams
      expect(Object.values(l.statuses).reduce((a, b) => a + b, 0) % l.concurrency).toBe(0);
      // audio per request lies between the shortest and the longest clip
      expect(l.audioSecondsPerSecond / l.requestsPerSecond).toBeGreaterThanOrEqual(shortest - 1e-9);
      expect(l.audioSecondsPerSecond / l.requestsPerSecond).toBeLessThanOrEqual(longest + 1e-9);
      expect(l.realTimeFactor).toBeGreaterThan(0);
      expect(l.latencyMs!.p50).toBeGreaterThan(0);
      expect(l.latencyMs!.p50).toBeLessThanOrEqual(l.latencyMs!.p95);
      expect(l.latencyMs!.p95).toBeLessThanOrEqual(l.latencyMs!.p99);
      // the SSE probe got its first delta before its transcription finished
      expect(l.firstDeltaMs!.n).toBeGreaterThan(0);
      expect(l.firstDeltaMs!.p50).toBeLessThanOrEqual(l.latencyMs!.p99);
      expect(l.non2xx).toBe(0);
      expect(l.errors).toBe(0);
      expect(l.peakRssMiB).toBeGreaterThan(50);
      expect(l.tokensPerSecond).toBeGreaterThan(0);
      // the workers' stage times, from /metrics deltas over the window
      const s = l.stages!;
      for (const stage of ['audio_decode', 'features', 'encoder', 'prefill', 'decode_steps'] as const) expect(s.stages[stage]!.meanMs).toBeGreaterThan(0);
      expect(s.steps).toBeGreaterThan(0);
      expect(s.stepMs).toBeGreaterThan(0);
      expect(s.hostShare).toBeGreaterThan(0);
      expect(s.hostShare).toBeLessThan(1);
      expect(s.meanBatch).toBeGreaterThanOrEqual(1);
      expect(s.meanBatch).toBeLessThanOrEqual(l.concurrency);
    }
    expect(report.peakRssMiB).toBeGreaterThanOrEqual(Math.max(...report.levels.map((l) => l.peakRssMiB!)) - 1);
    // each level over the rounds, in --concurrency order; round 1's ratio is round 1's levels', not round 2's
    const aps = (round: number, c: number) => report.levels.find((l) => l.round === round && l.concurrency === c)!.audioSecondsPerSecond;
    expect(report.acrossRounds!.map((a) => a.concurrency)).toEqual([1, 2]);
    const ratio = report.acrossRounds![1]!.ratioToFirst!;
    expect(ratio.rounds[0]).toBeCloseTo(aps(1, 2) / aps(1, 1), 12);
    expect(ratio.rounds[1]).toBeCloseTo(aps(2, 2) / aps(2, 1), 12);

    const markdown = readFileSync(join(out, 'run.md'), 'utf8');
    expect(res.stdout.trim()).toBe(markdown.trim());
    // round, then streams, in the order they ran: 1 then 2 streams, then 2 then 1
    const rounds = [...markdown.matchAll(/^\| (\d) \| (\d) \| \d+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/gm)].map((m) => `${m[1]}:${m[2]}`);
    expect(rounds).toEqual(['1:1', '1:2', '2:2', '2:1']);
    expect(markdown).toContain('| round | streams | audio decode | features | encoder | prefill | decode step |');
    expect(markdown).toContain('Over the 2 rounds');
    expect(markdown).toMatch(/before the first level: every clip transcribed once, 2 at a time \(\d+\.\d s, not measured\)/);
    expect(markdown).toMatch(/^\| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 1\.00x \| 1\.00x, 1\.00x \|$/m);
    expect(markdown).toMatch(/^\| 2 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+x \| [\d.]+x, [\d.]+x \|$/m);
  }, 90_000);

  it('refuses bad arguments with the usage and exit code 2, and a model that does not exist with one line and exit code 1', async () => {
    const usage = await bench(['--concurrency', '1']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('bench: --model-dir is required');
    expect(usage.stderr).toContain('usage: npm run bench');
    const bad = await bench(['--model-dir', join(out, 'nothing-here'), '--concurrency', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--concurrency: expected a positive integer, got "0"');
    const rounds = await bench(['--model-dir', join(out, 'nothing-here'), '--rounds', '1.5']);
    expect(rounds.code).toBe(2);
    expect(rounds.stderr).toContain('--rounds: expected a positive integer, got "1.5"');
    const twice = await bench(['--model-dir', join(out, 'nothing-here'), '--concurrency', '1,8,1']);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toContain('--concurrency: each level once, got "1,8,1"');
    const missing = await bench(['--model-dir', join(out, 'nothing-here'), '--duration', '1']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/bench: the service exited before it was ready .*\n[\s\S]*nothing-here/);
    expect(missing.stderr).not.toMatch(/^\s+at /m);
  }, 60_000);
});
