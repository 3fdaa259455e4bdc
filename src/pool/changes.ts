import { MAX_TIMEOUT_MS } from './worker-script.js';

/** State changes the pool's parts announce, and waiting until a condition over them holds. */
export class Changes {
  private readonly listeners = new Set<() => void>();

  notify(): void {
    for (const check of [...this.listeners]) check();
  }

  /** Resolves true once `done()` holds (checked on every change), false after `timeoutMs`. */
  until(done: () => boolean, timeoutMs?: number): Promise<boolean> {
    return new Promise((resolve) => {
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve(ok);
      };
      const check = () => {
        if (done()) finish(true);
      };
      const timer = timeoutMs === undefined ? undefined : setTimeout(() => finish(false), Math.min(timeoutMs, MAX_TIMEOUT_MS));
      this.listeners.add(check);
      check();
    });
  }
}
