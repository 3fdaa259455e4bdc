import type { CancelSlots } from './cancel-slots.js';
import type { RetryEstimate } from './retry-after.js';

export interface AdmissionRefusal {
  refused: 'queue_full' | 'draining' | 'not_ready';
  /** integer in [1, 60] */
  retryAfterSeconds: number;
}

const NOT_READY_RETRY_SECONDS = 5;

/**
 * A request's place in the service, from once its upload has been read until its response: it holds the cancel
 * slot its transcription runs under. The slot is given back once the admission is released and its task is over.
 */
export class Admission {
  private released = false;
  private running = false;

  constructor(
    /** the request's cell in the shared cancel flags */
    readonly slot: number,
    private readonly onRelease: (a: Admission) => void,
  ) {}

  /** idempotent */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.onRelease(this);
  }

  /** true while released with its task still running: the slot is not free yet */
  get holdsSlot(): boolean {
    return !this.released || this.running;
  }

  /** A transcription starts under this admission (one at a time, never after its release). */
  begin(): void {
    if (this.released) throw new Error('transcribe() was given a released admission');
    if (this.running) throw new Error('transcribe() is already running under this admission');
    this.running = true;
  }

  /** Its transcription ended; true when the admission was released meanwhile (the caller frees the slot). */
  end(): boolean {
    this.running = false;
    return this.released;
  }
}

export interface AdmissionsOptions {
  /** admitted requests allowed to wait beyond the sequences the ready workers can decode at once */
  maxQueue: number;
  /** sequences the ready workers decode at once (0 while none is ready) */
  capacity: () => number;
  slots: CancelSlots;
  retry: RetryEstimate;
  onChange: () => void;
}

/** Counts requests from admission to response (not piscina's queue), refusing cheaply beyond capacity + queue. */
export class Admissions {
  private count = 0;
  private draining = false;

  constructor(private readonly o: AdmissionsOptions) {}

  get admitted(): number {
    return this.count;
  }

  /** From now on every request is refused as `draining`. */
  close(): void {
    this.draining = true;
  }

  admit(): Admission | AdmissionRefusal {
    const capacity = this.o.capacity();
    if (this.draining) return { refused: 'draining', retryAfterSeconds: this.o.retry.seconds(this.count, capacity) };
    if (capacity === 0) return { refused: 'not_ready', retryAfterSeconds: NOT_READY_RETRY_SECONDS };
    const slot = this.count < capacity + this.o.maxQueue ? this.o.slots.take() : undefined;
    if (slot === undefined) return { refused: 'queue_full', retryAfterSeconds: this.o.retry.seconds(this.count, capacity) };
    this.count++;
    return new Admission(slot, (a) => {
      this.count--;
      if (!a.holdsSlot) this.o.slots.give(slot);
      this.o.onChange();
    });
  }
}
