import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../support/shared.js';
import { tempDir } from '../support/transcode.js';

const execFileP = promisify(execFile);
const tmp = tempDir('mega-asr-gpu-sh-');
afterAll(() => tmp.remove());

async function bash(args: string[], env: Record<string, string> = {}, cwd = repoRoot) {
  try {
    const { stdout, stderr } = await execFileP('bash', args, { cwd, env: { ...process.env, ...env }, timeout: 60_000 });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, output: e.stdout + e.stderr };
  }
}

/** A folder holding one fake `nvidia-smi` that exits with `code`, put first on PATH. */
function fakeNvidiaSmi(name: string, code: number): string {
  const dir = tmp.path(name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'nvidia-smi'), `#!/bin/sh\necho "GPU 0: Fake GPU (UUID: GPU-0)"\nexit ${code}\n`);
  chmodSync(join(dir, 'nvidia-smi'), 0o755);
  return `${dir}:${process.env.PATH}`;
}

describe('GPU scripts', () => {
  it.each(['bench/gpu.sh', 'bench/device/run.sh', 'bench/device/pack.sh'])('%s parses (bash -n)', async (script) => {
    const r = await bash(['-n', script]);
    expect(r.output).toBe('');
    expect(r.code).toBe(0);
  });

  it('gpu.sh stops with one line when the host has no usable NVIDIA driver', async () => {
    const out = tmp.path('no-gpu');
    const r = await bash(['bench/gpu.sh', out], { PATH: fakeNvidiaSmi('smi-fails', 9) });
    expect(r.code).toBe(1);
    expect(readFileSync(join(out, 'summary.txt'), 'utf8')).toBe('STOP: nvidia-smi does not list a GPU: no NVIDIA driver here\n');
  });

  it('gpu.sh names what is missing next (the CUDA provider and how to fetch it, else the clips) before doing any work', async () => {
    const out = tmp.path('no-provider');
    const emptyClips = tmp.path('no-clips');
    mkdirSync(emptyClips);
    const r = await bash(['bench/gpu.sh', out], { PATH: fakeNvidiaSmi('smi-ok', 0), CLIPS_DIR: emptyClips });
    expect(r.code).toBe(1);
    const summary = readFileSync(join(out, 'summary.txt'), 'utf8');
    // CI installs onnxruntime-node with ONNXRUNTIME_NODE_INSTALL=skip; a host with the provider stops at the clips.
    const provider = join(repoRoot, 'node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so');
    if (existsSync(provider)) expect(summary).toMatch(/^STOP: (the CUDA provider cannot load: .* not found|no \.wav clips in )/);
    else expect(summary).toMatch(/^STOP: .*libonnxruntime_providers_cuda\.so is missing: fetch the CUDA provider with\n {2}ONNXRUNTIME_NODE_INSTALL=cuda12 node /);
    expect(summary.split('\n').filter((l) => l.startsWith('STOP')).length).toBe(1);
    expect(existsSync(join(out, 'env.txt'))).toBe(false); // stopped before the report and the build
  });

  it('run.sh on a checkout without the packed bundle says how to make it, after reporting the machine', async () => {
    const checkout = tmp.path('checkout');
    mkdirSync(join(checkout, 'bench', 'device'), { recursive: true });
    copyFileSync(join(repoRoot, 'bench/device/run.sh'), join(checkout, 'bench/device/run.sh'));
    const out = tmp.path('device-out');
    const r = await bash(['bench/device/run.sh', out], { DEVICE_WORK: tmp.path('device-work') }, checkout);
    expect(r.code).toBe(1);
    expect(readFileSync(join(out, 'summary.txt'), 'utf8')).toMatch(
      /^STOP: .*bench\/device\/dist\/node\.xz is missing: run bench\/device\/pack\.sh on the x86-64 dev machine and carry bench\/device\/dist\n$/,
    );
    expect(readFileSync(join(out, 'env.txt'), 'utf8')).toMatch(/## nvidia-smi[\s\S]*## Vulkan\nloader: /);
    expect(readFileSync(join(out, 'run.log'), 'utf8')).toContain('STOP: ');
  });
});
