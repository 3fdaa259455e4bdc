/**
 * The service under abuse for a long time: starts the real service (`node dist/server.js`) on a model (default:
 * the small generated one) and drives it at and above capacity with a mix of every response format, streaming,
 * clients that hang up mid-request, hostile uploads (mutated real files and mangled multipart bodies), slow
 * uploads and realtime sessions that vanish. Every few seconds it samples the service's RSS, JS heap, open fds,
 * temp files, threads and child processes; after the warm-up it fits a slope per series and fails when one grows
 * (see soak-series.ts for the limits and why), when the idle state at the end is not the idle state at the
 * start, on any 5xx, on a request with no answer by its deadline, or when the service dies.
 *
 *   npm run soak -- [--minutes 30] [--concurrency N] [--model-dir DIR] [--fuzz N] [--out FILE]
 *                   [--slow N] [--warmup-minutes M] [--sample-seconds S] [--env KEY=VALUE ...]
 *
 * Prints a report; --out FILE writes FILE.json and FILE.md. Exit 0: no leak and no failure; 1: the soak failed
 * (or could not run); 2: usage.
 */
import { Agent } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { mulberry32 } from '../tools/random.js';
import { fixtureModel } from '../test/support/fixture-models.js';
import { fuzzSeeds, hostileRequest, multipart, type HostileRequest } from '../test/support/mutate.js';
import { clipPcm24, RealtimeClient, wsURL } from '../test/support/realtime-client.js';
import { sharedPath } from '../test/support/shared.js';
import { tempDir } from '../test/support/transcode.js';
import { BenchService } from './bench-service.js';
import { serviceEnv, UsageError, writeReport } from './cli.js';
import { parseMetrics } from './report-metrics.js';
import { send, sendHostile, Tally } from './soak-client.js';
import { fdKinds, judgeIdle, judgeSeries, MIN_JUDGED_MINUTES, procSample, SERIES, type Sample, type SeriesVerdict } from './soak-series.js';

const USAGE = `usage: npm run soak -- [--minutes 30] [--concurrency N] [--model-dir DIR] [--fuzz N] [--out FILE]
                       [--slow N] [--warmup-minutes M] [--sample-seconds S] [--env KEY=VALUE ...]
  --minutes         how long the load runs (default 30; fractions allowed)
  --concurrency     clients sending the normal mix back to back (default: twice the service's capacity)
  --model-dir       the model (default: the small generated model, written on first use)
  --fuzz            hostile requests to send, by a quarter as many clients as --concurrency (default 300);
                    those not sent when the time is up are sent after the timed mix (not sampled)
  --slow            clients trickling an upload at 1 byte/s, each for up to 45 s, over and over (default 2)
  --warmup-minutes  samples before this are not judged (default: a fifth of --minutes, at most 5)
  --sample-seconds  how often the service is sampled (default 5)
  --out             write FILE.json and FILE.md
  --env             service setting, repeatable (default WORKERS=1 MAX_BATCH=4 MAX_QUEUE=8 DECODE_WORKERS=2)`;

const repoRoot = resolve(import.meta.dirname, '..');
/** Every request has an answer within this, or it is a hang (the issue's bar: a request succeeds within 60 s). */
const DEADLINE_MS = 60_000;
/** A trickling client gives up after this long (and starts again): longer than the 30 s idle limit of uploads. */
const SLOW_UPLOAD_MS = 45_000;
/** A client refused with 429 waits this long before its next request (the OpenAI SDK waits 0.5-8 s). */
const BACK_OFF_MS = 1000;
const FORMATS = ['json', 'text', 'srt', 'verbose_json', 'vtt'] as const;
const CLIPS = ['recording', 'mixed', 'far_field', 'dropout'];

function readOptions(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      minutes: { type: 'string', default: '30' },
      concurrency: { type: 'string' },
      'model-dir': { type: 'string' },
      fuzz: { type: 'string', default: '300' },
      slow: { type: 'string', default: '2' },
      'warmup-minutes': { type: 'string' },
      'sample-seconds': { type: 'string', default: '5' },
      out: { type: 'string' },
      env: { type: 'string', multiple: true, default: [] },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) throw new UsageError('');
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const number = (name: string, text: string, integer: boolean, min = 0) => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) throw new UsageError(`--${name}: expected a ${integer ? 'whole ' : ''}number >= ${min}, got "${text}"`);
    return n;
  };
  const minutes = number('minutes', values.minutes, false);
  if (minutes <= 0) throw new UsageError('--minutes must be above 0');
  const env = serviceEnv(values.env, { WORKERS: '1', MAX_BATCH: '4', MAX_QUEUE: '8', DECODE_WORKERS: '2' });
  return {
    minutes,
    concurrency: values.concurrency === undefined ? undefined : number('concurrency', values.concurrency, true, 1),
    modelDir: values['model-dir'] ? resolve(values['model-dir']) : undefined,
    fuzz: number('fuzz', values.fuzz, true),
    slow: number('slow', values.slow, true),
    warmupMinutes: values['warmup-minutes'] === undefined ? Math.min(5, minutes / 5) : number('warmup-minutes', values['warmup-minutes'], false),
    sampleSeconds: number('sample-seconds', values['sample-seconds'], false, 0.5),
    out: values.out?.replace(/\.(json|md)$/, ''),
    env,
  };
}
type Options = ReturnType<typeof readOptions>;

/** The normal requests: every format and a streamed one for each clip, built once. */
function normalBodies(): Map<string, Buffer> {
  const bodies = new Map<string, Buffer>();
  for (const clip of CLIPS) {
    const file = readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${clip}.wav`));
    const part = { name: 'file', value: file, filename: `${clip}.wav`, contentType: 'audio/wav' };
    for (const format of FORMATS) bodies.set(`${clip} ${format}`, multipart(BOUNDARY, [{ name: 'model', value: 'mega-asr' }, { name: 'response_format', value: format }, part]));
    bodies.set(`${clip} stream`, multipart(BOUNDARY, [{ name: 'model', value: 'mega-asr' }, { name: 'stream', value: 'true' }, part]));
  }
  return bodies;
}
const BOUNDARY = 'megaasrsoak7f3a';
const HEADERS = { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` };

export interface SoakReport {
  date: string;
  minutes: number;
  warmupMinutes: number;
  sampleSeconds: number;
  concurrency: number;
  /** requests the service admits at once */
  capacity: number;
  slowClients: number;
  env: Record<string, string>;
  modelDir: string;
  ready: Record<string, unknown>;
  requests: { total: number; byStatus: Record<string, number>; byKind: Record<string, number>; failed: number; failures: string[]; slowestMs: number };
  fuzz: { sent: number; byStatus: Record<string, number>; byKind: Record<string, number>; failed: number; failures: string[]; slowestMs: number };
  realtime: Record<string, number>;
  series: SeriesVerdict[];
  idle: { start: Sample; end: Sample; failures: string[] };
  crashed: string | null;
  failures: string[];
  passed: boolean;
  samples: Sample[];
  log: string;
}

async function heapMiB(service: BenchService): Promise<number> {
  const samples = parseMetrics(await service.metrics());
  return (samples.get('nodejs_heap_size_used_bytes') ?? NaN) / 2 ** 20;
}

async function sample(service: BenchService, serviceTmp: string, t0: number): Promise<Sample> {
  const heap = await heapMiB(service);
  return { t: (performance.now() - t0) / 1000, heapMiB: heap, ...procSample(service.pid, serviceTmp) };
}

/**
 * Waits until the service is idle (nothing admitted, no child process, no temp file left behind), at most 60 s.
 * The clients' keep-alive connections are closed first: an idle pooled socket is an open fd in the service that
 * says nothing about a leak, and how many the pool holds at a given moment is chance.
 */
async function idleSample(service: BenchService, serviceTmp: string, t0: number, clients: Agent): Promise<Sample> {
  await service.settle(60_000);
  clients.destroy();
  let s = await sample(service, serviceTmp, t0);
  // the service closes its side once it reads the FIN: give it a moment until the count stops falling
  for (let i = 0, last = Infinity; i < 20 && (s.children > 0 || s.tempFiles > 0 || s.fds < last); i++) {
    last = s.fds;
    await sleep(500);
    s = await sample(service, serviceTmp, t0);
  }
  return s;
}

async function soak(o: Options, service: BenchService, serviceTmp: string, logFile: string): Promise<SoakReport> {
  const ready = await service.readiness();
  // requests admitted at once: the sequences the workers run together plus the queue
  const capacity = Number(o.env.WORKERS) * Number(o.env.MAX_BATCH) + Number(o.env.MAX_QUEUE);
  const concurrency = o.concurrency ?? 2 * capacity;
  // hostile requests wait out 429s like the rest: a quarter as many clients keeps them a real part of the mix
  const hostileClients = Math.max(2, Math.round(concurrency / 4));
  const url = `${service.baseURL}/v1/audio/transcriptions`;
  const bodies = normalBodies();
  const seedDir = tempDir('mega-asr-soak-seeds-');
  const seeds = fuzzSeeds(seedDir);
  seedDir.remove();
  const rand = mulberry32(20261130);
  const requests = new Tally();
  const fuzz = new Tally();
  const realtime: Record<string, number> = {};
  const count = (key: string) => (realtime[key] = (realtime[key] ?? 0) + 1);
  // every request on one keep-alive pool, closed before each idle sample
  const agent = new Agent({ keepAlive: true });
  const t0 = performance.now();

  // Priming: one of each kind alone, so that what opens lazily (ffmpeg's probe, the VAD, a realtime session's
  // state) is open before the idle state the end is compared with.
  for (const [name, body] of [...bodies].filter(([k]) => k.startsWith(CLIPS[0]!))) requests.add(`prime ${name.split(' ')[1]}`, await send(url, { headers: HEADERS, body, deadlineMs: DEADLINE_MS, agent }));
  for (let i = 0; i < 4; i++) {
    const input = hostileRequest(rand, seeds, i);
    fuzz.add(input.kind, await sendHostile(url, input, { deadlineMs: DEADLINE_MS, agent }), true);
  }
  await realtimeSession(service.baseURL, count);
  const idleStart = await idleSample(service, serviceTmp, t0, agent);
  console.error(`soak: primed; idle: ${describe(idleStart)}; ${concurrency} clients + ${hostileClients} hostile (${o.fuzz} requests) + ${o.slow} slow + 1 realtime for ${o.minutes} min…`);

  const loadStart = performance.now();
  const endAt = loadStart + o.minutes * 60_000;
  const timeLeft = () => performance.now() < endAt;
  let crashed: string | null = null;
  let fuzzSent = 0;
  const alive = () => !crashed;
  const samples: Sample[] = [];
  const sampler = (async () => {
    // the timed mix only: hostile requests still owed after it are sent alone, which is no soak
    while (alive() && timeLeft()) {
      try {
        const s = await sample(service, serviceTmp, loadStart);
        samples.push(s);
        if (samples.length % Math.max(1, Math.round(60 / o.sampleSeconds)) === 0) {
          console.error(`soak: ${(s.t / 60).toFixed(1)} min: ${describe(s)}; ${requests.total()} requests, ${fuzzSent} hostile, ${requests.failed + fuzz.failed} failed`);
        }
      } catch (err) {
        crashed = `the service stopped answering or died: ${(err as Error).message}`;
      }
      await sleep(o.sampleSeconds * 1000);
    }
  })();

  let next = 0;
  const normal = async () => {
    while (alive() && timeLeft()) {
      const i = next++;
      const clip = CLIPS[i % CLIPS.length]!;
      // a format of each kind in turn, one in four streamed, one in six a client that leaves early
      const slot = i % 12;
      if (slot === 5 || slot === 11) {
        const streamed = slot === 5;
        const body = bodies.get(`${clip} ${streamed ? 'stream' : 'json'}`)!;
        requests.add(streamed ? 'cancelled-stream' : 'cancelled', await send(url, { headers: HEADERS, body, deadlineMs: DEADLINE_MS, agent, cancelAfterMs: 50 + Math.floor(rand() * 2000) }));
        continue;
      }
      const kind = slot % 4 === 3 ? 'stream' : FORMATS[i % FORMATS.length]!;
      const outcome = await send(url, { headers: HEADERS, body: bodies.get(`${clip} ${kind}`)!, deadlineMs: DEADLINE_MS, agent });
      requests.add(kind, outcome);
      if (outcome.status === 429) await sleep(BACK_OFF_MS);
    }
  };
  const hostile = async () => {
    while (alive() && fuzzSent < o.fuzz) {
      const input = hostileRequest(rand, seeds, fuzzSent++);
      const outcome = await sendHostile(url, input, { deadlineMs: DEADLINE_MS, agent, backOffMs: BACK_OFF_MS });
      fuzz.add(input.kind, outcome, true);
      if (outcome.status === 'hang') keepHung(input);
    }
  };
  const slow = async () => {
    while (alive() && timeLeft()) {
      const body = bodies.get(`${CLIPS[0]} json`)!;
      const outcome = await send(url, { headers: HEADERS, body, deadlineMs: SLOW_UPLOAD_MS, agent, trickleBytesPerSecond: 1 });
      requests.add('slow-upload', outcome);
      if (outcome.status === 429) await sleep(BACK_OFF_MS);
    }
  };
  const live = async () => {
    while (alive() && timeLeft()) await realtimeSession(service.baseURL, count);
  };
  await Promise.all([
    ...Array.from({ length: concurrency }, normal),
    ...Array.from({ length: hostileClients }, hostile),
    ...Array.from({ length: o.slow }, slow),
    live(),
  ]);
  await sampler;

  let idleEnd = idleStart;
  if (!crashed) {
    try {
      idleEnd = await idleSample(service, serviceTmp, t0, agent);
    } catch (err) {
      crashed = `the service did not settle after the load: ${(err as Error).message}`;
    }
  }
  const series = judgeSeries(samples, o.warmupMinutes * 60);
  const idleFailures = crashed ? [] : judgeIdle(idleStart, idleEnd);
  if (idleFailures.some((f) => f.includes('fds'))) idleFailures.push(`open fds when idle, by kind: ${fdKinds(service.pid)}`);
  const failures = [
    ...(crashed ? [crashed] : []),
    ...series.filter((s) => !s.ok).map((s) => `${s.series} grew ${s.slopePerHour.toFixed(1)} ${s.unit}/h (${s.rise.toFixed(1)} over the window; limit ${s.limitPerHour}/h beyond ${s.floor})`),
    ...idleFailures,
    ...(requests.failed ? [`${requests.failed} request(s) failed: ${requests.failures.slice(0, 5).join('; ')}`] : []),
    ...(fuzz.failed ? [`${fuzz.failed} hostile request(s) failed: ${fuzz.failures.slice(0, 5).join('; ')}`] : []),
    ...(fuzzSent < o.fuzz ? [`only ${fuzzSent} of ${o.fuzz} hostile requests were sent`] : []),
  ];
  return {
    date: new Date().toISOString(),
    minutes: o.minutes,
    warmupMinutes: o.warmupMinutes,
    sampleSeconds: o.sampleSeconds,
    concurrency,
    capacity,
    slowClients: o.slow,
    env: o.env,
    modelDir: o.modelDir ?? '(generated)',
    ready,
    requests: { total: requests.total(), byStatus: requests.byStatus(), byKind: requests.counts, failed: requests.failed, failures: requests.failures, slowestMs: requests.slowestMs },
    fuzz: { sent: fuzz.total(), byStatus: fuzz.byStatus(), byKind: fuzz.counts, failed: fuzz.failed, failures: fuzz.failures, slowestMs: fuzz.slowestMs },
    realtime,
    series,
    idle: { start: idleStart, end: idleEnd, failures: idleFailures },
    crashed,
    failures,
    passed: failures.length === 0,
    samples,
    log: logFile,
  };
}

/** A hostile request that hung is kept for a look (its headers and body), in the temp dir. */
function keepHung(input: HostileRequest): void {
  const file = join(tmpdir(), `mega-asr-soak-hung-${process.pid}-${++hung}.http`);
  writeFileSync(file, Buffer.concat([Buffer.from(`${JSON.stringify(input.headers)}\n`), input.body]));
  console.error(`soak: a ${input.kind} request hung: kept in ${file}`);
}
let hung = 0;

/** A realtime client that connects, streams a few seconds of a clip faster than real time and vanishes. */
async function realtimeSession(baseURL: string, count: (key: string) => void): Promise<void> {
  let client: RealtimeClient;
  try {
    client = await RealtimeClient.connect(wsURL(baseURL));
  } catch (err) {
    count(`refused ${(err as { status?: number }).status ?? 'error'}`);
    await sleep(1000);
    return;
  }
  try {
    await client.next('session.created', 10_000);
    await client.stream(REALTIME_PCM.subarray(0, 24000 * 2 * 3), { bytesPerSecond: 48000, speed: 4 });
    count('streamed and vanished');
  } catch {
    count('broken');
  } finally {
    client.socket.terminate();
  }
}
const REALTIME_PCM = clipPcm24('recording');

function describe(s: Sample): string {
  return `RSS ${s.rssMiB.toFixed(0)} MiB, heap ${s.heapMiB.toFixed(1)} MiB, ${s.fds} fds, ${s.tempFiles} temp, ${s.threads} threads, ${s.children} children`;
}

function renderSoak(r: SoakReport): string {
  const lines = [
    `# Soak: ${r.passed ? 'PASSED' : 'FAILED'}`,
    '',
    `${r.date}: ${r.minutes} min of load (first ${r.warmupMinutes} min not judged), ${r.concurrency} clients of the normal mix, ${r.slowClients} slow uploaders, 1 realtime client, ${r.fuzz.sent} hostile requests; service ${Object.entries(r.env).map(([k, v]) => `${k}=${v}`).join(' ')} (capacity ${r.capacity}).`,
    '',
    ...(r.series.some((s) => !s.judged) ? [`The load ran less than ${MIN_JUDGED_MINUTES} min after the warm-up: the slopes are figures, not judged.`, ''] : []),
    '| series | first | last | min | max | slope /h | rise in window | limit /h (beyond) | ok |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
    ...r.series.map((s) => `| ${s.series} | ${s.first.toFixed(1)} | ${s.last.toFixed(1)} | ${s.min.toFixed(1)} | ${s.max.toFixed(1)} | ${s.slopePerHour.toFixed(2)} | ${s.rise.toFixed(2)} | ${s.limitPerHour} (${s.floor}) | ${!s.judged ? '–' : s.ok ? 'yes' : 'NO'} |`),
    '',
    `Idle before / after: ${SERIES.map((k) => `${k} ${r.idle.start[k].toFixed(k.endsWith('MiB') ? 1 : 0)} / ${r.idle.end[k].toFixed(k.endsWith('MiB') ? 1 : 0)}`).join(', ')}`,
    '',
    `Requests: ${r.requests.total} (${JSON.stringify(r.requests.byStatus)}), slowest ${(r.requests.slowestMs / 1000).toFixed(1)} s`,
    `By kind: ${JSON.stringify(r.requests.byKind)}`,
    `Hostile: ${r.fuzz.sent} (${JSON.stringify(r.fuzz.byStatus)}), slowest ${(r.fuzz.slowestMs / 1000).toFixed(1)} s`,
    `By kind: ${JSON.stringify(r.fuzz.byKind)}`,
    `Realtime: ${JSON.stringify(r.realtime)}`,
    '',
    r.failures.length ? `Failures:\n${r.failures.map((f) => `- ${f}`).join('\n')}` : 'No failure: no 5xx, no hang, no crash, no series growing, idle state restored.',
  ];
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  let o: Options;
  try {
    o = readOptions(argv);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      if ((err as Error).message) console.error(`soak: ${(err as Error).message}`);
      console.error(USAGE);
      return 2;
    }
    throw err;
  }
  let service: BenchService | undefined;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void (service?.stop() ?? Promise.resolve()).finally(() => process.exit(130)));
  }
  // the service's own temp dir, so that what it leaves there is its own (graphs stay in the usual cache)
  const serviceTmp = mkdtempSync(join(tmpdir(), 'mega-asr-soak-tmp-'));
  const logFile = join(tmpdir(), `mega-asr-soak-${process.pid}.log`);
  try {
    const modelDir = o.modelDir ?? fixtureModel('default');
    console.error(`soak: starting dist/server.js on ${modelDir} (log ${logFile})…`);
    service = await BenchService.start({
      serverDir: repoRoot,
      modelDir,
      env: { LOG_LEVEL: 'warn', MAX_REALTIME_SESSIONS: '4', XDG_CACHE_HOME: process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), ...o.env, TMPDIR: serviceTmp },
      logFile,
    });
    const report = await soak(o, service, serviceTmp, logFile);
    const markdown = renderSoak(report);
    console.log(markdown);
    writeReport('soak', o.out, report, markdown);
    return report.passed ? 0 : 1;
  } catch (err) {
    console.error(`soak: ${(err as Error).message}`);
    return 1;
  } finally {
    await service?.stop();
    rmSync(serviceTmp, { recursive: true, force: true });
  }
}

process.exitCode = await main(process.argv.slice(2));
