/**
 * One model stage at a time per engine, first come first served. onnxruntime-node's session.run() defers its
 * synchronous run with setImmediate, so a clock started before the await would also count whatever else the
 * worker's event loop ran first (another request's log-mel, its encoder): a stage timed while holding this lock
 * is timed alone. Hold it only around a stage's own work, never across an await on something that needs it.
 */
export class StageLock {
  private held = false;
  private readonly queue: (() => void)[] = [];

  /** Runs `stage` once the lock is free; the lock is released when it settles, also on error. */
  async run<T>(stage: () => Promise<T> | T): Promise<T> {
    await this.acquire();
    try {
      return await stage();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (!this.held) {
      this.held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.queue.push(resolve));
  }

  private release(): void {
    const next = this.queue.shift();
    // The lock passes straight to the next waiter: nobody can slip in between.
    if (next) next();
    else this.held = false;
  }
}
