import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../../tools/onnx-graph.js';
import { repoRoot } from '../support/shared.js';
import { lavapipeIcd, useLavapipe } from '../support/webgpu.js';

const SCRIPT = join(repoRoot, 'tools', 'lavapipe.sh');
const dir = mkdtempSync(join(tmpdir(), 'lavapipe-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const lavapipe = (env: NodeJS.ProcessEnv = process.env) => spawnSync('bash', [SCRIPT], { encoding: 'utf8', env, timeout: 300_000 });

/**
 * The environment with stand-ins for system commands first on PATH: a machine that lacks something this one has
 * (the script's checks ask ldconfig, ldd and dpkg-query). Nothing is installed: the script runs without
 * --install-missing.
 */
function withStandIns(commands: Record<string, string>): NodeJS.ProcessEnv {
  const bin = mkdtempSync(join(dir, 'bin-'));
  for (const [name, body] of Object.entries(commands)) {
    writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  }
  return { ...process.env, PATH: `${bin}:${process.env.PATH}` };
}

/** y = x·W + b for x [rows, 3], W [3, 2]: small enough that the first shader compilation stays short. */
const W = [0.5, -1, 2, 0.25, -0.75, 1.5];
const B = [0.125, -0.5];
function affineModel(): Uint8Array {
  const g = new GraphBuilder('affine');
  const x = g.input('x', 'float32', ['rows', 3]);
  g.output('y', 'float32', ['rows', 2], g.op('Add', [g.op('MatMul', [x, g.f32(W, [3, 2])]), g.f32(B, [2])]));
  return g.build('affine.onnx.data').model;
}
const X = [1, 2, 3, -4, 0.5, 6];
const expectedY = [0, 1].flatMap((r) => [0, 1].map((c) => B[c]! + [0, 1, 2].reduce((s, k) => s + X[r * 3 + k]! * W[k * 2 + c]!, 0)));

describe('tools/lavapipe.sh', () => {
  it('prints only the ICD json path, the same path again on a second run, which only checks and is quick', () => {
    const first = lavapipe();
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^\/\S+\/lvp_icd\.json\n$/);
    const started = performance.now();
    const second = lavapipe();
    const ms = performance.now() - started;
    expect(second.status, second.stderr).toBe(0);
    expect(second.stdout).toBe(first.stdout);
    expect(ms).toBeLessThan(2000); // measured ~0.2 s; a download takes seconds
    expect(lavapipeIcd()).toBe(first.stdout.trim());
  });

  it('writes a json that names the lavapipe library by an absolute path that exists', () => {
    const icd = JSON.parse(readFileSync(lavapipeIcd(), 'utf8')) as { ICD: { library_path: string; api_version: string } };
    expect(isAbsolute(icd.ICD.library_path)).toBe(true);
    expect(icd.ICD.library_path).toMatch(/\/libvulkan_lvp\.so$/);
    expect(existsSync(icd.ICD.library_path)).toBe(true);
    expect(icd.ICD.api_version).toMatch(/^1\.[3-9]\./); // Mesa 25's, not bookworm's 22.3 (which Dawn refuses)
  });

  it('names the package to install when the Vulkan loader is missing, and prints no path', () => {
    const run = lavapipe(withStandIns({ ldconfig: 'echo "0 libs found in cache"' }));
    expect(run.status).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('the Vulkan loader libvulkan.so.1 is missing: install the Debian package(s) libvulkan1 (apt-get install libvulkan1)');
  });

  it('names the packages that carry the libraries lavapipe cannot find, and prints no path', () => {
    const run = lavapipe(
      withStandIns({
        ldd: 'echo "\tlibLLVM-15.so.1 => not found"; echo "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1"',
        'dpkg-query': 'case "$*" in *libllvm15*) exit 1;; esac; exec /usr/bin/dpkg-query "$@"',
      }),
    );
    expect(run.status).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('lavapipe needs libraries that are not installed (libLLVM-15.so.1): install the Debian package(s) libllvm15 (apt-get install libllvm15)');
  });
});

describe('the WebGPU provider on lavapipe', () => {
  it('creates a webgpu session that computes a small graph, with outputs that can stay on the device', async () => {
    useLavapipe();
    const model = affineModel();
    const x = new Tensor('float32', Float32Array.from(X), [2, 3]);

    const session = await InferenceSession.create(model, { executionProviders: ['webgpu'] });
    const { y } = await session.run({ x });
    expect(y!.dims).toEqual([2, 2]);
    const got = Array.from(y!.data as Float32Array);
    for (const [i, v] of got.entries()) expect(v).toBeCloseTo(expectedY[i]!, 5);

    // The output in a WebGPU buffer: only possible when the WebGPU provider runs on a real adapter.
    const onDevice = await InferenceSession.create(model, { executionProviders: ['webgpu'], preferredOutputLocation: 'gpu-buffer' });
    const kept = (await onDevice.run({ x })).y!;
    expect(kept.location).toBe('gpu-buffer');
    kept.dispose();
    await Promise.all([session.release(), onDevice.release()]);
  });

  it('without a Vulkan driver, creating a webgpu session is an error the process catches, not an abort', () => {
    const file = join(dir, 'affine.onnx');
    writeFileSync(file, affineModel());
    const probe = `
      import { InferenceSession } from 'onnxruntime-node';
      try {
        await InferenceSession.create(${JSON.stringify(file)}, { executionProviders: ['webgpu'] });
        console.log('created');
      } catch (e) {
        console.log('caught: ' + e.message);
        process.exit(3);
      }`;
    const env: NodeJS.ProcessEnv = { ...process.env, ORT_DISABLE_TELEMETRY: '1', VK_ICD_FILENAMES: join(dir, 'no-such-icd.json') };
    delete env.VK_DRIVER_FILES;
    delete env.VK_ADD_DRIVER_FILES;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', probe], { cwd: repoRoot, env, encoding: 'utf8', timeout: 60_000 });
    expect(run.signal, run.stderr).toBeNull();
    expect(run.status, run.stdout + run.stderr).toBe(3);
    expect(run.stdout).toMatch(/^caught: .*Failed to get a WebGPU adapter/);
  });
});
