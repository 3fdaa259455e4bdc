import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * What the soak watches in the service's process, and how it decides that something leaks: a least-squares
 * slope per series over the samples after the warm-up, judged against a rate AND an amount (a short run's slope
 * is mostly noise: a leak has to be both sustained and material), plus the idle state at the end against the
 * idle state at the start.
 */

export const SERIES = ['rssMiB', 'heapMiB', 'fds', 'tempFiles', 'threads', 'children'] as const;
export type SeriesName = (typeof SERIES)[number];
export type Sample = { t: number } & Record<SeriesName, number>;

/**
 * Growth limits after the warm-up, per hour and over the measured window. Why these:
 * - rssMiB 50/h: a service restarted daily may not grow past its headroom (~1 GiB over a day's load); glibc
 *   arenas and ORT's allocator move RSS by tens of MiB under bursts, hence the 24 MiB floor.
 * - heapMiB 25/h, 12 floor: the JS heap holds requests in flight; GC makes it saw-tooth by several MiB.
 * - fds 20/h, 8 floor: each connection in flight is an fd, so the count follows the load; a leaked fd per
 *   thousand requests would pass 20/h.
 * - tempFiles, threads, children: they follow the work in flight (a decode's temp dir and ffmpeg child, which
 *   the pool bounds) and never grow with time at all; the floor of 3 is the noise of in-flight work.
 */
export const LIMITS: Record<SeriesName, { perHour: number; floor: number; unit: string }> = {
  rssMiB: { perHour: 50, floor: 24, unit: 'MiB' },
  heapMiB: { perHour: 25, floor: 12, unit: 'MiB' },
  fds: { perHour: 20, floor: 8, unit: 'fds' },
  tempFiles: { perHour: 6, floor: 3, unit: 'files' },
  threads: { perHour: 6, floor: 3, unit: 'threads' },
  children: { perHour: 6, floor: 3, unit: 'processes' },
};

/** Least-squares slope of y over x (units of y per unit of x); 0 with fewer than two distinct x. */
export function slope(points: ReadonlyArray<{ x: number; y: number }>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const p of points) {
    sxy += (p.x - mx) * (p.y - my);
    sxx += (p.x - mx) ** 2;
  }
  return sxx === 0 ? 0 : sxy / sxx;
}

export interface SeriesVerdict {
  series: SeriesName;
  unit: string;
  first: number;
  last: number;
  min: number;
  max: number;
  /** least-squares growth per hour after the warm-up */
  slopePerHour: number;
  /** the fitted growth over the measured window (slope x window) */
  rise: number;
  limitPerHour: number;
  floor: number;
  /** false when the measured window was shorter than MIN_JUDGED_MINUTES: figures only */
  judged: boolean;
  ok: boolean;
}

/**
 * Growth is judged over at least this many minutes after the warm-up. Over less, the allocators' own warm-up (RSS
 * climbs ~100 MiB in the first minute at full concurrency, then levels off) is all a slope would see.
 */
export const MIN_JUDGED_MINUTES = 5;

/** Judges every series over the samples taken at or after `fromT` (seconds since the start). */
export function judgeSeries(samples: readonly Sample[], fromT: number): SeriesVerdict[] {
  const measured = samples.filter((s) => s.t >= fromT);
  const windowH = measured.length > 1 ? (measured.at(-1)!.t - measured[0]!.t) / 3600 : 0;
  const judged = windowH * 60 >= MIN_JUDGED_MINUTES;
  return SERIES.map((series) => {
    const ys = measured.map((s) => s[series]);
    const perHour = slope(measured.map((s) => ({ x: s.t / 3600, y: s[series] })));
    const { perHour: limitPerHour, floor, unit } = LIMITS[series];
    const rise = perHour * windowH;
    return {
      series,
      unit,
      first: ys[0] ?? NaN,
      last: ys.at(-1) ?? NaN,
      min: Math.min(...ys),
      max: Math.max(...ys),
      slopePerHour: perHour,
      rise,
      limitPerHour,
      floor,
      judged,
      ok: !judged || !(perHour > limitPerHour && rise > floor),
    };
  });
}

/** Idle at the end vs idle at the start: what must have come back (as a list of failures; empty when all did). */
export function judgeIdle(start: Sample, end: Sample): string[] {
  const failures: string[] = [];
  if (end.tempFiles > start.tempFiles) failures.push(`${end.tempFiles - start.tempFiles} temp file(s) left in the service's temp dir when idle`);
  if (end.children > start.children) failures.push(`${end.children} child process(es) alive when idle (${start.children} at the start)`);
  if (end.threads > start.threads) failures.push(`${end.threads} threads when idle (${start.threads} at the start)`);
  // a few fds may open lazily (a log file, a cache) but not one per request
  if (end.fds > start.fds + 4) failures.push(`${end.fds} open fds when idle (${start.fds} at the start)`);
  return failures;
}

/** The series as /proc shows them (Linux): RSS and threads from status, fds, child processes, temp dir entries. */
export function procSample(pid: number, tempDir: string): Omit<Sample, 't' | 'heapMiB'> {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  let children = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      children += readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean).length;
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return {
    rssMiB: field('VmRSS') / 1024,
    threads: field('Threads'),
    fds: readdirSync(`/proc/${pid}/fd`).length,
    children,
    tempFiles: readdirSync(tempDir).length,
  };
}

/** What a process's open fds are, counted by kind (`socket 12, pipe 4, /dev/null 3…`), to say what an fd rise is. */
export function fdKinds(pid: number): string {
  const kinds: Record<string, number> = {};
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed between the listing and the read
    }
    // socket:[123], pipe:[456], anon_inode:[eventfd] -> their kind; a file keeps its path
    const kind = /^(\w+):\[/.exec(target)?.[1] ?? target;
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return Object.entries(kinds)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
}
