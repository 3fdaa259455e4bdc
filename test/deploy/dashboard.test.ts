import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { allValue, loadDashboard, promql, variable } from '../support/dashboard.js';
import { freePort, startPrometheus, type Prometheus, type Sample } from '../support/prometheus.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { repoRoot, sharedPath } from '../support/shared.js';
import { encodeWav } from '../support/wav-writer.js';

const clip = (name: string) => readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`));
const JOB = 'mega-asr';
/** Stands in for $__rate_interval and friends: longer than the whole test, so every rate sees all its traffic. */
const RANGE = '10m';

/**
 * deploy/prometheus/prometheus.yml with the job's targets replaced (the service, and another app in the same job,
 * as a shared Kubernetes job scrapes every annotated pod) and a 1 s scrape interval.
 */
function derivedConfig(targets: string[]): unknown {
  const config = parse(readFileSync(join(repoRoot, 'deploy', 'prometheus', 'prometheus.yml'), 'utf8')) as {
    global: Record<string, string>;
    scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[];
  };
  const job = config.scrape_configs.find((j) => j.job_name === JOB);
  if (!job) throw new Error(`prometheus.yml has no job ${JOB}`);
  job.static_configs = [{ targets }];
  config.global.scrape_interval = '1s';
  config.global.evaluation_interval = '1s';
  return config;
}

/**
 * Another app scraped in the same job: no asr_workers, but metrics with the names the dashboard reads (its own /v1
 * route answering 503s, a process and an event loop). Its request counter grows by 100 at every scrape.
 */
async function startOtherApp(): Promise<{ host: string; close: () => Promise<void> }> {
  let requests = 0;
  const server: Server = createServer((_req, res) => {
    requests += 100;
    res.setHeader('content-type', 'text/plain; version=0.0.4');
    res.end(
      [
        '# TYPE http_requests_total counter',
        `http_requests_total{route="/v1/other",method="POST",status="503"} ${requests}`,
        '# TYPE process_resident_memory_bytes gauge',
        'process_resident_memory_bytes 1e9',
        '# TYPE nodejs_eventloop_lag_p99_seconds gauge',
        'nodejs_eventloop_lag_p99_seconds 5',
        '',
      ].join('\n'),
    );
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { host: `127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

const transcriptionsURL = (server: TestServer) => `${server.baseURL}/v1/audio/transcriptions`;

function form(file: Uint8Array | null, fields: Record<string, string> = {}): FormData {
  const f = new FormData();
  f.append('model', 'mega-asr');
  if (file) f.append('file', new Blob([file]), 'clip.wav');
  for (const [k, v] of Object.entries(fields)) f.append(k, v);
  return f;
}

const post = (server: TestServer, body: FormData) => fetch(transcriptionsURL(server), { method: 'POST', body, signal: AbortSignal.timeout(60_000) });

/** Takes the only queue place, as a running transcription does, until released: what arrives meanwhile is refused. */
function holdThePlace(server: TestServer): { release(): void } {
  const admission = server.pool.admit();
  if ('refused' in admission) throw new Error(`the place is not free: ${admission.refused}`);
  return admission;
}

describe('Prometheus scraping the service, and the dashboard queries', () => {
  let server: TestServer;
  let other: Awaited<ReturnType<typeof startOtherApp>>;
  let prometheus: Prometheus;
  /** The Instance variable's values found by its own query. */
  let instances: string[];
  /** `$instance` at its default, All, as Grafana writes it into the panel queries. */
  let instance: string;
  /** Over 10 s of real speech: the 'fails-long' model's encoder breaks the contract on it, so the request gets a 500. */
  let long: Uint8Array;
  let sent = 0;

  /** The same traffic each round: two transcriptions, a 400, a 500 and a 429, each status seen by Prometheus. */
  async function round(): Promise<void> {
    const statuses: number[] = [];
    statuses.push((await post(server, form(clip('recording')))).status);
    statuses.push((await post(server, form(clip('mixed'), { response_format: 'srt' }))).status);
    statuses.push((await post(server, form(null))).status); // no file
    statuses.push((await post(server, form(long))).status);
    const held = holdThePlace(server);
    statuses.push((await post(server, form(clip('recording')))).status);
    held.release();
    statuses.push((await post(server, form(clip('far_field')))).status);
    expect(statuses).toEqual([200, 200, 400, 500, 429, 200]);
    sent += statuses.length;
    // Prometheus has scraped this round once the request counter shows it.
    await prometheus.until(`a scrape showing ${sent} transcription requests`, async () => {
      const [total] = await prometheus.query(`sum(http_requests_total{job="${JOB}",route="/v1/audio/transcriptions"})`);
      return total?.value === sent ? true : undefined;
    });
  }

  beforeAll(async () => {
    const pcm = [decodeWavToPcm(clip('noise')), decodeWavToPcm(clip('obstructed'))];
    const joined = new Float32Array(pcm[0]!.length + pcm[1]!.length);
    joined.set(pcm[0]!);
    joined.set(pcm[1]!, pcm[0]!.length);
    long = encodeWav({ channels: [joined], sampleRate: 16000, format: 'float32' });
    // One worker and no queue, so one held place fills the service; no VAD, so the long clip reaches the encoder whole.
    server = await startTestServer({ MAX_BATCH: '1', MAX_QUEUE: '0', ASR_VAD: 'false' }, 'fails-long');
    other = await startOtherApp();
    prometheus = await startPrometheus(derivedConfig([new URL(server.baseURL).host, other.host]));
    // A first scrape of both before any traffic, so every counter's first increase falls inside the rate windows.
    await prometheus.until('the first scrapes', async () => ((await prometheus.query(`up{job="${JOB}"}`)).length === 2 ? true : undefined));
    await round();
    await round();
    const instanceVariable = variable(loadDashboard(), 'instance');
    const call = /^label_values\((.+),\s*(\w+)\)$/.exec(instanceVariable.query);
    if (!call) throw new Error(`the Instance variable's query is not label_values(): ${instanceVariable.query}`);
    instances = await prometheus.labelValues(call[2]!, promql(call[1]!, { range: RANGE, job: JOB }));
    instance = allValue(instanceVariable, instances);
  });

  afterAll(async () => {
    await prometheus?.stop();
    await other?.close();
    await server?.stop('test done');
  });

  it('scrapes the service and the other app: both targets are up with the job name from deploy/prometheus', async () => {
    const targets = (await (await fetch(`${prometheus.url}/api/v1/targets`)).json()) as {
      data: { activeTargets: { labels: { job: string }; health: string; lastError: string; scrapeUrl: string }[] };
    };
    const byUrl = (url: string) => targets.data.activeTargets.find((t) => t.scrapeUrl === url);
    expect(targets.data.activeTargets).toHaveLength(2);
    expect(byUrl(`${server.baseURL}/metrics`)).toMatchObject({ health: 'up', lastError: '', labels: { job: JOB } });
    expect(byUrl(`http://${other.host}/metrics`)).toMatchObject({ health: 'up', lastError: '', labels: { job: JOB } });
  });

  it("the dashboard's Instance variable finds the service's target with its own query, not the other app's", () => {
    expect(instances).toEqual([new URL(server.baseURL).host]);
  });

  it("the dashboard's job variable finds the scrape job with its own query, and defaults to it", async () => {
    const job = variable(loadDashboard(), 'job');
    const call = /^label_values\((\w+),\s*(\w+)\)$/.exec(job.query);
    expect(call, job.query).not.toBeNull();
    expect(await prometheus.labelValues(call![2]!, call![1]!)).toEqual([JOB]);
    expect(job.current?.value).toBe(JOB);
  });

  it('every panel query of the dashboard returns data, all finite', async () => {
    const dashboard = loadDashboard();
    const empty: string[] = [];
    for (const panel of dashboard.panels) {
      for (const t of panel.targets ?? []) {
        const samples = await prometheus.query(promql(t.expr, { range: RANGE, job: JOB, instance }));
        if (samples.length === 0) empty.push(`${panel.title} / ${t.refId}: ${t.expr}`);
        for (const s of samples) expect(Number.isFinite(s.value), `${panel.title} / ${t.refId} ${JSON.stringify(s)}`).toBe(true);
      }
    }
    expect(empty).toEqual([]);
  });

  /** The panel's query (found by title and legend) as Prometheus runs it, Instance at All. */
  function panelQuery(title: string, legend?: string): string {
    const p = loadDashboard().panels.find((x) => x.title === title);
    const t = p?.targets?.find((x) => legend === undefined || x.legendFormat === legend);
    if (!t) throw new Error(`no query ${legend ?? ''} in panel ${title}`);
    return promql(t.expr, { range: RANGE, job: JOB, instance });
  }
  /** The panel's query evaluated now. */
  const panel = (title: string, legend?: string): Promise<Sample[]> => prometheus.query(panelQuery(title, legend));
  /** The panel's query evaluated now without its instance filter: every target of the job. */
  async function wholeJob(title: string, legend?: string): Promise<Sample[]> {
    const query = panelQuery(title, legend);
    const unfiltered = query.replaceAll(`,instance=~"${instance}"`, '');
    if (unfiltered === query) throw new Error(`${title}: no instance filter to leave out in ${query}`);
    return prometheus.query(unfiltered);
  }
  const byLabel = (samples: Sample[], label: string) => Object.fromEntries(samples.map((s) => [s.metric[label], s.value]));

  it('the traffic panels show the requests sent: by status, errors by class, latency percentiles', async () => {
    const byStatus = byLabel(await panel('API requests by status'), 'status');
    expect(Object.keys(byStatus).sort()).toEqual(['200', '400', '429', '500']);
    // Each round sends three 200s and one each of 400, 429 and 500. Rates extrapolate each series from its own
    // first sample, so only the order is exact, not the ratio.
    for (const error of ['400', '429', '500']) {
      expect(byStatus[error]).toBeGreaterThan(0);
      expect(byStatus['200']).toBeGreaterThan(byStatus[error]!);
    }
    const [clientErrors] = await panel('Errors: share of API requests', '4xx (client)');
    const [serverErrors] = await panel('Errors: share of API requests', '5xx (service)');
    expect(serverErrors!.value).toBeGreaterThan(0);
    expect(clientErrors!.value).toBeGreaterThan(serverErrors!.value); // 400 and 429 against one 500
    expect(clientErrors!.value + serverErrors!.value).toBeLessThan(1);
    const [p50] = await panel('Transcription latency', 'p50');
    const [p99] = await panel('Transcription latency', 'p99');
    expect(p50!.value).toBeGreaterThan(0);
    expect(p99!.value).toBeGreaterThanOrEqual(p50!.value);
  });

  it('the ASR panels show the work done: audio, real-time factor, tokens, outcomes, rejections, workers, memory', async () => {
    const [audio] = await panel('Audio transcribed per second');
    expect(audio!.value).toBeGreaterThan(0);
    const [rtf] = await panel('Real-time factor', 'p50');
    expect(rtf!.value).toBeGreaterThan(0);
    const [tokens] = await panel('Decoded tokens per second');
    expect(tokens!.value).toBeGreaterThan(0);
    const outcomes = byLabel(await panel('Transcriptions by outcome'), 'outcome');
    expect(outcomes.completed).toBeGreaterThan(0);
    expect(outcomes.failed).toBeGreaterThan(0);
    expect(outcomes.completed).toBeGreaterThan(outcomes.failed!);
    expect(outcomes.cancelled).toBe(0);
    const rejections = byLabel(await panel('Rejections by reason'), 'reason');
    expect(rejections.queue_full).toBeGreaterThan(0);
    expect(rejections.draining).toBe(0);
    expect(await panel('Workers: busy, ready, configured', 'ready')).toMatchObject([{ value: 1 }]);
    expect(await panel('Workers: busy, ready, configured', 'busy')).toMatchObject([{ value: 0 }]);
    const [rss] = await panel('Process memory (RSS)');
    expect(rss!.value).toBeGreaterThan(50 * 1024 * 1024);
  });

  it("keeps the job's other targets out: without the instance filter the same panels would show the other app", async () => {
    const service = new URL(server.baseURL).host;
    const instancesOf = (samples: Sample[]) => samples.map((s) => s.metric.instance).sort();
    expect(await panel('Targets up')).toMatchObject([{ value: 1 }]);
    expect(await wholeJob('Targets up')).toMatchObject([{ value: 2 }]);
    for (const title of ['Process memory (RSS)', 'Event loop lag (p99)']) {
      expect(instancesOf(await panel(title)), title).toEqual([service]);
      expect(instancesOf(await wholeJob(title)), title).toEqual([service, other.host].sort());
    }
    expect(Object.keys(byLabel(await panel('API requests by status'), 'status'))).not.toContain('503');
    expect(Object.keys(byLabel(await wholeJob('API requests by status'), 'status'))).toContain('503');
    const [serviceShare] = await panel('Errors: share of API requests', '5xx (service)');
    const [jobShare] = await wholeJob('Errors: share of API requests', '5xx (service)');
    expect(serviceShare!.value).toBeLessThan(0.5); // one 500 in six requests a round
    expect(jobShare!.value).toBeGreaterThan(serviceShare!.value);
  });
});
