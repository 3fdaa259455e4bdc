import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { type Copy, DockerfileParser, type Instruction } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../support/shared.js';

// No Docker engine runs here: the Dockerfile is checked by parsing it with a real parser (dockerfile-ast).
const dockerfile = DockerfileParser.parse(readFileSync(join(repoRoot, 'Dockerfile'), 'utf8'));
const froms = dockerfile.getFROMs();
const finalFrom = froms[froms.length - 1]!;
const stageNames = new Set(froms.map((f) => f.getBuildStage()).filter((s): s is string => s !== null));
const lineOf = (i: Instruction) => i.getRange().start.line;
const instructions = dockerfile.getInstructions();
const finalStage = instructions.filter((i) => lineOf(i) >= lineOf(finalFrom));
const buildStage = instructions.filter((i) => lineOf(i) < lineOf(finalFrom));
const keyword = (list: Instruction[], k: string) => list.filter((i) => i.getKeyword() === k);
const text = (i: Instruction) => i.getArgumentsContent() ?? '';
const args = (i: Instruction) => i.getArguments().map((a) => a.getValue());
/** COPY --from=<stage>, or null for a copy from the build context. */
const copyFrom = (c: Copy) => c.getFromFlag()?.getValue() ?? null;
/** The commands of a RUN instruction in order (split at && and ;), each as its words. */
const shellCommands = (run: Instruction) =>
  text(run)
    .split(/&&|;/)
    .map((command) => command.replace(/\\\n/g, ' ').trim().split(/\s+/));
/** Paths named by `rm` commands in RUN instructions. */
const removedPaths = (runs: Instruction[]) =>
  runs
    .flatMap(shellCommands)
    .filter((words) => words[0] === 'rm')
    .flatMap((words) => words.slice(1).filter((w) => !w.startsWith('-')));

// What the pinned onnxruntime-node downloads for its CUDA provider, read from its own install metadata.
const requireHere = createRequire(import.meta.url);
const ortRoot = dirname(requireHere.resolve('onnxruntime-node/package.json'));
const ortVersion = (requireHere('onnxruntime-node/package.json') as { version: string }).version;
const installMetadata = requireHere(join(ortRoot, 'script', 'install-metadata.js')) as {
  requirements: Record<string, string[]>;
  packages: Record<string, { name: string; versions: { feed: string; version: string }[] }>;
  manifests: Record<string, Record<string, { package: string; path: string }>>;
};

/**
 * CUDA major of onnxruntime's official GPU builds (the NuGet package onnxruntime-node's install script fetches),
 * from the release that introduced it: 1.19 made CUDA 12 the default, 1.27 moved nuget.org, PyPI and npm to
 * CUDA 13 (microsoft/onnxruntime#29032 "CUDA 12 packages are deprecated", #28773, #29500). The install script's
 * manifest is still named "cuda12", which is why the major is looked up by version, not read from that name.
 */
const CUDA_MAJOR_SINCE: [minor: number, cudaMajor: number][] = [
  [27, 13],
  [19, 12],
];

function cudaMajorOfOnnxruntime(version: string): number {
  const [major, minor] = version.split('.').map(Number) as [number, number];
  if (major !== 1) throw new Error(`onnxruntime ${version}: extend CUDA_MAJOR_SINCE for a new major`);
  const row = CUDA_MAJOR_SINCE.find(([since]) => minor >= since);
  if (!row) throw new Error(`onnxruntime ${version} predates the CUDA 12 builds`);
  return row[1];
}

/** Docker duration ("90s", "30m", "1h30m") in seconds. */
function seconds(duration: string): number {
  const units: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };
  let total = 0;
  for (const [, n, unit] of duration.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(n) * units[unit!]!;
  return total;
}

/** .dockerignore patterns as regular expressions (enough of its glob syntax for the file we keep). */
const dockerignore = readFileSync(join(repoRoot, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const ignoredBy = (path: string) =>
  dockerignore.find((pattern) => {
    const body = pattern
      .split('**/')
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*'))
      .join('(?:.*/)?');
    return new RegExp(`^${body}(/.*)?$`).test(path);
  });

describe('Dockerfile', () => {
  it('has a build stage and a runtime stage that copies only build outputs from it', () => {
    expect(froms.length).toBeGreaterThanOrEqual(2);
    const fromStages = dockerfile
      .getCOPYs()
      .filter((c) => lineOf(c) >= lineOf(finalFrom))
      .map(copyFrom)
      .filter((s) => s !== null);
    expect(fromStages.length).toBeGreaterThan(0);
    for (const stage of fromStages) expect(stageNames).toContain(stage);
  });

  it('pins every base image to an exact version, never latest', () => {
    for (const from of froms) {
      const tag = from.getImageTag();
      const digest = from.getImageDigest();
      expect(digest ?? tag, from.getImage() ?? '').toBeTruthy();
      if (!digest) expect(tag, from.getImage() ?? '').toMatch(/^\d+\.\d+\.\d+-/);
      expect(tag).not.toBe('latest');
    }
    const node = froms.find((f) => f.getImageName() === 'node')!;
    const engines = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { engines: { node: string } })
      .engines.node;
    const [needMajor, needMinor] = engines.replace('>=', '').split('.').map(Number) as [number, number];
    const [major, minor] = node.getImageTag()!.split('.').map(Number) as [number, number];
    expect(major).toBe(needMajor);
    expect(minor).toBeGreaterThanOrEqual(needMinor);
  });

  it('runs on a CUDA + cuDNN runtime base whose CUDA major is the one the pinned onnxruntime-node provider needs', () => {
    const manifests = installMetadata.requirements['linux/x64']!;
    expect(manifests).toHaveLength(1);
    const nuget = installMetadata.packages[`nuget:linux/x64:${manifests[0]}`]!;
    // The provider comes from the GPU NuGet package of exactly this onnxruntime version.
    expect(nuget.name).toBe('Microsoft.ML.OnnxRuntime.Gpu.Linux');
    expect(nuget.versions.map((v) => v.version)).toEqual([ortVersion]);

    expect(finalFrom.getImageName()).toBe('nvidia/cuda');
    const tag = /^(\d+)\.(\d+)\.(\d+)-cudnn-runtime-ubuntu\d+\.\d+$/.exec(finalFrom.getImageTag() ?? '');
    expect(tag, `runtime base tag ${finalFrom.getImageTag()}`).not.toBeNull();
    expect(Number(tag![1])).toBe(cudaMajorOfOnnxruntime(ortVersion));
  });

  it('fetches the CUDA provider in its own step, with a manifest name the install script knows', () => {
    const fetch = keyword(buildStage, 'RUN').filter((r) => text(r).includes('onnxruntime-node/script/install.js'));
    expect(fetch).toHaveLength(1);
    const manifest = /ONNXRUNTIME_NODE_INSTALL=(\S+)/.exec(text(fetch[0]!))?.[1];
    expect(installMetadata.requirements['linux/x64']).toContain(manifest);
    // npm ci itself must not run install scripts (the download would happen unannounced, before the sources).
    const ci = keyword(buildStage, 'RUN').filter((r) => /\bnpm ci\b/.test(text(r)));
    expect(ci).toHaveLength(1);
    expect(text(ci[0]!)).toMatch(/--ignore-scripts|ONNXRUNTIME_NODE_INSTALL=skip/);
  });

  it('proves in the runtime stage that the provider files are there and their libraries resolve on the base', () => {
    const checks = keyword(finalStage, 'RUN').filter((r) => /ldd\b.*libonnxruntime_providers_cuda\.so/.test(text(r)));
    expect(checks).toHaveLength(1);
    const commands = shellCommands(checks[0]!);
    const lddAt = commands.findIndex((words) => words.includes('ldd'));
    // ldd on a missing file prints "No such file", which a grep for "not found" lets through: each file the
    // install script fetched (and the build kept) must be tested for with test -f before ldd runs.
    const manifests = installMetadata.requirements['linux/x64']!;
    const fetched = manifests.flatMap((m) => Object.keys(installMetadata.manifests[`linux/x64:${m}`]!).map((f) => f.replace(/^\.\//, '')));
    const removed = removedPaths(keyword(buildStage, 'RUN')).map((p) => p.split('/').pop());
    const kept = fetched.filter((f) => !removed.includes(f));
    expect(kept.sort()).toEqual(['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so']);
    const testedBeforeLdd = commands.slice(0, lddAt).filter((w) => w[0] === 'test' && w[1] === '-f').map((w) => w[2]);
    expect(testedBeforeLdd.sort()).toEqual(kept);
  });

  it('builds every stage for linux/amd64, whatever the host: the provider exists only for linux/x64', () => {
    const platformsWithProvider = Object.entries(installMetadata.requirements)
      .filter(([platform, manifests]) => platform.startsWith('linux/') && manifests.length > 0)
      .map(([platform]) => platform);
    expect(platformsWithProvider).toEqual(['linux/x64']);
    for (const from of froms) expect(from.getPlatformFlag()?.getValue(), from.getImage() ?? '').toBe('linux/amd64');
    // A constant --platform is the intent here, so BuildKit's check against it is skipped, by a directive it reads.
    expect(dockerfile.getDirectives().map((d) => `${d.getName()}=${d.getValue()}`)).toContain('check=skip=FromPlatformFlagConstDisallowed');
  });

  it('keeps only linux/x64 onnxruntime binaries', () => {
    const binRoot = join(ortRoot, 'bin', 'napi-v6');
    const platforms = readdirSync(binRoot).flatMap((os) => readdirSync(join(binRoot, os)).map((arch) => `${os}/${arch}`));
    expect(platforms).toContain('linux/x64');
    const removed = removedPaths(keyword(buildStage, 'RUN'))
      .filter((a) => a.startsWith('node_modules/onnxruntime-node/bin/napi-v6/'))
      .map((a) => a.slice('node_modules/onnxruntime-node/bin/napi-v6/'.length).replace(/\/$/, ''));
    for (const platform of platforms.filter((p) => p !== 'linux/x64')) {
      expect(removed.some((r) => platform === r || platform.startsWith(`${r}/`)), `${platform} removed`).toBe(true);
    }
    expect(removed.some((r) => 'linux/x64'.startsWith(r))).toBe(false);
  });

  it('keeps the Silero VAD model the server reads and drops the browser runtime around it', () => {
    const source = readFileSync(join(repoRoot, 'src', 'audio', 'silero-vad.ts'), 'utf8');
    const model = /const MODEL = '(@ricky0123\/vad-web\/dist\/[^']+)'/.exec(source)?.[1];
    expect(model).toBeDefined();
    expect(existsSync(requireHere.resolve(model!))).toBe(true);
    const runs = keyword(buildStage, 'RUN');
    expect(removedPaths(runs)).toContain('node_modules/onnxruntime-web');
    // the server never imports onnxruntime-web
    const sources = readdirSync(join(repoRoot, 'src'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(sources.filter((e) => readFileSync(join(e.parentPath, e.name), 'utf8').includes('onnxruntime-web'))).toEqual([]);
    const finds = runs.flatMap(shellCommands).filter((w) => w[0] === 'find');
    expect(finds).toContainEqual(['find', 'node_modules/@ricky0123/vad-web/dist', '-type', 'f', '!', '-name', model!.split('/').pop(), '-delete']);
  });

  it('installs ffmpeg and tini, and starts the server under tini', () => {
    const installs = keyword(finalStage, 'RUN').map(text).filter((t) => t.includes('apt-get install'));
    expect(installs.join(' ')).toMatch(/\bffmpeg\b/);
    expect(installs.join(' ')).toMatch(/\btini\b/);
    const entrypoint = keyword(finalStage, 'ENTRYPOINT');
    expect(entrypoint).toHaveLength(1);
    expect(args(entrypoint[0]!).join(' ')).toMatch(/^\["?\/usr\/bin\/tini"?,?\s+"?--"?\]$/);
    expect(args(keyword(finalStage, 'CMD')[0]!).join(' ')).toMatch(/node.*dist\/server\.js/);
  });

  it("carries what the webgpu backend needs on an NVIDIA host: the Vulkan loader, the libraries NVIDIA's driver loads, the graphics capability", () => {
    const installed = keyword(finalStage, 'RUN')
      .flatMap(shellCommands)
      .filter((w) => w[0] === 'DEBIAN_FRONTEND=noninteractive' && w[1] === 'apt-get' && w[2] === 'install')
      .flat();
    for (const pkg of ['libvulkan1', 'libxext6', 'libegl1']) expect(installed, pkg).toContain(pkg);
    // The toolkit mounts NVIDIA's Vulkan ICD only when asked for graphics; compute and utility keep CUDA and nvidia-smi.
    const capabilities = dockerfile
      .getENVs()
      .filter((e) => lineOf(e) >= lineOf(finalFrom))
      .flatMap((e) => e.getProperties())
      .filter((p) => p.getName() === 'NVIDIA_DRIVER_CAPABILITIES')
      .map((p) => p.getValue()!.split(','));
    expect(capabilities).toHaveLength(1);
    expect(capabilities[0]!.sort()).toEqual(['compute', 'graphics', 'utility']);
  });

  it('runs as the non-root user 10001, which owns the /data volume', () => {
    const users = keyword(finalStage, 'USER');
    expect(users.length).toBeGreaterThan(0);
    // Numeric, so Kubernetes' runAsNonRoot can verify it.
    expect(text(users[users.length - 1]!)).toBe('10001:10001');
    const setup = keyword(finalStage, 'RUN').map(text).join('\n');
    expect(setup).toMatch(/useradd\b[^\n]*--uid 10001/);
    expect(setup).toMatch(/chown 10001:10001 \/data/);
    expect(keyword(finalStage, 'VOLUME').map(text)).toContain('/data');
  });

  it('sets ORT_DISABLE_TELEMETRY=1, MALLOC_ARENA_MAX=2 and HF_HOME to the volume', () => {
    const env = new Map(
      dockerfile
        .getENVs()
        .filter((e) => lineOf(e) >= lineOf(finalFrom))
        .flatMap((e) => e.getProperties().map((p) => [p.getName(), p.getValue()] as const)),
    );
    expect(env.get('ORT_DISABLE_TELEMETRY')).toBe('1');
    expect(env.get('MALLOC_ARENA_MAX')).toBe('2');
    expect(env.get('HF_HOME')).toBe('/data');
    expect(env.has('MODEL_DIR')).toBe(false);
  });

  it('checks health on /ready, with a start period long enough for the first model download', () => {
    const checks = dockerfile.getHEALTHCHECKs();
    expect(checks).toHaveLength(1);
    const check = checks[0]!;
    expect(check.getSubcommand()?.getValue()).toBe('CMD');
    expect(text(check)).toContain('/ready');
    const flags = new Map(check.getFlags().map((f) => [f.getName(), f.getValue() ?? '']));
    expect(seconds(flags.get('start-period') ?? '0s')).toBeGreaterThanOrEqual(15 * 60);
    expect(seconds(flags.get('timeout') ?? '30s')).toBeLessThan(seconds(flags.get('interval') ?? '30s'));
  });

  it('carries no secrets: no ARG or ENV that looks like a token, key or password', () => {
    const names = [
      ...dockerfile.getARGs().map((a) => a.getProperty()?.getName() ?? ''),
      ...dockerfile.getENVs().flatMap((e) => e.getProperties().map((p) => p.getName())),
    ];
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) expect(name).not.toMatch(/TOKEN|KEY|PASSWORD|SECRET|CREDENTIAL/i);
  });

  it('bakes no model in: nothing copied from models or *.onnx, nothing downloaded from the hub at build time', () => {
    expect(keyword(instructions, 'ADD')).toHaveLength(0);
    for (const copy of keyword(instructions, 'COPY')) {
      expect(text(copy)).not.toMatch(/\.onnx|\.safetensors|(^|[\s/])models?(\/|\s|$)/);
    }
    for (const run of keyword(instructions, 'RUN')) {
      expect(text(run)).not.toMatch(/huggingface\.co|hf\.co|HF_ENDPOINT|mega-asr\s+download|cli\.js\s+download|huggingface-cli/);
    }
    // The build context cannot carry one in either.
    for (const path of ['models/mega-asr-onnx/encoder.onnx', 'x/decoder.onnx.data', 'models']) {
      expect(ignoredBy(path), path).toBeTruthy();
    }
  });

  it('copies only sources that exist in the repository and are not excluded by .dockerignore', () => {
    const copies = dockerfile.getCOPYs().filter((c) => copyFrom(c) === null);
    expect(copies.length).toBeGreaterThan(0);
    const sources = copies.flatMap((c) => args(c).filter((a) => !a.startsWith('--')).slice(0, -1));
    expect(sources).toEqual(expect.arrayContaining(['package.json', 'openapi.yaml', 'web', 'src']));
    for (const source of sources) {
      expect(existsSync(join(repoRoot, source)), `${source} exists`).toBe(true);
      expect(ignoredBy(source), `${source} is ignored by .dockerignore`).toBeUndefined();
    }
  });

  it('reads .dockerignore the way Docker does, so the checks above mean something', () => {
    expect(ignoredBy('node_modules')).toBe('node_modules');
    expect(ignoredBy('node_modules/fastify/package.json')).toBe('node_modules');
    expect(ignoredBy('a/b/model.onnx')).toBe('**/*.onnx');
    expect(ignoredBy('src/server.ts')).toBeUndefined();
    expect(ignoredBy('openapi.yaml')).toBeUndefined();
  });
});
