import cliProgress from 'cli-progress';

/** What a download reports while it runs. */
export interface FileProgress {
  start(total: number, alreadyHave: number): void;
  advance(bytes: number): void;
  done(): void;
  fail(): void;
  /** another process holds the file's lock; this one waits for it */
  waiting?(): void;
  /** an attempt failed (dropped, stalled, 5xx); the next one resumes after delayMs */
  retrying?(error: string, delayMs: number): void;
}

export interface Progress {
  file(label: string): FileProgress;
}

/** pino's calling convention, so the server passes its logger and the CLI a stderr writer. */
export interface DownloadLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
}

const MB = 1024 * 1024;
const mb = (bytes: number) => Math.round((bytes / MB) * 10) / 10;

/** How often a file still downloading gets a line of its own. */
const PROGRESS_EVERY_MS = 30_000;

/**
 * Log lines (the server's logs, the CLI off a terminal): one per finished file with size, time and rate, and
 * while a file downloads one every 30 s with bytes so far, rate and ETA, so a 2 GB file is not minutes of silence.
 */
export function logProgress(logger: DownloadLogger, o: { everyMs?: number } = {}): Progress {
  const everyMs = o.everyMs ?? PROGRESS_EVERY_MS;
  return {
    file(label) {
      let total = 0;
      let have = 0;
      let fetched = 0;
      const t0 = Date.now();
      let lastLine = t0;
      const rate = () => fetched / Math.max((Date.now() - t0) / 1000, 0.001);
      return {
        start(t, already) {
          total = t;
          have = already;
          if (already > 0) logger.info({ file: label, megabytes: mb(total), resumeAtMegabytes: mb(already) }, 'resuming download');
        },
        advance(n) {
          have += n;
          fetched += n;
          if (Date.now() - lastLine < everyMs) return;
          lastLine = Date.now();
          const perSecond = rate();
          logger.info(
            {
              file: label,
              megabytes: mb(have),
              totalMegabytes: mb(total),
              percent: Math.floor((have / Math.max(total, 1)) * 100),
              megabytesPerSecond: mb(perSecond),
              etaSeconds: perSecond > 0 ? Math.round((total - have) / perSecond) : null,
            },
            'download progress',
          );
        },
        done() {
          const seconds = (Date.now() - t0) / 1000;
          logger.info({ file: label, megabytes: mb(total), fetchedMegabytes: mb(fetched), seconds, megabytesPerSecond: mb(fetched / Math.max(seconds, 0.001)) }, 'downloaded');
        },
        fail: () => {},
        waiting: () => logger.info({ file: label }, 'waiting for another process downloading this file'),
        retrying: (error, delayMs) => logger.warn({ file: label, error, retryInSeconds: delayMs / 1000 }, 'download interrupted, resuming'),
      };
    },
  };
}

/** A bar per file with rate and ETA, on a terminal (cli-progress draws it on stderr). */
export function barProgress(): Progress {
  return {
    file(label) {
      const bar = new cliProgress.SingleBar(
        {
          format: `${label} [{bar}] {percentage}% | {done}/{size} MB | {rate} MB/s | ETA {eta_formatted}`,
          // a hidden cursor stays hidden when Ctrl-C ends the process mid-download
          hideCursor: false,
          etaBuffer: 50,
        },
        cliProgress.Presets.shades_classic,
      );
      let value = 0;
      let t0 = Date.now();
      let from = 0;
      const payload = (total: number) => ({ done: mb(value), size: mb(total), rate: mb((value - from) / Math.max((Date.now() - t0) / 1000, 0.001)) });
      let total = 0;
      return {
        start(t, have) {
          total = t;
          value = from = have;
          t0 = Date.now();
          bar.start(total, value, payload(total));
        },
        advance(n) {
          value += n;
          from = Math.min(from, value); // a download that starts again from zero goes back (n < 0)
          bar.update(value, payload(total));
        },
        done: () => bar.stop(),
        fail: () => bar.stop(),
        waiting: () => process.stderr.write(`${label}: waiting for another process downloading this file\n`),
      };
    },
  };
}
