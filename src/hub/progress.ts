import cliProgress from 'cli-progress';

/** What a download reports while it runs. */
export interface FileProgress {
  start(total: number, alreadyHave: number): void;
  advance(bytes: number): void;
  done(): void;
  fail(): void;
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

/** One log line per finished file: size, time and rate (the server's logs, the CLI off a terminal). */
export function logProgress(logger: DownloadLogger): Progress {
  return {
    file(label) {
      let total = 0;
      let fetched = 0;
      const t0 = Date.now();
      return {
        start: (t) => void (total = t),
        advance: (n) => void (fetched += n),
        done() {
          const seconds = (Date.now() - t0) / 1000;
          logger.info({ file: label, megabytes: mb(total), fetchedMegabytes: mb(fetched), seconds, megabytesPerSecond: mb(fetched / Math.max(seconds, 0.001)) }, 'downloaded');
        },
        fail: () => {},
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
          hideCursor: true,
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
      };
    },
  };
}
