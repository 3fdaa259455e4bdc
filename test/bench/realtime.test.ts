import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { RealtimeReport } from '../../bench/realtime-report.js';
import { fixtureModel } from '../support/fixture-models.js';
import { benchScript } from '../support/cli.js';
import { sharedPath } from '../support/shared.js';

const out = mkdtempSync(join(tmpdir(), 'bench-realtime-test-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** `npm run bench:realtime -- ARGS` as a child process. */
const bench = (args: string[]) => benchScript('realtime', args, { timeoutMs: 150_000 });

describe('npm run bench:realtime', () => {
  it('plays real clips in real time over 1 and 2 sessions and reports latencies, turns and the streams held', async () => {
    const clips = sharedPath('fixtures', 'voices-in-the-wild');
    const started = Date.now();
    // One clip per session (at least 1 s of audio means the first whole clip), server_vad ending the turns.
    const res = await bench(['--model-dir', fixtureModel('default'), '--clips', clips, '--sessions', '1,2', '--seconds', '1', '--bound', '30', '--out', join(out, 'run.json')]);
    expect(res.stderr).not.toMatch(/bench:realtime: (?!starting|warming|\d+ session|wrote|the machine is busy)/);
    expect(res.code).toBe(0);

    const report = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')) as RealtimeReport;
    expect(report.clips).toHaveLength(8);
    expect(report.turns).toBe('vad');
    expect(report.env).toMatchObject({ MAX_REALTIME_SESSIONS: '2', MAX_QUEUE: '4' });
    expect(report.levels.map((l) => l.sessions)).toEqual([1, 2]);
    const clipSeconds = new Map(report.clips.map((c) => [c.name, c.seconds]));
    for (const [i, l] of report.levels.entries()) {
      // Real time: session k plays clip k (sorted by name) plus 1 s of silence, and cannot be done sooner.
      const played = [...clipSeconds.values()].slice(0, l.sessions).map((s) => s + 1);
      expect(l.audioSeconds).toBeCloseTo(played.reduce((a, b) => a + b, 0), 0);
      expect(l.wallS).toBeGreaterThanOrEqual(Math.max(...played) - 0.2);
      // Every session's speech became at least one turn, each with its transcript, which is its deltas joined.
      expect(l.turns.completedPerSession.min).toBeGreaterThanOrEqual(1);
      expect(l.turns.failed + l.turns.unfinished + l.errors + l.brokenCloses + l.mismatches).toBe(0);
      expect(l.problems).toEqual([]);
      // Text while the speaker talks: deltas that arrived before their turn's last audio was sent.
      expect(l.deltasWhileSpeaking).toBeGreaterThan(0);
      expect(l.deltasWhileSpeaking).toBeLessThanOrEqual(l.deltas);
      expect(l.firstDeltaMs!.p50).toBeLessThan(Math.max(...played) * 1000);
      // The server's own partial latency, from its histogram, and the client's final latency: ordered and plausible.
      for (const q of [l.partialLatencyMs!, l.finalLatencyMs!, l.firstDeltaMs!]) {
        expect(q.n).toBeGreaterThan(0);
        expect(q.p50).toBeGreaterThan(0);
        expect(q.p50).toBeLessThanOrEqual(q.p95);
        expect(q.p95).toBeLessThan(30_000);
      }
      expect(l.partialLatencyMs!.n).toBeLessThanOrEqual(l.deltas);
      // server_vad waits 500 ms of silence before it ends a turn: no transcript can come sooner after the speech.
      expect(l.finalLatencyMs!.p50).toBeGreaterThanOrEqual(500);
      // The breakdowns account for every completed turn and every delta.
      expect(l.byTurnLength.reduce((s, b) => s + b.turns, 0)).toBe(l.turns.completed);
      expect(l.byPosition.reduce((s, b) => s + b.deltas, 0)).toBe(l.deltas);
      expect(l.droppedAudioSeconds).toBe(0);
      // The pool ran each turn's final and at least one partial before it.
      expect(l.stages!.stages.encoder!.count).toBeGreaterThan(l.turns.completed);
      expect(l.stages!.meanBatch).toBeGreaterThanOrEqual(1);
      expect(l.peakRssMiB).toBeGreaterThan(50);
      expect(i === 0 || l.audioSeconds > report.levels[i - 1]!.audioSeconds).toBe(true);
    }
    // With a 30 s bound and a clean run, both levels are held.
    expect(report.holds).toBe(2);
    expect(Date.now() - started).toBeLessThan(150_000);

    const markdown = readFileSync(join(out, 'run.md'), 'utf8');
    expect(res.stdout.trim()).toBe(markdown.trim());
    expect(markdown).toContain('**live streams one worker holds: 2**');
    expect(markdown).toMatch(/^\| 1 \| \d+ \(\d+ \/ [\d.]+\) \| \d+ \(\d+\) \| [\d.]+ m?s \/ [\d.]+ m?s \|/m);
    expect(markdown).toMatch(/^\| 2 \| \d+ \(\d+ \/ [\d.]+\) \| \d+ \(\d+\) \|/m);
  }, 160_000);

  it('refuses bad arguments with the usage and exit code 2, and a model that does not exist with one line and exit code 1', async () => {
    const usage = await bench(['--sessions', '1']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('bench:realtime: --model-dir is required');
    expect(usage.stderr).toContain('usage: npm run bench:realtime');
    const turns = await bench(['--model-dir', out, '--turns', 'semantic']);
    expect(turns.code).toBe(2);
    expect(turns.stderr).toContain('--turns: expected vad or commit, got "semantic"');
    const missing = await bench(['--model-dir', join(out, 'no-such-model'), '--sessions', '1', '--clips', sharedPath('fixtures', 'voices-in-the-wild')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/bench:realtime: the service exited before it was ready/);
  }, 60_000);
});
