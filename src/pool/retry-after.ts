/** before any task has finished */
const INITIAL_TASK_MS = 5000;

const clampRetry = (seconds: number) => Math.min(60, Math.max(1, Math.ceil(seconds)));

/** Retry-After for a refused request, from how long recent transcriptions took. */
export class RetryEstimate {
  private avgTaskMs = INITIAL_TASK_MS;
  private samples = 0;

  /** A finished (not cancelled) transcription's duration in its worker. */
  record(ms: number): void {
    this.samples++;
    this.avgTaskMs = this.samples === 1 ? ms : this.avgTaskMs + 0.2 * (ms - this.avgTaskMs);
  }

  /**
   * Seconds until the requests admitted ahead have been through: `capacity` sequences decode at once, each
   * taking about the recent average (which already includes the slowdown of sharing a batch). In [1, 60].
   */
  seconds(admitted: number, capacity: number): number {
    const lanes = Math.max(1, capacity);
    const ahead = Math.max(1, admitted - lanes + 1);
    return clampRetry((ahead * this.avgTaskMs) / lanes / 1000);
  }
}
