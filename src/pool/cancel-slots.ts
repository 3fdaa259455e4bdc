import type { CancelReason } from './result.js';

/** The value a cancel cell holds: 0 keeps the task going; anything else stops it and says why. */
const REASON_VALUE: Record<CancelReason, number> = { client: 1, shutdown: 2 };
const REASON_OF = new Map(Object.entries(REASON_VALUE).map(([reason, value]) => [value, reason as CancelReason]));

/** The shared memory the worker threads see (structured clone shares a SharedArrayBuffer, never copies it). */
export interface CancelCells {
  /** Int32 per slot, written by the pool: why the task holding the slot must stop (0: it need not) */
  cancel: SharedArrayBuffer;
  /** Int32 per slot, written by the worker: the threadId running the task holding the slot (0: not running) */
  running: SharedArrayBuffer;
}

/**
 * One slot per admitted request, so its task can be cancelled cooperatively: running inference is never
 * interrupted, the worker reads the cell between decode steps.
 */
export class CancelSlots {
  readonly cells: CancelCells;
  private readonly cancelFlags: Int32Array;
  private readonly runningOn: Int32Array;
  private readonly free: number[];

  constructor(size: number) {
    this.cells = {
      cancel: new SharedArrayBuffer(size * Int32Array.BYTES_PER_ELEMENT),
      running: new SharedArrayBuffer(size * Int32Array.BYTES_PER_ELEMENT),
    };
    this.cancelFlags = new Int32Array(this.cells.cancel);
    this.runningOn = new Int32Array(this.cells.running);
    this.free = Array.from({ length: size }, (_, i) => size - 1 - i);
  }

  /** A cleared slot, or undefined when every slot is taken. */
  take(): number | undefined {
    const slot = this.free.pop();
    if (slot !== undefined) this.clear(slot);
    return slot;
  }

  /** Before a task starts under the slot: not cancelled, not running. */
  clear(slot: number): void {
    Atomics.store(this.cancelFlags, slot, 0);
    Atomics.store(this.runningOn, slot, 0);
  }

  give(slot: number): void {
    this.free.push(slot);
  }

  /** The first reason given sticks: a client that left before the shutdown cancelled its task stays the reason. */
  cancel(slot: number, reason: CancelReason): void {
    Atomics.compareExchange(this.cancelFlags, slot, 0, REASON_VALUE[reason]);
  }

  reason(slot: number): CancelReason | undefined {
    return REASON_OF.get(Atomics.load(this.cancelFlags, slot));
  }

  /** The threadId of the worker running the slot's task; 0 while it waits. */
  thread(slot: number): number {
    return Atomics.load(this.runningOn, slot);
  }
}
