import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { allValue, DASHBOARD_PATH, datasourceUid, grafanaRegex, loadDashboard, promql, variable } from '../support/dashboard.js';
import { configSchema } from '../../src/config.js';
import { promtoolCheckConfig } from '../support/prometheus.js';
import { repoRoot } from '../support/shared.js';

interface Service {
  image?: string;
  build?: unknown;
  ports?: string[];
  volumes?: string[];
  environment?: Record<string, string | null>;
  stop_grace_period?: string;
  healthcheck?: { test: string[]; start_period?: string };
  depends_on?: string[];
  deploy?: { resources?: { reservations?: { devices?: { driver: string; count: number; capabilities: string[] }[] } } };
}

const readYaml = (...parts: string[]) => parse(readFileSync(join(repoRoot, ...parts), 'utf8')) as Record<string, unknown>;
const compose = readYaml('docker-compose.yml') as { services: Record<string, Service>; volumes: Record<string, unknown> };
const services = compose.services;

/** Compose durations as used here ("75s", "1m30s", "30m") in seconds. */
function seconds(duration: string): number {
  const parts = [...duration.matchAll(/(\d+(?:\.\d+)?)(h|m|s)/g)];
  if (parts.map((p) => p[0]).join('') !== duration) throw new Error(`not a compose duration: ${duration}`);
  return parts.reduce((s, [, n, unit]) => s + Number(n) * { h: 3600, m: 60, s: 1 }[unit as 'h' | 'm' | 's'], 0);
}

/** A volume entry "source:target[:mode]" split into its source (a named volume or a repository path) and target. */
function mounts(service: Service): { source: string; target: string; readOnly: boolean }[] {
  return (service.volumes ?? []).map((v) => {
    const [source, target, mode] = v.split(':');
    return { source: source!, target: target!, readOnly: mode === 'ro' };
  });
}

const hostPath = (source: string) => join(repoRoot, source);

describe('docker-compose.yml', () => {
  it('runs the service image with one GPU reserved', () => {
    const asr = services['mega-asr']!;
    expect(asr.build).toBe('.');
    expect(asr.image).toBe('mega-asr-server');
    expect(asr.ports).toContain('8000:8000');
    expect(asr.deploy?.resources?.reservations?.devices).toEqual([{ driver: 'nvidia', count: 1, capabilities: ['gpu'] }]);
  });

  it('keeps the model cache in a named volume at /data (HF_HOME in the image)', () => {
    const cache = mounts(services['mega-asr']!).find((m) => m.target === '/data');
    expect(cache).toBeDefined();
    expect(Object.keys(compose.volumes)).toContain(cache!.source);
    expect(cache!.readOnly).toBe(false); // the first start writes the download there
  });

  it('lets the drain finish before Docker kills the container', () => {
    const asr = services['mega-asr']!;
    const grace = Number(asr.environment?.SHUTDOWN_GRACE_SECONDS);
    expect(grace).toBe(60);
    expect(seconds(asr.stop_grace_period!)).toBeGreaterThan(grace);
  });

  it('passes the model, hub and server settings through from the shell, without defaults that shadow the image', () => {
    const env = services['mega-asr']!.environment!;
    for (const key of ['MODEL', 'MODEL_REVISION', 'HF_TOKEN', 'HF_ENDPOINT', 'HF_HUB_OFFLINE', 'WORKERS', 'MAX_BATCH', 'MAX_QUEUE', 'API_KEYS', 'LOG_LEVEL', 'ASR_DEVICE', 'ASR_BACKEND']) {
      expect(env, key).toHaveProperty(key, null);
    }
    expect(env).not.toHaveProperty('MODEL_DIR'); // the model comes from the hub into /data
    // NVIDIA_DRIVER_CAPABILITIES stays the image's (graphics included, for the webgpu backend's Vulkan driver)
    expect(env).not.toHaveProperty('NVIDIA_DRIVER_CAPABILITIES');
  });

  it('passes only settings the service knows', () => {
    const known = Object.keys(configSchema.shape);
    for (const key of Object.keys(services['mega-asr']!.environment!)) expect(known, key).toContain(key);
  });

  it('checks readiness on /ready, with a start period long enough for the first download', () => {
    const check = services['mega-asr']!.healthcheck!;
    expect(check.test.join(' ')).toContain('http://127.0.0.1:8000/ready');
    expect(seconds(check.start_period!)).toBeGreaterThanOrEqual(600);
  });

  it('pins every image it pulls to a version tag', () => {
    for (const [name, service] of Object.entries(services)) {
      if (service.build) continue; // built here
      expect(service.image, name).toMatch(/^[\w./-]+:v?\d+\.\d+\.\d+$/);
    }
  });

  it('mounts the Prometheus config where the image reads it, and it scrapes the service by name and port', () => {
    const config = mounts(services.prometheus!).find((m) => m.target === '/etc/prometheus/prometheus.yml');
    expect(config?.readOnly).toBe(true);
    expect(existsSync(hostPath(config!.source))).toBe(true);
    const prom = readYaml(config!.source) as { scrape_configs: { job_name: string; metrics_path?: string; static_configs: { targets: string[] }[] }[] };
    const job = prom.scrape_configs.find((j) => j.job_name === 'mega-asr');
    expect(job?.metrics_path ?? '/metrics').toBe('/metrics');
    const servicePort = services['mega-asr']!.ports![0]!.split(':').at(-1);
    expect(job?.static_configs.flatMap((s) => s.targets)).toEqual([`mega-asr:${servicePort}`]);
  });

  it('the Prometheus config passes promtool', () => {
    const { status, output } = promtoolCheckConfig(join(repoRoot, 'deploy', 'prometheus', 'prometheus.yml'));
    expect(status, output).toBe(0);
    expect(output).toMatch(/SUCCESS/);
  });

  it('publishes only the service on every interface: Prometheus and Grafana answer on this host alone', () => {
    for (const [name, service] of Object.entries(services)) {
      for (const port of service.ports ?? []) {
        // "HOST_IP:HOST_PORT:CONTAINER_PORT" binds one address; "HOST_PORT:CONTAINER_PORT" binds all of them.
        if (name !== 'mega-asr') expect(port, name).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
      }
    }
    expect(services.prometheus!.ports).toEqual(['127.0.0.1:9090:9090']);
    // Anonymous Viewers can query Prometheus through Grafana's datasource proxy: loopback only.
    expect(services.grafana!.ports).toEqual(['127.0.0.1:3000:3000']);
    expect(services.grafana!.environment).toMatchObject({ GF_AUTH_ANONYMOUS_ENABLED: 'true', GF_AUTH_ANONYMOUS_ORG_ROLE: 'Viewer' });
    expect(services.grafana!.environment?.GF_SECURITY_ADMIN_PASSWORD).toMatch(/^\$\{GRAFANA_ADMIN_PASSWORD(:-[^}]+)?\}$/);
  });

  it('provisions Grafana from paths that exist here, with the dashboard at the provider path', () => {
    const grafana = services.grafana!;
    const provisioning = mounts(grafana).find((m) => m.target === '/etc/grafana/provisioning');
    expect(provisioning?.readOnly).toBe(true);
    expect(existsSync(hostPath(provisioning!.source))).toBe(true);

    const provider = readYaml(provisioning!.source, 'dashboards', 'mega-asr.yml') as { providers: { type: string; options: { path: string } }[] };
    expect(provider.providers).toHaveLength(1);
    const dashboards = mounts(grafana).find((m) => m.target === provider.providers[0]!.options.path);
    expect(dashboards?.readOnly).toBe(true);
    expect(join(hostPath(dashboards!.source), 'mega-asr.json')).toBe(DASHBOARD_PATH);
    expect(grafana.environment?.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH).toBe(`${provider.providers[0]!.options.path}/mega-asr.json`);
  });

  it('the Grafana datasource is the compose Prometheus, whose uid is the Data source variable\'s default', () => {
    const { datasources } = readYaml('deploy', 'grafana', 'provisioning', 'datasources', 'prometheus.yml') as {
      datasources: { uid: string; type: string; url: string; jsonData: { timeInterval: string } }[];
    };
    expect(datasources).toHaveLength(1);
    const [ds] = datasources;
    expect(ds!.type).toBe('prometheus');
    const promPort = services.prometheus!.ports![0]!.split(':').at(-1);
    expect(ds!.url).toBe(`http://prometheus:${promPort}`);
    // $__rate_interval is only right when Grafana knows the scrape interval
    const prom = readYaml('deploy', 'prometheus', 'prometheus.yml') as { global: { scrape_interval: string } };
    expect(ds!.jsonData.timeInterval).toBe(prom.global.scrape_interval);

    // Every panel and query goes through the dashboard's datasource variable, whose default is this datasource
    // (another Grafana picks its own Prometheus there, so nothing names this uid directly).
    const dashboard = loadDashboard();
    const picker = variable(dashboard, 'datasource');
    expect(picker).toMatchObject({ type: 'datasource', query: 'prometheus', current: { value: ds!.uid } });
    const viaVariable = { type: 'prometheus', uid: '${datasource}' };
    expect(variable(dashboard, 'job').datasource).toEqual(viaVariable);
    expect(variable(dashboard, 'instance').datasource).toEqual(viaVariable);
    for (const panel of dashboard.panels) {
      expect(panel.datasource, panel.title).toEqual(viaVariable);
      for (const t of panel.targets ?? []) expect(t.datasource, `${panel.title} ${t.refId}`).toEqual(viaVariable);
      expect(datasourceUid(dashboard, panel.datasource!)).toBe(ds!.uid);
    }
  });

  it("the dashboard's job variable defaults to the compose scrape job and lists the jobs that export the service's metrics", () => {
    const job = variable(loadDashboard(), 'job');
    const prom = readYaml('deploy', 'prometheus', 'prometheus.yml') as { scrape_configs: { job_name: string }[] };
    expect(prom.scrape_configs.map((j) => j.job_name)).toContain(job.current!.value);
    expect(job).toMatchObject({ type: 'query', query: 'label_values(asr_workers, job)', multi: false, includeAll: false });
    expect(readFileSync(join(repoRoot, 'src', 'metrics.ts'), 'utf8')).toContain("'asr_workers'");
  });
});

describe('the Grafana dashboard JSON', () => {
  const dashboard = loadDashboard();

  it('is a provisionable dashboard: uid, title, schema version', () => {
    expect(dashboard.uid).toMatch(/^[\w-]{1,40}$/);
    expect(dashboard.title).not.toBe('');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36); // datasources referenced by uid
  });

  it('has panels with unique ids, queries with unique refIds, and a grid layout without overlaps', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      const { x, y, w, h } = p.gridPos;
      expect(x + w, p.title).toBeLessThanOrEqual(24); // Grafana's grid is 24 columns wide
      expect(w * h, p.title).toBeGreaterThan(0);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          expect(cells.has(`${i},${j}`), `${p.title} overlaps at ${i},${j}`).toBe(false);
          cells.add(`${i},${j}`);
        }
      }
      const refIds = (p.targets ?? []).map((t) => t.refId);
      expect(refIds.length, p.title).toBeGreaterThan(0);
      expect(new Set(refIds).size, p.title).toBe(refIds.length);
    }
  });

  it('shows what an operator watches', () => {
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join('\n');
    for (const metric of [
      'http_requests_total',
      'http_request_duration_seconds_bucket',
      'asr_real_time_factor_bucket',
      'asr_audio_seconds_total',
      'asr_queue_depth',
      'asr_rejected_requests_total',
      'asr_busy_workers',
      'asr_running_sequences',
      'asr_capacity_sequences',
      'asr_ready_workers',
      'asr_transcriptions_total',
      'asr_decoded_tokens_total',
      'process_resident_memory_bytes',
    ]) {
      expect(exprs, metric).toContain(metric);
    }
    for (const q of [0.5, 0.95, 0.99]) {
      expect(exprs).toContain(`histogram_quantile(${q}, sum by (le) (rate(http_request_duration_seconds_bucket{job="$job",instance=~"$instance",route="/v1/audio/transcriptions"}`);
    }
  });

  it("has an Instance variable listing only the job's targets that export asr_workers, All by default", () => {
    const instance = variable(dashboard, 'instance');
    expect(instance).toMatchObject({
      type: 'query',
      query: 'label_values(asr_workers{job="$job"}, instance)',
      multi: true,
      includeAll: true,
      current: { value: ['$__all'] },
    });
    // A custom All value such as .* would match every target of the job again, other pods included; without one,
    // Grafana's All is the list the query found.
    expect(instance.allValue ?? null).toBeNull();
  });

  it('selects every series by the job and instance variables, never by a fixed job name', () => {
    for (const panel of dashboard.panels) {
      for (const t of panel.targets ?? []) {
        const selectors = t.expr.match(/\{[^}]*\}/g) ?? [];
        expect(selectors.length, `${panel.title} ${t.refId}`).toBeGreaterThan(0);
        for (const selector of selectors) {
          expect(selector, `${panel.title} ${t.refId}: ${t.expr}`).toMatch(/[{,]job="\$job"[,}]/);
          expect(selector, `${panel.title} ${t.refId}: ${t.expr}`).toMatch(/[{,]instance=~"\$instance"[,}]/);
        }
        expect(t.expr).not.toContain('mega-asr');
      }
    }
    // The tests resolve only the variables the dashboard defines: anything else fails instead of passing unread.
    expect(dashboard.templating.list.map((v) => v.name).sort()).toEqual(['datasource', 'instance', 'job']);
    const values = { range: '5m', job: 'mega-asr', instance: grafanaRegex(['10.0.0.7:8000']) };
    expect(promql('up{job="$job",instance=~"$instance"}[$__rate_interval]', values)).toBe('up{job="mega-asr",instance=~"10\\\\.0\\\\.0\\\\.7:8000"}[5m]');
    expect(grafanaRegex(['a.b:1', 'c:2'])).toBe('(a\\\\.b:1|c:2)');
    expect(allValue({ ...variable(dashboard, 'instance'), allValue: '.*' }, ['a:1'])).toBe('.*');
    expect(() => promql('up{job="$job",instance=~"$instance"}', { range: '5m', job: 'mega-asr' })).toThrow(/unresolved Grafana variable/);
    expect(() => promql('up{job="$job",pod="$pod"}', values)).toThrow(/unresolved Grafana variable/);
    expect(() => datasourceUid(dashboard, { type: 'prometheus', uid: '${other}' })).toThrow(/unresolved Grafana variable/);
  });
});
