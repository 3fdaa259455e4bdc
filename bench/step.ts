/**
 * One decode step, measured through the engine's decoder backend, next to its floor on the same machine: the step
 * graph's weight matmuls alone (bench/floor.ts) run at the same batch size, one floor run before each measured
 * step so both see the same machine (a shared one included). For each batch size x context length: ms per step
 * (median, p90), host ms per step (outside session.run), floor ms, step/floor and tokens/s; with the lean graphs
 * (greedy ids in the graph, src/asr/lean-graph.ts), the original ones, or both; with 4-bit matmuls taking int8
 * activations (the engine's CPU default), fp32 ones, or both. Each variant's floor is read from its own step graph.
 *
 *   npm run bench:step -- --model-dir DIR [--batch 1,2,4,8] [--context 100,300,600] [--steps N]
 *                         [--provider cpu|cuda|webgpu] [--threads N] [--lean on|off|both | --no-lean]
 *                         [--int8 on|off|both] [--out FILE]
 */
process.env.ORT_DISABLE_TELEMETRY ??= '1';

import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { env, InferenceSession, Tensor } from 'onnxruntime-node';
import type { CacheHandle, DecoderBackend } from '../src/asr/backend.js';
import { HostBackend } from '../src/asr/backends/host.js';
import { checkDecoderPair, readDecoderContract, type DecoderContract, type SessionInfo } from '../src/asr/contract.js';
import { DecoderInputs } from '../src/asr/decoder-io.js';
import { EmbeddingLookup, findEmbeddingFiles, loadEmbeddingTableOnce } from '../src/asr/embeddings.js';
import { rewriteGraph, type GraphRewrite } from '../src/asr/lean-graph.js';
import { findModelFiles } from '../src/asr/model-dir.js';
import { buildPrompt } from '../src/asr/prompt.js';
import { Tokenizer } from '../src/asr/tokenizer.js';
import { floorFeeds, floorGraph } from './floor.js';

type Provider = 'cpu' | 'cuda' | 'webgpu';
type Role = 'prefill' | 'step';

interface Settings {
  modelDir: string;
  batches: number[];
  contexts: number[];
  steps: number;
  provider: Provider;
  threads?: number;
  variants: Variant[];
  out?: string;
}

/** Which graph rewrites a measured decoder has. */
interface Variant {
  lean: boolean;
  int8: boolean;
}

const WARMUP_STEPS = 2;

function usage(message: string): never {
  console.error(`bench:step: ${message}`);
  console.error(
    'usage: npm run bench:step -- --model-dir DIR [--batch 1,2,4,8] [--context 100,300,600] [--steps N] [--provider cpu|cuda|webgpu] [--threads N] [--lean on|off|both | --no-lean] [--int8 on|off|both] [--out FILE]',
  );
  process.exit(2);
}

function positiveList(value: string, what: string): number[] {
  const list = value.split(',').map((v) => Number(v.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1)) usage(`--${what} takes positive integers separated by commas; got '${value}'`);
  return [...new Set(list)].sort((a, b) => a - b);
}

function parseSettings(argv: string[]): Settings {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'model-dir': { type: 'string' },
        batch: { type: 'string', default: '1,2,4,8' },
        context: { type: 'string', default: '100,300,600' },
        steps: { type: 'string', default: '8' },
        provider: { type: 'string', default: 'cpu' },
        threads: { type: 'string' },
        lean: { type: 'string', default: 'on' },
        'no-lean': { type: 'boolean', default: false },
        int8: { type: 'string' },
        out: { type: 'string' },
      },
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  if (!values['model-dir']) usage('--model-dir is required');
  const provider = values.provider;
  if (provider !== 'cpu' && provider !== 'cuda' && provider !== 'webgpu') usage(`--provider is cpu, cuda or webgpu; got '${provider}'`);
  const lean = values['no-lean'] ? 'off' : values.lean;
  if (lean !== 'on' && lean !== 'off' && lean !== 'both') usage(`--lean is on, off or both; got '${lean}'`);
  // As the engine: int8 activations on the CPU only, unless asked.
  const int8 = values.int8 ?? (provider === 'cpu' ? 'on' : 'off');
  if (int8 !== 'on' && int8 !== 'off' && int8 !== 'both') usage(`--int8 is on, off or both; got '${int8}'`);
  const choices = (v: string) => (v === 'both' ? [false, true] : [v === 'on']);
  const [steps] = positiveList(values.steps, 'steps');
  const threads = values.threads === undefined ? undefined : positiveList(values.threads, 'threads')[0];
  return {
    modelDir: values['model-dir'],
    batches: positiveList(values.batch, 'batch'),
    contexts: positiveList(values.context, 'context'),
    steps: steps!,
    provider,
    ...(threads ? { threads } : {}),
    variants: choices(int8).flatMap((i) => choices(lean).map((l) => ({ lean: l, int8: i }))),
    ...(values.out ? { out: values.out } : {}),
  };
}

export interface Spread {
  median: number;
  p90: number;
  /** the least: on a busy machine, the closest to the cost itself */
  min: number;
}

function spread(xs: number[]): Spread {
  const sorted = [...xs].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  return { median: round(at(0.5)), p90: round(at(0.9)), min: round(sorted[0]!) };
}

const round = (x: number, digits = 2) => Number(x.toFixed(digits));

function sessionOptions(s: Settings): InferenceSession.SessionOptions {
  // As the engine opens its sessions; the provider is the bench's own choice (webgpu is not an engine device).
  return {
    executionProviders: [s.provider],
    graphOptimizationLevel: 'all',
    enableMemPattern: false,
    logSeverityLevel: 3,
    ...(s.threads ? { intraOpNumThreads: s.threads } : {}),
  };
}

function sessionInfo(session: InferenceSession, file: string): SessionInfo {
  const tensors = (list: InferenceSession['inputMetadata']) =>
    list.map((m) => ({ name: m.name, type: m.isTensor ? m.type : 'non-tensor', shape: m.isTensor ? m.shape : [] }));
  return { file, inputs: tensors(session.inputMetadata), outputs: tensors(session.outputMetadata) };
}

interface Floor {
  matmuls: number;
  quantized: boolean;
  weightMB: number;
  /** one run at this batch size: its wall time */
  run(batch: number): Promise<number>;
  /** every run so far, per batch size */
  runs: Map<number, number[]>;
  release(): Promise<void>;
}

/** The weights-only floor of a step graph, open while its decoder is measured (its weights once more in memory). */
async function openFloor(s: Settings, stepFile: string, dataFolder: string | undefined): Promise<Floor> {
  const graph = floorGraph(readFileSync(stepFile), stepFile, dataFolder);
  const session = await InferenceSession.create(graph.model, { ...sessionOptions(s), ...graph.sessionOptions });
  const feeds = new Map(s.batches.map((b) => [b, floorFeeds(graph, b)]));
  const runs = new Map<number, number[]>(s.batches.map((b) => [b, []]));
  const floor: Floor = {
    matmuls: graph.matmuls,
    quantized: graph.quantized,
    weightMB: round(graph.weightBytes / 2 ** 20, 1),
    runs,
    async run(batch) {
      const t0 = performance.now();
      await session.run(feeds.get(batch)!);
      const ms = performance.now() - t0;
      runs.get(batch)!.push(ms);
      return ms;
    },
    release: () => session.release(),
  };
  // Warm-up, not counted.
  for (const b of s.batches) await session.run(feeds.get(b)!);
  return floor;
}

interface Decoder {
  backend: DecoderBackend;
  prefill: DecoderContract;
  graphs: Record<Role, { file: string; greedy: boolean; int8Matmuls: number; reason?: string }>;
  sessions: InferenceSession[];
  maxBatch: number;
  /** the step graph's floor, read from the graph as loaded */
  floor: Floor;
}

/** The engine's host backend over the model's decoders, with the variant's rewrites, on the chosen provider. */
async function openDecoder(s: Settings, variant: Variant, embeddings: EmbeddingLookup | undefined): Promise<Decoder> {
  const files = findModelFiles(s.modelDir);
  const sessions: InferenceSession[] = [];
  const graphs = {} as Decoder['graphs'];
  let stepGraph = { file: files.step, dataFolder: undefined as string | undefined };
  const open = async (role: Role) => {
    const source = role === 'prefill' ? files.prefill : files.step;
    const want: GraphRewrite = { ...(variant.lean ? { greedy: role } : {}), int8Matmuls: variant.int8 };
    const graph =
      variant.lean || variant.int8
        ? await rewriteGraph(source, want)
        : { file: source, greedy: false, int8Matmuls: 0, reason: undefined, sessionOptions: {} as InferenceSession.SessionOptions };
    graphs[role] = { file: graph.file, greedy: graph.greedy, int8Matmuls: graph.int8Matmuls, ...(graph.reason ? { reason: graph.reason } : {}) };
    if (role === 'step') {
      const extra = graph.sessionOptions.extra as { session?: { model_external_initializers_file_folder_path?: string } } | undefined;
      const folder = extra?.session?.model_external_initializers_file_folder_path;
      stepGraph = { file: graph.file, dataFolder: typeof folder === 'string' ? folder : undefined };
    }
    const session = await InferenceSession.create(graph.file, { ...sessionOptions(s), ...graph.sessionOptions });
    sessions.push(session);
    return { session, contract: readDecoderContract(sessionInfo(session, graph.file), role) };
  };
  const prefill = await open('prefill');
  const step = await open('step');
  checkDecoderPair(prefill.contract, step.contract);
  const batchDim = sessionInfo(step.session, files.step).inputs.find((t) => t.name === step.contract.token.name)!.shape[0];
  const maxBatch = typeof batchDim === 'number' ? batchDim : Math.max(...s.batches);
  const backend = new HostBackend({ prefill, step, inputs: new DecoderInputs(embeddings, 'float32'), maxBatch });
  const floor = await openFloor(s, stepGraph.file, stepGraph.dataFolder);
  return { backend, prefill: prefill.contract, graphs, sessions, maxBatch, floor };
}

/** Prompts of exactly `context` tokens: the ASR chat template around audio pads, with random audio rows. */
function promptOf(tokenizer: Tokenizer, context: number, hidden: number, seed: number) {
  const overhead = buildPrompt(tokenizer, { nAudioTokens: 0 }).ids.length;
  if (context <= overhead) usage(`--context must exceed the prompt template's ${overhead} tokens; got ${context}`);
  const prompt = buildPrompt(tokenizer, { nAudioTokens: context - overhead });
  let x = seed;
  const rows = Float32Array.from({ length: prompt.nAudioTokens * hidden }, () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return (x / 2 ** 31 - 0.5) * 0.2;
  });
  return { ids: prompt.ids, audio: { rows: new Tensor('float32', rows, [1, prompt.nAudioTokens, hidden]), offset: prompt.audioOffset } };
}

/** One measured batch x context, as the JSON report lists it. */
export interface StepBenchRow {
  lean: boolean;
  /** 4-bit matmuls took int8 activations (in the step and in its floor) */
  int8: boolean;
  batch: number;
  context: number;
  /** mean cache length over the measured steps (the context grows by one per step) */
  contextMeasured: number;
  prefillMsPerToken: number;
  stepMs: Spread;
  hostMs: Spread;
  runMs: Spread;
  floorMs: number;
  stepOverFloor: number;
  tokensPerSecond: number;
}

async function measureDecoder(s: Settings, variant: Variant, tokenizer: Tokenizer, embeddings: EmbeddingLookup | undefined) {
  const decoder = await openDecoder(s, variant, embeddings);
  const { floor } = decoder;
  const rows: StepBenchRow[] = [];
  const skipped: { lean: boolean; int8: boolean; batch: number; reason: string }[] = [];
  const batches = s.batches.filter((b) => {
    if (b <= decoder.maxBatch) return true;
    skipped.push({ ...variant, batch: b, reason: `the step graph's batch is fixed at ${decoder.maxBatch}` });
    return false;
  });
  const hidden = embeddings?.hiddenSize ?? Number(decoder.prefill.hiddenSize ?? 0);
  try {
    for (const context of s.contexts) {
      // The largest batch's sequences are prefilled once per context; smaller batches step the first rows.
      const widest = Math.max(...batches);
      const inputs = Array.from({ length: widest }, (_, i) => promptOf(tokenizer, context, hidden, i + 1));
      const t0 = performance.now();
      const { sequences } = await decoder.backend.prefill(inputs);
      const prefillMsPerToken = (performance.now() - t0) / (widest * context);
      const last = sequences.map((q) => q.firstId);
      const caches: CacheHandle[] = sequences.map((q) => q.cache);
      try {
        for (const batch of batches) {
          const active = caches.slice(0, batch);
          const step = async () => {
            const t = performance.now();
            const result = await decoder.backend.step(active.map((cache, i) => ({ cache, token: last[i]! })));
            result.ids.forEach((id, i) => (last[i] = id));
            return { ms: performance.now() - t, runMs: result.runMs };
          };
          for (let i = 0; i < WARMUP_STEPS; i++) await step();
          const startLength = active[0]!.length;
          const measured = [];
          const floorRuns = [];
          for (let i = 0; i < s.steps; i++) {
            floorRuns.push(await floor.run(batch));
            measured.push(await step());
          }
          const stepMs = spread(measured.map((m) => m.ms));
          const floorMs = spread(floorRuns).median;
          rows.push({
            ...variant,
            batch,
            context,
            contextMeasured: round(startLength + (s.steps - 1) / 2, 1),
            prefillMsPerToken: round(prefillMsPerToken),
            stepMs,
            hostMs: spread(measured.map((m) => m.ms - m.runMs)),
            runMs: spread(measured.map((m) => m.runMs)),
            floorMs,
            stepOverFloor: round(stepMs.median / floorMs),
            tokensPerSecond: round((batch * 1000) / stepMs.median, 1),
          });
          printRow(rows[rows.length - 1]!);
        }
      } finally {
        for (const cache of caches) decoder.backend.release(cache);
      }
    }
    const floorRows = [...floor.runs].filter(([, ms]) => ms.length > 0).map(([batch, ms]) => ({ batch, ms: spread(ms) }));
    return { ...variant, rows, skipped, graphs: decoder.graphs, maxBatch: decoder.maxBatch, floor: { matmuls: floor.matmuls, quantized: floor.quantized, weightMB: floor.weightMB, rows: floorRows } };
  } finally {
    await Promise.all([...decoder.sessions.map((session) => session.release()), floor.release()]);
  }
}

const COLUMNS = ['graphs', 'batch', 'context', 'step ms p50', 'p90', 'host ms', 'host min', 'run ms', 'floor ms', 'step/floor', 'tokens/s', 'prefill ms/token'];
const WIDTHS = COLUMNS.map((c) => Math.max(c.length, 8));
const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(WIDTHS[i]!) : c.padStart(WIDTHS[i]!))).join('  ');

function printRow(r: StepBenchRow): void {
  console.log(
    line([
      `${r.lean ? 'lean' : 'original'}${r.int8 ? '+int8' : ''}`,
      String(r.batch),
      String(r.context),
      r.stepMs.median.toFixed(1),
      r.stepMs.p90.toFixed(1),
      r.hostMs.median.toFixed(2),
      r.hostMs.min.toFixed(2),
      r.runMs.median.toFixed(1),
      r.floorMs.toFixed(1),
      r.stepOverFloor.toFixed(2),
      r.tokensPerSecond.toFixed(1),
      r.prefillMsPerToken.toFixed(2),
    ]),
  );
}

async function main(): Promise<void> {
  const s = parseSettings(process.argv.slice(2));
  env.logLevel = 'error';
  let tokenizer;
  try {
    findModelFiles(s.modelDir);
    tokenizer = Tokenizer.fromModelDir(s.modelDir);
  } catch (err) {
    usage((err as Error).message);
  }
  const startedAt = new Date().toISOString();
  console.log(`bench:step ${s.modelDir} on ${s.provider}${s.threads ? ` with ${s.threads} threads` : ''}: ${s.steps} steps after ${WARMUP_STEPS} warm-up per row`);
  const embeddingFile = findEmbeddingFiles(s.modelDir)[0];
  const embeddings = embeddingFile ? new EmbeddingLookup(loadEmbeddingTableOnce(embeddingFile)) : undefined;
  console.log(line(COLUMNS));
  const runs = [];
  for (const variant of s.variants) runs.push(await measureDecoder(s, variant, tokenizer, embeddings));
  for (const run of runs) {
    const name = `${run.lean ? 'lean' : 'original'}${run.int8 ? '+int8' : ''}`;
    const f = run.floor;
    console.log(`${name} floor: ${f.matmuls} ${f.quantized ? 'MatMulNBits' : 'MatMul'} nodes, ${f.weightMB} MiB of weights`);
    for (const [role, g] of Object.entries(run.graphs)) if (g.reason) console.log(`${name} ${role} graph: ${g.reason}`);
    for (const k of run.skipped) console.log(`${name} batch ${k.batch} skipped: ${k.reason}`);
  }
  const report = {
    bench: 'step',
    startedAt,
    modelDir: s.modelDir,
    provider: s.provider,
    threads: s.threads ?? null,
    steps: s.steps,
    warmupSteps: WARMUP_STEPS,
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memoryGiB: round(totalmem() / 2 ** 30, 1), node: process.version },
    variants: runs.map((r) => ({ lean: r.lean, int8: r.int8, maxBatch: r.maxBatch, graphs: r.graphs, floor: r.floor })),
    rows: runs.flatMap((r) => r.rows),
    skipped: runs.flatMap((r) => r.skipped),
  };
  if (s.out) {
    writeFileSync(s.out, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`wrote ${s.out}`);
  }
}

await main();
