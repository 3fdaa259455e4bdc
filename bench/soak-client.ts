import { request, Agent } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HostileRequest } from '../test/support/mutate.js';

/**
 * The soak's clients, on raw node:http so that every byte, header and disconnect is under the client's control:
 * one request sent whole, cut off mid-stream or trickled, with a deadline past which it counts as a hang.
 */

/** How one request ended, as the soak tallies it. */
export interface Outcome {
  /** the HTTP status, or `hang` (no answer by the deadline), `reset` (the connection failed), `cancelled` (we hung up) */
  status: number | 'hang' | 'reset' | 'cancelled';
  ms: number;
  /** a non-2xx answer without OpenAI's error body, or a stream that ended without its done event */
  malformed?: string;
}

export interface SendOptions {
  headers: Record<string, string>;
  body: Buffer;
  /** an answer not complete after this long is a hang */
  deadlineMs: number;
  /** hang up this long after sending (a client that leaves while its request is queued, decoded or streamed) */
  cancelAfterMs?: number;
  /** send the body at this many bytes per second instead of at once (a slow upload), giving up after `deadlineMs` */
  trickleBytesPerSecond?: number;
  agent?: Agent;
}

/** Whether a finished answer is well-formed: OpenAI's error body for a refusal, a done event for a stream. */
function malformed(status: number, contentType: string, text: string): string | undefined {
  if (status >= 400) {
    try {
      const body = JSON.parse(text) as { error?: { message?: unknown } };
      return typeof body.error?.message === 'string' ? undefined : `${status} without an error message: ${text.slice(0, 200)}`;
    } catch {
      return `${status} with a body that is not JSON: ${text.slice(0, 200)}`;
    }
  }
  if (contentType.startsWith('text/event-stream') && !text.includes('transcript.text.done') && !text.includes('event: error')) {
    return `a stream that ended without transcript.text.done or an error event: …${text.slice(-200)}`;
  }
  return undefined;
}

export function send(url: string, o: SendOptions): Promise<Outcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    const finish = (outcome: Omit<Outcome, 'ms'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      clearTimeout(cancel);
      clearInterval(trickle);
      req.destroy();
      resolve({ ...outcome, ms: performance.now() - started });
    };
    const req = request(url, { method: 'POST', headers: { ...o.headers, 'content-length': String(o.body.length) }, agent: o.agent }, (res) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const problem = malformed(status, String(res.headers['content-type'] ?? ''), Buffer.concat(chunks).toString('utf8'));
        finish({ status, ...(problem ? { malformed: problem } : {}) });
      });
      res.on('error', () => finish({ status: 'reset' }));
    });
    const cancel = o.cancelAfterMs !== undefined ? setTimeout(() => finish({ status: 'cancelled' }), o.cancelAfterMs) : undefined;
    req.on('error', () => finish({ status: settled ? 'cancelled' : 'reset' }));
    const deadline = setTimeout(() => finish({ status: o.trickleBytesPerSecond ? 'cancelled' : 'hang' }), o.deadlineMs);
    let trickle: NodeJS.Timeout | undefined;
    if (o.trickleBytesPerSecond) {
      // one write per second of `trickleBytesPerSecond` bytes; the server may answer (408, 429) before the end
      let at = 0;
      trickle = setInterval(() => {
        if (at >= o.body.length) return clearInterval(trickle);
        req.write(o.body.subarray(at, (at += o.trickleBytesPerSecond!)));
        if (at >= o.body.length) req.end();
      }, 1000);
      req.flushHeaders();
    } else {
      req.end(o.body);
    }
  });
}

/**
 * Sends a hostile request until the server takes it: a 429 comes before the body is read, so a refused input has
 * not been tried; it is sent again after a pause, up to 20 times. `hang` past the deadline, like any other.
 */
export async function sendHostile(url: string, input: HostileRequest, o: { deadlineMs: number; agent?: Agent; backOffMs?: number }): Promise<Outcome> {
  let outcome = await send(url, { headers: input.headers, body: input.body, deadlineMs: o.deadlineMs, agent: o.agent });
  for (let tries = 1; outcome.status === 429 && tries < 20; tries++) {
    await sleep((o.backOffMs ?? 1000) * (0.5 + Math.random()));
    outcome = await send(url, { headers: input.headers, body: input.body, deadlineMs: o.deadlineMs, agent: o.agent });
  }
  return outcome;
}

/** Counts of outcomes by key (`200`, `400 invalid_file`, `hang`…), and the failures a soak or fuzz must not see. */
export class Tally {
  readonly counts: Record<string, number> = {};
  /** the first few failures, described; `failed` counts them all */
  readonly failures: string[] = [];
  failed = 0;
  slowestMs = 0;

  /** `hostile`: a reset connection is an acceptable answer to a broken request (never to a well-formed one) */
  add(kind: string, o: Outcome, hostile = false): void {
    const key = `${kind} ${o.status}`;
    this.counts[key] = (this.counts[key] ?? 0) + 1;
    this.slowestMs = Math.max(this.slowestMs, o.ms);
    // the soak never drains the service while it counts, so a 503 is as much a failure as any 5xx
    const fiveHundred = typeof o.status === 'number' && o.status >= 500;
    if (fiveHundred || o.status === 'hang' || o.malformed || (o.status === 'reset' && !hostile)) {
      this.failed++;
      if (this.failures.length < 20) this.failures.push(`${kind}: ${o.status}${o.malformed ? ` ${o.malformed}` : ''} after ${(o.ms / 1000).toFixed(1)} s`);
    }
  }

  /** totals by status alone, over every kind */
  byStatus(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [key, n] of Object.entries(this.counts)) {
      const status = key.slice(key.lastIndexOf(' ') + 1);
      out[status] = (out[status] ?? 0) + n;
    }
    return out;
  }

  total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }
}
