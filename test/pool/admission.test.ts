import { describe, expect, it } from 'vitest';
import { Admission, Admissions, type AdmissionRefusal } from '../../src/pool/admission.js';
import { CancelSlots } from '../../src/pool/cancel-slots.js';
import { RetryEstimate } from '../../src/pool/retry-after.js';

function admissions(capacity: { value: number }, maxQueue: number, slots: CancelSlots) {
  let changes = 0;
  const a = new Admissions({ maxQueue, capacity: () => capacity.value, slots, retry: new RetryEstimate(), onChange: () => changes++ });
  return { a, slots, changes: () => changes };
}

const take = (x: Admission | AdmissionRefusal): Admission => {
  if (!(x instanceof Admission)) throw new Error(`refused: ${x.refused}`);
  return x;
};

describe('Admissions', () => {
  it('admits the ready capacity plus the queue, follows the capacity as workers come and go, and refuses with a retry hint', () => {
    const capacity = { value: 0 };
    const { a: live } = admissions(capacity, 2, new CancelSlots(14));
    expect(live.admit()).toMatchObject({ refused: 'not_ready', retryAfterSeconds: 5 });
    capacity.value = 6; // two ready workers of batch 3
    const held = Array.from({ length: 8 }, () => take(live.admit()));
    const refused = live.admit() as AdmissionRefusal;
    expect(refused.refused).toBe('queue_full');
    expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(refused.retryAfterSeconds).toBeLessThanOrEqual(60);
    capacity.value = 3; // one worker died: its place is not given to a new request
    held[0]!.release();
    expect(live.admit()).toMatchObject({ refused: 'queue_full' });
    for (const h of held) h.release();
    expect(live.admitted).toBe(0);
    live.close();
    expect(live.admit()).toMatchObject({ refused: 'draining' });
  });

  it('gives every admission its own slot, and a released one back only once its task is over', () => {
    const { a, slots, changes } = admissions({ value: 1 }, 0, new CancelSlots(2));
    const first = take(a.admit());
    first.begin();
    first.release();
    first.release(); // idempotent
    expect(a.admitted).toBe(0);
    expect(changes()).toBe(1);
    // the running task keeps its slot: the next admission gets the other one
    const second = take(a.admit());
    expect(second.slot).not.toBe(first.slot);
    second.release();
    expect(first.end()).toBe(true);
    slots.give(first.slot);
    expect(() => first.begin()).toThrow(/released admission/);
  });
});

describe('CancelSlots', () => {
  it("keeps the first reason given: a client leaving after the shutdown's cancel does not change it", () => {
    const slots = new CancelSlots(2);
    const s = slots.take()!;
    expect(slots.reason(s)).toBeUndefined();
    slots.cancel(s, 'shutdown');
    slots.cancel(s, 'client');
    expect(slots.reason(s)).toBe('shutdown');
    slots.clear(s);
    expect(slots.reason(s)).toBeUndefined();
    slots.cancel(s, 'client');
    slots.cancel(s, 'shutdown');
    expect(slots.reason(s)).toBe('client');
    expect(new Int32Array(slots.cells.cancel)[s]).toBe(1);
  });

  it('hands out each slot once until given back', () => {
    const slots = new CancelSlots(2);
    const taken = [slots.take(), slots.take()];
    expect(new Set(taken).size).toBe(2);
    expect(slots.take()).toBeUndefined();
    slots.give(taken[0]!);
    expect(slots.take()).toBe(taken[0]);
  });
});

describe('RetryEstimate', () => {
  it('spreads the requests ahead over the sequences decoded at once', () => {
    const r = new RetryEstimate();
    r.record(4000);
    // 8 lanes, 16 admitted: 9 ahead of the next request, each lane clearing one per 4 s
    expect(r.seconds(16, 8)).toBe(Math.ceil((9 * 4000) / 8 / 1000));
    expect(r.seconds(0, 8)).toBe(1);
    expect(r.seconds(10_000, 1)).toBe(60);
  });
});
