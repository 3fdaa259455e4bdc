import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { DockerfileParser } from 'dockerfile-ast';
import { Deployment } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, PersistentVolumeClaim, Service, type IContainer, type IHTTPGetAction } from 'kubernetes-models/v1';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { configSchema } from '../../src/config.js';
import { startPrometheus, type Prometheus } from '../support/prometheus.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { repoRoot } from '../support/shared.js';

const dir = join(repoRoot, 'deploy', 'kubernetes');
const read = (file: string) => readFileSync(join(dir, file), 'utf8');

/** The real Kubernetes, KEDA and Prometheus Operator schemas, as kubernetes-models ships them; validate() throws on a violation. */
const models = {
  ConfigMap,
  PersistentVolumeClaim,
  Service,
  Deployment,
  PodDisruptionBudget,
  ScaledObject,
  PodMonitor,
} as const;
type Kind = keyof typeof models;

const manifestFiles = readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
/**
 * Manifests kept out of kustomization.yaml's resources on purpose, each with the reason: `kubectl apply -k` fails
 * on a whole kustomization when one kind's CRD is missing, so a kind that not every cluster has is opt-in.
 */
const OPTIONAL_MANIFESTS: Record<string, string> = {
  'podmonitor.yaml': 'a PodMonitor needs the Prometheus Operator CRDs (kube-prometheus-stack)',
};
const objects = manifestFiles.flatMap((file) =>
  parseAllDocuments(read(file)).map((doc) => {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0]!.message}`);
    return { file, data: doc.toJS() as { kind: string; apiVersion: string; metadata: { name: string } } };
  }),
);
function one<K extends Kind>(kind: K): InstanceType<(typeof models)[K]> {
  const found = objects.filter((o) => o.data.kind === kind);
  if (found.length !== 1) throw new Error(`expected one ${kind} in deploy/kubernetes, found ${found.length}`);
  return new models[kind](found[0]!.data as never) as InstanceType<(typeof models)[K]>;
}

const deployment = one('Deployment');
const service = one('Service');
const pdb = one('PodDisruptionBudget');
const pvc = one('PersistentVolumeClaim');
const configMap = one('ConfigMap');
const scaledObject = one('ScaledObject');
const podMonitor = one('PodMonitor');
const pod = deployment.spec!.template;
const server = pod.spec!.containers.find((c) => c.name === 'server')!;
const downloader = pod.spec!.initContainers?.find((c) => c.name === 'model-download');

/** A probe's or a Service's port (a name or a number) as the container's port number. */
function containerPort(container: IContainer, port: number | string): number | undefined {
  return typeof port === 'number' ? port : container.ports?.find((p) => p.name === port)?.containerPort;
}
/**
 * The pod labels a cluster's Prometheus attaches to each series, named as Prometheus allows (invalid characters
 * turned into "_", as the Prometheus Operator's sanitizeLabelName and a labelmap of __meta_kubernetes_pod_label_* do).
 */
const targetLabels = (labels: Record<string, string>, copied: string[]) =>
  Object.fromEntries(copied.map((l) => [l.replace(/[^a-zA-Z0-9_]/g, '_'), labels[l]]));
/** A deep, plain copy of a manifest to break on purpose. */
const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;
/** Puts a value of the wrong type or shape into a manifest. */
const breakField = (target: object, key: string, value: unknown) => ((target as Record<string, unknown>)[key] = value);

/** The image's own settings, read from the Dockerfile with a real parser. */
const image = DockerfileParser.parse(readFileSync(join(repoRoot, 'Dockerfile'), 'utf8'));
const imageEnv = new Map(image.getENVs().flatMap((e) => e.getProperties().map((p) => [p.getName(), p.getValue()] as const)));
const imageUser = image
  .getInstructions()
  .filter((i) => i.getKeyword() === 'USER')
  .pop()
  ?.getArgumentsContent();

describe('deploy/kubernetes manifests against the real schemas', () => {
  it('knows every object kind and each validates', () => {
    expect(objects.length).toBe(7);
    for (const { file, data } of objects) {
      expect(Object.keys(models), `${file}: ${data.kind}`).toContain(data.kind);
      expect(() => new models[data.kind as Kind](data as never).validate(), `${file}: ${data.kind}`).not.toThrow();
    }
  });

  it('validate() really rejects broken objects (so the check above means something)', () => {
    const twoReplicas = clone(deployment);
    breakField(twoReplicas.spec!, 'replicas', 'two');
    expect(() => new Deployment(twoReplicas).validate()).toThrow(/replicas must be integer/);

    const namelessContainer = clone(deployment);
    delete (namelessContainer.spec!.template.spec!.containers[0] as Partial<IContainer>).name;
    expect(() => new Deployment(namelessContainer).validate()).toThrow(/containers\/0 must have required property '?name/);

    const grace = clone(deployment);
    breakField(grace.spec!.template.spec!, 'terminationGracePeriodSeconds', '90s');
    expect(() => new Deployment(grace).validate()).toThrow(/terminationGracePeriodSeconds must be integer/);

    // KEDA reads trigger metadata as strings: an unquoted `threshold: 1` is a classic mistake.
    const numericThreshold = clone(scaledObject);
    breakField(numericThreshold.spec.triggers[0]!.metadata, 'threshold', 1);
    expect(() => new ScaledObject(numericThreshold).validate()).toThrow(/threshold must be string/);

    const noTarget = clone(scaledObject);
    delete (noTarget.spec as Partial<typeof noTarget.spec>).scaleTargetRef;
    expect(() => new ScaledObject(noTarget).validate()).toThrow(/scaleTargetRef/);

    const badPdb = clone(pdb);
    breakField(badPdb.spec!, 'selector', 'app=mega-asr');
    expect(() => new PodDisruptionBudget(badPdb).validate()).toThrow(/selector must be object/);

    // The operator's port field is the container port's name; a number belongs in portNumber.
    const numericPort = clone(podMonitor);
    breakField(numericPort.spec.podMetricsEndpoints![0]!, 'port', 8000);
    expect(() => new PodMonitor(numericPort).validate()).toThrow(/port must be string/);
  });

  it('lists every manifest in kustomization.yaml except the optional ones, which its comment names', () => {
    const source = read('kustomization.yaml');
    const kustomization = parseAllDocuments(source)[0]!.toJS() as { kind: string; resources: string[] };
    expect(kustomization.kind).toBe('Kustomization');
    const optional = Object.keys(OPTIONAL_MANIFESTS);
    for (const file of optional) {
      expect(manifestFiles, file).toContain(file);
      expect(kustomization.resources, file).not.toContain(file);
      expect(source, `kustomization.yaml says how to add ${file}`).toMatch(new RegExp(`^#.*\\b${file.replace('.', '\\.')}\\b`, 'm'));
    }
    expect([...kustomization.resources, ...optional].sort()).toEqual([...manifestFiles].sort());
    expect(source).toContain('kustomize edit add resource');
  });
});

describe('deploy/kubernetes manifests fit together', () => {
  it('selects the pods: Deployment, Service and PodDisruptionBudget selectors match the pod labels', () => {
    const labels = pod.metadata!.labels!;
    for (const selector of [deployment.spec!.selector.matchLabels!, service.spec!.selector!, pdb.spec!.selector!.matchLabels!]) {
      expect(Object.keys(selector).length).toBeGreaterThan(0);
      for (const [k, v] of Object.entries(selector)) expect(labels[k], k).toBe(v);
    }
    expect(pdb.spec!.maxUnavailable).toBe(1);
  });

  it('routes the Service to the server port, and the probes and scrape annotations to the same port', () => {
    expect(service.spec!.type).toBe('ClusterIP');
    const port = containerPort(server, service.spec!.ports![0]!.targetPort!);
    expect(port).toBe(8000);
    const probe = (p: { httpGet?: IHTTPGetAction } | undefined) => [p?.httpGet?.path, containerPort(server, p!.httpGet!.port)];
    expect(probe(server.readinessProbe)).toEqual(['/ready', port]);
    expect(probe(server.livenessProbe)).toEqual(['/health', port]);
    expect(probe(server.startupProbe)).toEqual(['/ready', port]);
    const annotations = pod.metadata!.annotations!;
    expect(annotations['prometheus.io/scrape']).toBe('true');
    expect(Number(annotations['prometheus.io/port'])).toBe(port);
    expect(annotations['prometheus.io/path']).toBe('/metrics');
  });

  it('gives the startup probe long enough for warm-up, and the liveness probe no say while starting', () => {
    const startup = server.startupProbe!;
    expect((startup.periodSeconds ?? 10) * (startup.failureThreshold ?? 3)).toBeGreaterThanOrEqual(10 * 60);
    expect(server.livenessProbe!.httpGet!.path).not.toBe('/ready');
  });

  it('lets a pod drain: terminationGracePeriodSeconds > preStop sleep + SHUTDOWN_GRACE_SECONDS', () => {
    const sleep = server.lifecycle!.preStop!.exec!.command!;
    expect(sleep[0]).toBe('sleep');
    const drain = Number(configMap.data!.SHUTDOWN_GRACE_SECONDS);
    expect(drain).toBeGreaterThan(0);
    expect(pod.spec!.terminationGracePeriodSeconds!).toBeGreaterThan(Number(sleep[1]) + drain);
  });

  it('asks for exactly one GPU for the server and none for the download, and tolerates the usual GPU node taint', () => {
    expect(server.resources!.limits!['nvidia.com/gpu']).toBe(1);
    // Tainted GPU nodes (nvidia.com/gpu:NoSchedule) would otherwise leave every pod Pending.
    expect(pod.spec!.tolerations).toContainEqual({ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' });
    expect(downloader).toBeDefined();
    expect(downloader!.resources?.limits?.['nvidia.com/gpu']).toBeUndefined();
    expect(downloader!.resources?.requests?.['nvidia.com/gpu']).toBeUndefined();
  });

  it('runs the image as its non-root user and lets it write the cache volume', () => {
    const security = pod.spec!.securityContext!;
    expect(security.runAsNonRoot).toBe(true);
    expect(`${security.runAsUser}:${security.runAsGroup}`).toBe(imageUser);
    expect(security.fsGroup).toBe(security.runAsGroup);
    for (const c of [server, downloader!]) expect(c.image).toBe(server.image);
    expect(server.image!.split(':')[0]).toBe('mega-asr-server');
    expect(server.image!.split(':')[1]).not.toBe('latest');
  });

  it('pre-populates the shared model cache: the init container downloads into the volume the server reads', () => {
    const hfHome = imageEnv.get('HF_HOME');
    expect(hfHome).toBe('/data');
    expect(downloader!.args).toEqual(['node', 'dist/cli.js', 'download']);
    const claim = pod.spec!.volumes!.find((v) => v.persistentVolumeClaim)!;
    expect(claim.persistentVolumeClaim!.claimName).toBe(pvc.metadata!.name);
    expect(pvc.spec!.accessModes).toContain('ReadWriteMany');
    const mount = (c: IContainer) => c.volumeMounts!.find((m) => m.name === claim.name);
    expect(mount(downloader!)!.mountPath).toBe(hfHome);
    expect(mount(server)!.mountPath).toBe(hfHome);
    expect(mount(downloader!)!.readOnly ?? false).toBe(false);
    // the server only reads what the init container fetched
    expect(server.env!.find((e) => e.name === 'HF_HUB_OFFLINE')?.value).toBe('1');
  });

  it('takes settings from the ConfigMap and secrets only from an optional Secret', () => {
    for (const c of [server, downloader!]) {
      expect(c.envFrom!.map((e) => e.configMapRef?.name)).toContain(configMap.metadata!.name);
    }
    for (const key of Object.keys(configMap.data!)) expect(key).not.toMatch(/TOKEN|KEY|PASSWORD|SECRET/i);
    const secretEnv = [...server.env!, ...downloader!.env!].filter((e) => e.valueFrom?.secretKeyRef);
    expect(secretEnv.map((e) => e.name).sort()).toEqual(['API_KEYS', 'HF_TOKEN']);
    for (const e of secretEnv) expect(e.valueFrom!.secretKeyRef!.optional).toBe(true);
  });

  it('the ConfigMap holds only settings the service knows, each a value it accepts, the decoder backend among them', () => {
    const known = Object.keys(configSchema.shape);
    for (const key of Object.keys(configMap.data!)) expect(known, key).toContain(key);
    const parsed = configSchema.safeParse(configMap.data);
    expect(parsed.error?.issues ?? []).toEqual([]);
    expect(configMap.data).toHaveProperty('ASR_BACKEND');
  });

  it('the optional PodMonitor scrapes the server pods on the named port, and copies the label the KEDA query filters on', () => {
    const spec = podMonitor.spec;
    const labels = pod.metadata!.labels!;
    const selector = spec.selector.matchLabels!;
    expect(Object.keys(selector).length).toBeGreaterThan(0);
    for (const [k, v] of Object.entries(selector)) expect(labels[k], k).toBe(v);
    expect(spec.selector.matchExpressions).toBeUndefined();

    expect(spec.podMetricsEndpoints).toHaveLength(1);
    const endpoint = spec.podMetricsEndpoints![0]!;
    expect(endpoint.path ?? '/metrics').toBe('/metrics');
    // By name, so the scrape follows the container port; it is the port the Service and the probes use.
    expect(typeof endpoint.port).toBe('string');
    expect(containerPort(server, endpoint.port!)).toBe(containerPort(server, service.spec!.ports![0]!.targetPort!));

    const copied = targetLabels(labels, spec.podTargetLabels!);
    const matchers = [...scaledObject.spec.triggers[0]!.metadata.query!.matchAll(/(\w+)="([^"]*)"/g)].map(([, name, value]) => [name, value]);
    expect(matchers.length).toBeGreaterThan(0);
    for (const [name, value] of matchers) expect(copied[name!], `${name} from podTargetLabels`).toBe(value);
  });

  it('autoscales the Deployment with KEDA on metrics the service exports, never below one pod', () => {
    const spec = scaledObject.spec;
    expect(spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: deployment.metadata!.name });
    expect(spec.minReplicaCount).toBeGreaterThanOrEqual(1);
    expect(spec.maxReplicaCount).toBeGreaterThanOrEqual(spec.minReplicaCount!);
    // KEDA owns the replica count; a fixed one in the Deployment would reset it on every apply.
    expect(deployment.spec!.replicas).toBeUndefined();
    const trigger = spec.triggers[0]!;
    expect(trigger.type).toBe('prometheus');
    expect(Number(trigger.metadata.threshold)).toBe(Number(configMap.data!.WORKERS) * Number(configMap.data!.MAX_BATCH));
    const metricsSource = readFileSync(join(repoRoot, 'src', 'metrics.ts'), 'utf8');
    const used = [...new Set(trigger.metadata.query!.match(/\b(?:asr|http)_[a-z_]+\b/g))];
    expect(used.sort()).toEqual(['asr_queue_depth', 'asr_running_sequences']);
    for (const name of used) expect(metricsSource).toContain(`'${name}'`);
  });
});

describe("the autoscaler's query against a real Prometheus scraping the service", () => {
  const trigger = scaledObject.spec.triggers[0]!;
  // Only the labels the PodMonitor copies (podTargetLabels). The annotation-based scrape job's labelmap copies all
  // of the pod's labels, a superset, so the query that works here works there too.
  const podLabels = targetLabels(pod.metadata!.labels!, podMonitor.spec.podTargetLabels!);
  let svc: TestServer;
  let prometheus: Prometheus;

  beforeAll(async () => {
    svc = await startTestServer({ MAX_QUEUE: '4' });
    prometheus = await startPrometheus({
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      scrape_configs: [{ job_name: 'kubernetes-pods', static_configs: [{ targets: [new URL(svc.baseURL).host], labels: podLabels }] }],
    });
  });
  afterAll(async () => {
    await prometheus?.stop();
    await svc?.stop('test done');
  });

  const load = async () => {
    const samples = await prometheus.query(trigger.metadata.query!);
    return samples.length === 1 ? samples[0]!.value : undefined;
  };

  it('is one number: zero when idle, and above zero while a transcription is admitted', async () => {
    expect(await prometheus.until('the query to see the service', load)).toBe(0);

    // A held queue place (as a request has once its upload is read) counts as queued until it is released.
    const held = svc.pool.admit();
    if ('refused' in held) throw new Error(`no place: ${held.refused}`);
    try {
      const busy = await prometheus.until('the query to see the admitted request', async () => {
        const v = await load();
        return v !== undefined && v > 0 ? v : undefined;
      });
      // replicas = ceil(query / threshold): at least one pod's worth of work
      expect(Math.ceil(busy / Number(trigger.metadata.threshold))).toBeGreaterThanOrEqual(1);
    } finally {
      held.release();
    }
  });

  it('finds nothing when the pod label does not match, which KEDA reports as an error, not as zero load', async () => {
    const elsewhere = trigger.metadata.query!.replaceAll('"mega-asr"', '"another-service"');
    expect(elsewhere).not.toBe(trigger.metadata.query);
    expect(await prometheus.query(elsewhere)).toEqual([]);
    expect(trigger.metadata.ignoreNullValues).toBe('false');
  });
});
