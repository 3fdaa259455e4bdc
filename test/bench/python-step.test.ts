import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { floorGraph } from '../../bench/floor.js';
import { DecoderInputs } from '../../src/asr/decoder-io.js';
import { AsrEngine } from '../../src/asr/engine.js';
import { rewriteGraph } from '../../src/asr/lean-graph.js';
import { findModelFiles } from '../../src/asr/model-dir.js';
import { AsrProcessor } from '../../src/asr/processor.js';
import { StageLock } from '../../src/asr/stage-lock.js';
import { decodeWavToPcm } from '../../src/audio/pcm.js';
import { writeNpy } from '../../tools/fixture/embedding-files.js';
import { decodeAlone } from '../support/decode-alone.js';
import { fixtureModel } from '../support/fixture-models.js';
import { repoRoot, sharedPath } from '../support/shared.js';

const run = promisify(execFile);
const scratch = mkdtempSync(join(tmpdir(), 'python-step-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The python3 launcher of tools/python-ort.sh (downloaded on a machine's first call, then checked): it must be there. */
function pythonOrt(): string {
  try {
    return execFileSync('bash', [join(repoRoot, 'tools', 'python-ort.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 }).trim();
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr?.trim();
    throw new Error(`tools/python-ort.sh could not provide Python onnxruntime: ${stderr || (e as Error).message}`);
  }
}

interface PythonStepReport {
  onnxruntime: string;
  context: number;
  threads: number;
  steps: number;
  warmupSteps: number;
  graphs: Record<'prefill' | 'step', { file: string; greedy: boolean }>;
  stepMs: { median: number; p90: number; min: number };
  runMs: { median: number };
  floor: { file: string; ms: { median: number; min: number } } | null;
  prefillMs: number;
  promptIds: number[] | null;
  ids: number[];
}

const STEPS = 10;
/** clips whose prompts the fixture turns into different sentences */
const CLIPS = ['echo', 'mixed'];

/**
 * The fixture decoder checks its cache at every step and says a sentence only when prefill and steps handed it the
 * right cache, mask and positions (CORRUPT tokens otherwise): equal ids mean the Python loop fed its cache as the
 * engine does.
 */
describe('bench/python_step.py: the model card\'s plain Python greedy loop', () => {
  let python: string;
  let engine: AsrEngine;
  let model: string;
  const prompts: { name: string; rows: string; ids: number[] }[] = [];

  const pythonStep = async (args: string[]): Promise<PythonStepReport> => {
    const out = join(scratch, `report-${Math.random().toString(36).slice(2)}.json`);
    const { stdout, stderr } = await run(python, [join(repoRoot, 'bench', 'python_step.py'), '--model-dir', model, '--steps', String(STEPS - 2), '--out', out, ...args], {
      timeout: 60_000,
    });
    // onnxruntime may warn on stderr; an error, a traceback or the schema lines python_step.py drops may not show
    expect(stderr.split('\n').filter((line) => /error|traceback|\[E:/i.test(line))).toEqual([]);
    expect(stdout).toMatch(/^python-step onnxruntime 1\.\d+: .* step ms p50 /);
    return JSON.parse(readFileSync(out, 'utf8')) as PythonStepReport;
  };

  beforeAll(async () => {
    python = pythonOrt();
    model = fixtureModel('default');
    // the engine's CPU defaults: lean graphs with int8 activations
    engine = await AsrEngine.load({ modelDir: model, device: 'cpu', backend: 'host', logger: { warn: () => {} } });
    const processor = new AsrProcessor(engine.sessions.encoder, engine.encoderContract, engine.tokenizer, new StageLock());
    const inputs = new DecoderInputs(engine.embeddings, engine.encoderContract.output.type);
    for (const name of CLIPS) {
      const pcm = decodeWavToPcm(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));
      const { prompt } = await processor.process(pcm, {});
      // the rows the engine's prefill is fed: token embeddings with the encoder's rows in place of the audio pads
      const rows = inputs.tokens(engine.prefillContract, prompt.ids, 1, prompt.audio);
      const file = join(scratch, `${name}.npy`);
      writeNpy(file, rows.data as Float32Array, [rows.dims[1]!, rows.dims[2]!], 'float32');
      prompts.push({ name, rows: file, ids: await decodeAlone(engine.backend, prompt, STEPS) });
    }
  }, 360_000);
  afterAll(() => engine?.release());

  it('chooses the engine\'s greedy ids over the model\'s original graphs (logits, argmax in numpy)', async () => {
    // the fixture's sentences differ, and each ends a sentence: not a CORRUPT run
    expect(prompts[0]!.ids).not.toEqual(prompts[1]!.ids);
    for (const p of prompts) {
      const report = await pythonStep(['--prompt-embeds', p.rows]);
      expect(report.graphs.step).toEqual({ file: findModelFiles(model).step, greedy: false });
      expect(report.ids).toEqual(p.ids);
      expect(report.promptIds).toBeNull();
      // every core by default, as bench:step
      expect(report.threads).toBe(availableParallelism());
      expect(report.steps + report.warmupSteps).toBe(STEPS);
      expect(report.stepMs.min).toBeGreaterThan(0);
      expect(report.stepMs.p90).toBeGreaterThanOrEqual(report.stepMs.median);
      expect(report.runMs.median).toBeLessThanOrEqual(report.stepMs.median);
    }
  });

  it('runs the engine\'s rewritten lean graphs from the graph cache, their weights found in the model directory', async () => {
    const files = findModelFiles(model);
    // the files the engine loaded: the same rewrite is cached under the same name
    const prefill = await rewriteGraph(files.prefill, { greedy: 'prefill', int8Matmuls: true, sharedKvHeads: true });
    const step = await rewriteGraph(files.step, { greedy: 'step', int8Matmuls: true, sharedKvHeads: true });
    // (the fixture's matmuls are plain MatMul: no int8 switch here; the full-size stand-in has 4-bit ones)
    expect(prefill.greedy && step.greedy && step.file !== files.step).toBe(true);
    const report = await pythonStep(['--prompt-embeds', prompts[0]!.rows, '--graphs', `${prefill.file},${step.file}`]);
    expect(report.graphs).toEqual({ prefill: { file: prefill.file, greedy: true }, step: { file: step.file, greedy: true } });
    expect(report.ids).toEqual(prompts[0]!.ids);
  });

  it('draws a random text prompt of --context tokens by default, and runs the step\'s floor graph beside each step', async () => {
    const step = findModelFiles(model).step;
    const floorFile = join(scratch, 'floor.onnx');
    writeFileSync(floorFile, floorGraph(readFileSync(step), step).model);
    const report = await pythonStep(['--context', '24', '--floor', floorFile, '--threads', '1']);
    expect(report.context).toBe(24);
    expect(report.threads).toBe(1);
    expect(report.promptIds).toHaveLength(24);
    expect(new Set(report.promptIds).size).toBeGreaterThan(20);
    expect(report.ids).toHaveLength(STEPS + 1);
    expect(report.floor?.file).toBe(floorFile);
    expect(report.floor?.ms.min).toBeGreaterThan(0);
  });

  it('says in one line what is wrong with its input', async () => {
    const failure = await run(python, [join(repoRoot, 'bench', 'python_step.py'), '--model-dir', join(scratch, 'nowhere')]).catch((e: { code: number; stderr: string }) => e);
    expect(failure).toMatchObject({ code: 1 });
    expect((failure as { stderr: string }).stderr).toBe(`bench/python_step.py: model directory ${join(scratch, 'nowhere')} does not exist\n`);
  });
});
