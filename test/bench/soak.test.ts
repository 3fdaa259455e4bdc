import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SoakReport } from '../../bench/soak.js';
import { judgeIdle, judgeSeries, slope, SERIES, type Sample } from '../../bench/soak-series.js';
import { benchScript } from '../support/cli.js';

const out = mkdtempSync(join(tmpdir(), 'soak-test-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** `npm run soak -- ARGS` as a child process. */
const soak = (args: string[]) => benchScript('soak', args, { timeoutMs: 240_000 });

/** Samples every 5 s for `minutes`, each series flat at `level` plus what `grow` adds at t seconds. */
function samples(minutes: number, grow: Partial<Record<(typeof SERIES)[number], (t: number) => number>> = {}): Sample[] {
  const level = { rssMiB: 400, heapMiB: 25, fds: 50, tempFiles: 0, threads: 14, children: 0 };
  return Array.from({ length: (minutes * 60) / 5 + 1 }, (_, i) => {
    const t = i * 5;
    const s = { t, ...level };
    for (const [k, f] of Object.entries(grow)) s[k as keyof typeof level] += f(t);
    return s;
  });
}

describe('the leak detector', () => {
  it('fits a least-squares slope', () => {
    expect(slope([{ x: 0, y: 1 }, { x: 1, y: 3 }, { x: 2, y: 5 }])).toBeCloseTo(2, 12);
    expect(slope([{ x: 0, y: 1 }, { x: 1, y: 0 }, { x: 2, y: 1 }, { x: 3, y: 0 }])).toBeCloseTo(-0.2, 12);
    expect(slope([{ x: 1, y: 7 }])).toBe(0);
  });

  it('fails a series that grows past its rate and its floor after the warm-up, and passes flat or noisy ones', () => {
    // RSS growing 2 MiB a minute (120 MiB/h) and one fd leaked every 30 s, over 30 minutes after a 5-minute warm-up
    const leaking = judgeSeries(samples(30, { rssMiB: (t) => t / 30, fds: (t) => Math.floor(t / 30) }), 300);
    const bySeries = Object.fromEntries(leaking.map((v) => [v.series, v]));
    expect(bySeries.rssMiB!.slopePerHour).toBeCloseTo(120, 6);
    expect(bySeries.rssMiB!.ok).toBe(false);
    expect(bySeries.fds!.ok).toBe(false);
    expect(bySeries.heapMiB!.ok).toBe(true);
    // a warm-up ramp is not judged; GC-like saw-teeth and a short run's noise are within the floor
    const flat = judgeSeries(samples(30, { rssMiB: (t) => (t < 300 ? t / 3 : 100), heapMiB: (t) => ((t / 5) % 6) * 2 }), 300);
    expect(flat.filter((v) => !v.ok)).toEqual([]);
    expect(flat.every((v) => v.judged)).toBe(true);
    // a window under MIN_JUDGED_MINUTES gives figures, not verdicts: a short run sees the allocators' warm-up
    const short = judgeSeries(samples(0.5, { rssMiB: (t) => t * 2 }), 6);
    const rss = short.find((v) => v.series === 'rssMiB')!;
    expect(rss.slopePerHour).toBeCloseTo(7200, 6);
    expect([rss.judged, rss.ok]).toEqual([false, true]);
    // the same growth over 10 minutes is judged
    expect(judgeSeries(samples(10, { rssMiB: (t) => t * 2 }), 6).find((v) => v.series === 'rssMiB')!.ok).toBe(false);
  });

  it('fails an idle state that did not come back: temp files, children, threads, fds', () => {
    const [start] = samples(0);
    expect(judgeIdle(start!, { ...start!, rssMiB: 500, fds: start!.fds + 3 })).toEqual([]);
    const failures = judgeIdle(start!, { ...start!, tempFiles: 1, children: 2, threads: start!.threads + 1, fds: start!.fds + 10 });
    expect(failures).toHaveLength(4);
  });
});

describe('npm run soak', () => {
  it('drives the real service with the whole mix for half a minute and passes, reporting every series and count', { timeout: 300_000 }, async () => {
    const res = await soak(['--minutes', '0.5', '--fuzz', '60', '--sample-seconds', '2', '--out', join(out, 'run.json')]);
    expect(res.stderr).not.toMatch(/soak: (?!starting|primed|\d|wrote)/);
    expect(res.code, res.stdout.slice(-3000)).toBe(0);
    expect(res.stdout).toContain('# Soak: PASSED');

    const report = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')) as SoakReport;
    expect(report.passed).toBe(true);
    expect(report.failures).toEqual([]);
    expect(report.series.map((s) => s.series)).toEqual([...SERIES]);
    expect(report.samples.length).toBeGreaterThanOrEqual(10);
    for (const s of report.samples) for (const k of SERIES) expect(Number.isFinite(s[k])).toBe(true);
    expect(report.samples[0]!.rssMiB).toBeGreaterThan(50);
    expect(report.samples[0]!.threads).toBeGreaterThan(2);
    // the mix: every format, streams, clients leaving early, slow uploads, hostile requests, realtime sessions
    for (const kind of ['json', 'text', 'srt', 'verbose_json', 'vtt', 'stream']) expect(report.requests.byKind[`${kind} 200`]).toBeGreaterThan(0);
    expect(Object.keys(report.requests.byKind).some((k) => k.startsWith('cancelled'))).toBe(true);
    expect(Object.keys(report.requests.byKind).some((k) => k.startsWith('slow-upload'))).toBe(true);
    expect(report.fuzz.sent).toBeGreaterThanOrEqual(60);
    expect(report.fuzz.byStatus['400']).toBeGreaterThan(0);
    expect(report.realtime['streamed and vanished']).toBeGreaterThan(0);
    // above capacity: some requests were refused
    expect(report.requests.byStatus['429']).toBeGreaterThan(0);
    expect(Object.keys(report.requests.byStatus).filter((s) => /^5|hang/.test(s))).toEqual([]);
    expect(report.idle.end.tempFiles).toBe(0);
    expect(report.idle.end.children).toBe(0);
  });

  it('refuses bad options with the usage (exit 2)', async () => {
    const res = await soak(['--minutes', '0']);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('usage: npm run soak');
  });
});
