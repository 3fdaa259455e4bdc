import { request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { MULTIPART_TYPE, type BenchClip } from './bench-clips.js';

/**
 * One concurrency level: N streams of back-to-back POST /v1/audio/transcriptions with the clips in rotation.
 * N-1 streams are autocannon connections; one is an SSE probe (stream=true) that times the first delta under
 * the same load and whose transcriptions count like the others. The streams run through a warm-up (at least
 * `warmupS` and until N requests have finished, so every stream is past its first); the measured window opens at
 * a request's end and closes at another's once `durationS` has passed and the requests finished in it are a
 * multiple of N: whole rounds of the N streams. Batched streams finish in step, in bursts, so a window cut at an
 * arbitrary time would count 0 or N of a round; from end to end over whole rounds the count is exact.
 */
export interface LevelOptions {
  url: string;
  concurrency: number;
  durationS: number;
  warmupS: number;
  clips: BenchClip[];
  /** called at the window's start and end (metrics scrapes, RSS sampling) */
  onWindowStart: () => Promise<void>;
  onWindowEnd: () => Promise<void>;
}

/** One finished request; times in ms from performance.now(). */
export interface RequestRecord {
  clip: number;
  startedAt: number;
  endedAt: number;
  /** HTTP status; a streamed request that ended in an `event: error` or without its done event is not `ok` */
  status: number;
  ok: boolean;
  streamed: boolean;
  /** streamed requests: when the first transcript.text.delta arrived */
  firstDeltaAt?: number;
}

export interface LevelRun {
  records: RequestRecord[];
  windowStart: number;
  windowEnd: number;
  /** seconds the warm-up took */
  warmupS: number;
  /** connection errors and timeouts seen by autocannon and the probe over the whole level */
  connectionErrors: number;
}

/** The SSE probe's loop: one streamed request at a time until `stopped`; the request in flight is cut off then. */
async function probeLoop(url: URL, next: () => number, clips: BenchClip[], record: (r: RequestRecord) => void, stopped: AbortSignal, onError: () => void): Promise<void> {
  while (!stopped.aborted) {
    const clip = next();
    const body = clips[clip]!.streamed;
    const startedAt = performance.now();
    const outcome = await new Promise<Omit<RequestRecord, 'clip' | 'startedAt' | 'streamed'> | undefined>((resolve) => {
      const req = request(url, { method: 'POST', headers: { 'content-type': MULTIPART_TYPE, 'content-length': body.length }, signal: stopped }, (res) => {
        let firstDeltaAt: number | undefined;
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
          if (firstDeltaAt === undefined && text.includes('"transcript.text.delta"')) firstDeltaAt = performance.now();
        });
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const ok = status === 200 && text.includes('"transcript.text.done"') && !text.includes('event: error');
          resolve({ endedAt: performance.now(), status, ok, ...(firstDeltaAt !== undefined ? { firstDeltaAt } : {}) });
        });
        // cut off mid-stream: 'end' never comes, 'close' does (after 'end' when it does, and a promise settles once)
        res.on('error', () => resolve(undefined));
        res.on('close', () => resolve(undefined));
      });
      req.on('error', () => {
        if (!stopped.aborted) onError();
        resolve(undefined);
      });
      req.end(body);
    });
    if (outcome) record({ clip, startedAt, streamed: true, ...outcome });
    else if (!stopped.aborted) await sleep(100); // a refused connection must not spin
  }
}

/** How long priming waits for one transcription before it gives up on the service. */
const PRIME_TIMEOUT_MS = 10 * 60_000;
/** Refusals of one clip priming sits through before it gives up (the soak's hostile client allows as many). */
const PRIME_REFUSALS = 20;

/**
 * Every clip transcribed once, up to `streams` at a time and at most one stream per clip, before any level is
 * measured, so that no level is the first work a service just started does (its first requests run slower: memory
 * not written yet, first runs at new shapes; README, "How it counts"). A 429 (the queue full) is retried after its
 * Retry-After, up to PRIME_REFUSALS times a clip; any other status, a 503 included (draining, or no worker ready:
 * the bench primes only once the service says it is ready), fails the bench naming the clip.
 */
export async function primeService(baseURL: string, clips: BenchClip[], streams: number): Promise<{ seconds: number; streams: number }> {
  const url = new URL('/v1/audio/transcriptions', baseURL);
  const t0 = performance.now();
  let next = 0;
  const transcribe = async (clip: BenchClip) => {
    for (let refusals = 0; ; refusals++) {
      let res: Response;
      let text: string;
      try {
        res = await fetch(url, { method: 'POST', headers: { 'content-type': MULTIPART_TYPE }, body: clip.plain, signal: AbortSignal.timeout(PRIME_TIMEOUT_MS) });
        text = await res.text();
      } catch (err) {
        // fetch's own message is "fetch failed"; what failed is in its cause
        const cause = (err as { cause?: Error }).cause?.message ?? (err as Error).message;
        throw new Error(`priming the service: ${clip.name}: ${cause}`);
      }
      if (res.status === 200) return;
      if (res.status !== 429 || refusals === PRIME_REFUSALS) throw new Error(`priming the service: ${clip.name} was answered ${res.status}: ${text.slice(0, 200)}`);
      const after = res.headers.get('retry-after');
      await sleep((after !== null && Number(after) >= 0 ? Number(after) : 1) * 1000);
    }
  };
  const stream = async () => {
    for (let i = next++; i < clips.length; i = next++) await transcribe(clips[i]!);
  };
  const used = Math.min(streams, clips.length);
  await Promise.all(Array.from({ length: used }, stream));
  return { seconds: (performance.now() - t0) / 1000, streams: used };
}

/**
 * The levels in the order they run: `rounds` passes, every other one reversed (1,8 then 8,1), so that a machine
 * drifting steadily over the run weighs on each level alike.
 */
export function levelOrder(concurrency: number[], rounds: number): { round: number; concurrency: number }[] {
  return Array.from({ length: rounds }, (_, i) => (i % 2 === 0 ? concurrency : [...concurrency].reverse()).map((c) => ({ round: i + 1, concurrency: c }))).flat();
}

export async function driveLevel(o: LevelOptions): Promise<LevelRun> {
  const url = new URL('/v1/audio/transcriptions', o.url);
  const records: RequestRecord[] = [];
  let notify = () => {};
  /** resolves at the next finished request */
  const finished = () => new Promise<void>((resolve) => (notify = resolve));
  const record = (r: RequestRecord) => {
    records.push(r);
    notify();
  };
  let rotation = 0;
  const next = () => rotation++ % o.clips.length;
  const stop = new AbortController();
  let probeErrors = 0;

  const probe = probeLoop(url, next, o.clips, record, stop.signal, () => probeErrors++);

  type Context = { clip?: number; startedAt?: number };
  let cannon: Promise<autocannon.Result> | undefined;
  let instance: autocannon.Instance | undefined;
  if (o.concurrency > 1) {
    cannon = new Promise((resolve, reject) => {
      instance = autocannon(
        {
          url: url.href,
          connections: o.concurrency - 1,
          duration: 24 * 3600, // stopped by hand after the window
          timeout: 3600, // a transcription under load may take minutes
          requests: [
            {
              method: 'POST',
              setupRequest: (req, context: Context) => {
                context.clip = next();
                context.startedAt = performance.now();
                return { ...req, headers: { 'content-type': MULTIPART_TYPE }, body: o.clips[context.clip]!.plain };
              },
              onResponse: (status, _body, context: Context) => {
                const ok = status >= 200 && status < 300;
                record({ clip: context.clip!, startedAt: context.startedAt!, endedAt: performance.now(), status, ok, streamed: false });
              },
            },
          ],
        },
        (err, result) => (err ? reject(err) : resolve(result)),
      );
    });
  }

  const t0 = performance.now();
  while (performance.now() - t0 < o.warmupS * 1000 || records.length < o.concurrency) await finished();
  const windowStart = records.at(-1)!.endedAt;
  const opened = records.length;
  await o.onWindowStart();
  const due = windowStart + o.durationS * 1000;
  // a service that stops finishing work must not hold the bench forever: then the window ends at the cap
  const capTimer = new AbortController();
  const capped = sleep(o.durationS * 4000, true, { signal: capTimer.signal }).catch(() => false);
  let windowEnd: number;
  while (true) {
    const n = records.length - opened;
    const last = records.at(-1)!.endedAt;
    if (last >= due && n >= o.concurrency && n % o.concurrency === 0) {
      windowEnd = last;
      break;
    }
    if (await Promise.race([finished().then(() => false), capped])) {
      windowEnd = performance.now();
      break;
    }
  }
  capTimer.abort();
  await o.onWindowEnd();

  instance?.stop();
  stop.abort();
  const [result] = await Promise.all([cannon, probe]);
  return {
    records,
    windowStart,
    windowEnd,
    warmupS: (windowStart - t0) / 1000,
    connectionErrors: probeErrors + (result?.errors ?? 0),
  };
}
