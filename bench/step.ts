/**
 * One decode step, measured through the engine's decoder backends, next to its floor on the same machine: the step
 * graph's weight matmuls alone (bench/floor.ts) run at the same batch size, one floor run before each measured
 * step so both see the same machine (a shared one included). For each batch size x context length: ms per step
 * (median, p90), host ms per step (outside session.run), floor ms, step/floor, tokens/s, the bytes a step moves
 * between JavaScript and the session's device each way, and audio seconds per second at the speech rate of a folder
 * of transcribed clips (bench/speech-rate.ts; decode steps alone, and with each clip's prefill); with the host backend (the cache in JavaScript memory),
 * the webgpu backend (the cache on the device, src/asr/backends/webgpu.ts), or both; with the lean graphs (greedy
 * ids in the graph, attention reading each KV head once: src/asr/lean-graph.ts), the original ones, or both; the lean
 * ones with their KV heads repeated as exported too (--shared-kv both: what reading each head once saves), and on the
 * host backend with the step returning its whole cache as exported too (--kv-delta both: what returning only the new
 * column saves, src/asr/kv-delta.ts), and on the CPU with its float16 cache cast at every step as exported too
 * (--float32-cache both: what holding it as float32 saves, src/asr/float32-cache.ts); with 4-bit
 * matmuls taking int8 activations
 * (the engine's CPU default), fp32 ones, or both. Each variant's floor is read from its own step graph.
 *
 *   npm run bench:step -- --model-dir DIR [--backend host|webgpu|both] [--batch 1,2,4,8] [--context 100,300,600]
 *                         [--steps N] [--provider cpu|cuda|webgpu] [--threads N] [--lean on|off|both | --no-lean] [--shared-kv on|off|both]
 *                         [--kv-delta on|off|both] [--float32-cache on|off|both] [--int8 on|off|both] [--clips DIR] [--out FILE]
 *
 * The webgpu backend runs on the webgpu provider (the default provider when --backend is webgpu or both; on a
 * machine without a GPU, VK_ICD_FILENAMES=$(bash tools/lavapipe.sh) selects Mesa's software Vulkan). --clips
 * defaults to the service benches' clips: $SHARED_DIR or ../shared, then fixtures/voices-in-the-wild.
 */
process.env.ORT_DISABLE_TELEMETRY ??= '1';

import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { env, InferenceSession, Tensor } from 'onnxruntime-node';
import type { CacheHandle, DecoderBackend } from '../src/asr/backend.js';
import { HostBackend } from '../src/asr/backends/host.js';
import { deviceResidentCache, WebGpuBackend, type StepTraffic } from '../src/asr/backends/webgpu.js';
import { baseSessionOptions } from '../src/asr/engine.js';
import { checkDecoderPair, readDecoderContract, type DecoderContract, type SessionInfo } from '../src/asr/contract.js';
import { DecoderInputs, hostBytes } from '../src/asr/decoder-io.js';
import { EmbeddingLookup, findEmbeddingFiles, loadEmbeddingTableOnce } from '../src/asr/embeddings.js';
import { rewriteGraph, type GraphRewrite } from '../src/asr/lean-graph.js';
import { findModelFiles } from '../src/asr/model-dir.js';
import { buildPrompt } from '../src/asr/prompt.js';
import { Tokenizer } from '../src/asr/tokenizer.js';
import { floorFeeds, floorGraph } from './floor.js';
import { defaultClipsDir, speechRate, SpeechRateError, type SpeechRate } from './speech-rate.js';

type Provider = 'cpu' | 'cuda' | 'webgpu';
type Backend = 'host' | 'webgpu';
type Role = 'prefill' | 'step';

interface Settings {
  modelDir: string;
  batches: number[];
  contexts: number[];
  steps: number;
  provider: Provider;
  /** as given: host, webgpu or both */
  backend: string;
  /** onnxruntime threads per session: --threads, else every core (as the engine with one worker) */
  threads: number;
  variants: Variant[];
  clipsDir: string;
  out?: string;
}

/** Where a measured decoder keeps its cache, and which graph rewrites it has. */
interface Variant {
  backend: Backend;
  lean: boolean;
  /** lean graphs only: attention reads each KV head once (the engine's lean graphs), or repeats them as exported */
  sharedKv: boolean;
  /** lean graphs on the host backend only: the step returns only the new cache column (the engine's), or the whole cache */
  kvDelta: boolean;
  /** with kvDelta on the CPU: a float16 cache held as float32 (the engine's), or cast at every step as exported; elsewhere undefined */
  float32Cache?: boolean;
  int8: boolean;
}

const WARMUP_STEPS = 2;

/** Exit 2 with the message, and the usage line unless the arguments were well formed (a bad --clips folder). */
function usage(message: string, withUsage = true): never {
  console.error(`bench:step: ${message}`);
  if (withUsage) {
    console.error(
      'usage: npm run bench:step -- --model-dir DIR [--backend host|webgpu|both] [--batch 1,2,4,8] [--context 100,300,600] [--steps N] [--provider cpu|cuda|webgpu] [--threads N] [--lean on|off|both | --no-lean] [--shared-kv on|off|both] [--kv-delta on|off|both] [--float32-cache on|off|both] [--int8 on|off|both] [--clips DIR] [--out FILE]',
    );
  }
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
        backend: { type: 'string', default: 'host' },
        batch: { type: 'string', default: '1,2,4,8' },
        context: { type: 'string', default: '100,300,600' },
        steps: { type: 'string', default: '8' },
        provider: { type: 'string' },
        threads: { type: 'string' },
        lean: { type: 'string', default: 'on' },
        'no-lean': { type: 'boolean', default: false },
        'shared-kv': { type: 'string', default: 'on' },
        'kv-delta': { type: 'string', default: 'on' },
        'float32-cache': { type: 'string' },
        int8: { type: 'string' },
        clips: { type: 'string' },
        out: { type: 'string' },
      },
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  if (!values['model-dir']) usage('--model-dir is required');
  const backend = values.backend;
  if (backend !== 'host' && backend !== 'webgpu' && backend !== 'both') usage(`--backend is host, webgpu or both; got '${backend}'`);
  // Both backends on one provider, so that `both` compares where the cache lives on the same device.
  const provider = values.provider ?? (backend === 'host' ? 'cpu' : 'webgpu');
  if (provider !== 'cpu' && provider !== 'cuda' && provider !== 'webgpu') usage(`--provider is cpu, cuda or webgpu; got '${provider}'`);
  if (backend !== 'host' && provider !== 'webgpu') usage(`--backend ${backend} runs on the webgpu provider; got --provider ${provider}`);
  const lean = values['no-lean'] ? 'off' : values.lean;
  if (lean !== 'on' && lean !== 'off' && lean !== 'both') usage(`--lean is on, off or both; got '${lean}'`);
  const sharedKv = values['shared-kv'];
  if (sharedKv !== 'on' && sharedKv !== 'off' && sharedKv !== 'both') usage(`--shared-kv is on, off or both; got '${sharedKv}'`);
  if (lean === 'off' && sharedKv !== 'on') usage(`--shared-kv ${sharedKv}: the KV-head rewrite is one of the lean graphs'; --lean off loads the graphs as exported`);
  const kvDelta = values['kv-delta'];
  if (kvDelta !== 'on' && kvDelta !== 'off' && kvDelta !== 'both') usage(`--kv-delta is on, off or both; got '${kvDelta}'`);
  if (lean === 'off' && kvDelta !== 'on') usage(`--kv-delta ${kvDelta}: the cache rewrite is one of the lean graphs'; --lean off loads the graphs as exported`);
  if (backend === 'webgpu' && kvDelta === 'both') usage(`--kv-delta ${kvDelta}: the webgpu backend keeps the cache as the graph returns it; the rewrite is the host backend's`);
  // As the engine: a float32 cache on the CPU only (on another provider it would cross the bus at twice the size).
  const float32Cache = values['float32-cache'] ?? (provider === 'cpu' ? 'on' : 'off');
  if (float32Cache !== 'on' && float32Cache !== 'off' && float32Cache !== 'both') usage(`--float32-cache is on, off or both; got '${float32Cache}'`);
  if (values['float32-cache'] !== undefined && float32Cache !== 'off' && (provider !== 'cpu' || backend === 'webgpu' || lean === 'off' || kvDelta === 'off')) {
    usage(`--float32-cache ${float32Cache}: the float32 cache is the host backend's with the new-column step (--kv-delta on), on the CPU only`);
  }
  // As the engine: int8 activations on the CPU only, unless asked.
  const int8 = values.int8 ?? (provider === 'cpu' ? 'on' : 'off');
  if (int8 !== 'on' && int8 !== 'off' && int8 !== 'both') usage(`--int8 is on, off or both; got '${int8}'`);
  if (backend !== 'host' && int8 !== 'off') usage(`--int8 ${int8}: int8 matmuls run on the CPU only; the webgpu backend takes --int8 off`);
  // webgpu first: a run cut short by a time limit (bench/device/run.sh) has the device-resident numbers
  const backends: Backend[] = backend === 'both' ? ['webgpu', 'host'] : backend === 'webgpu' ? ['webgpu'] : ['host'];
  const choices = (v: string) => (v === 'both' ? [false, true] : [v === 'on']);
  const [steps] = positiveList(values.steps, 'steps');
  const threads = values.threads === undefined ? availableParallelism() : positiveList(values.threads, 'threads')[0]!;
  return {
    modelDir: values['model-dir'],
    batches: positiveList(values.batch, 'batch'),
    contexts: positiveList(values.context, 'context'),
    steps: steps!,
    provider,
    backend,
    threads,
    variants: backends.flatMap((b) =>
      choices(int8).flatMap((i) =>
        choices(lean).flatMap((l) =>
          (l ? choices(sharedKv) : [false]).flatMap((k) =>
            // the engine's: only the host backend's step returns the new column
            (l && b === 'host' ? choices(kvDelta) : [false]).flatMap((d) =>
              (d && provider === 'cpu' ? choices(float32Cache) : [undefined]).map((f) => ({ backend: b, lean: l, sharedKv: k, kvDelta: d, ...(f === undefined ? {} : { float32Cache: f }), int8: i })),
            ),
          ),
        ),
      ),
    ),
    clipsDir: values.clips ?? defaultClipsDir(),
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

/** As the engine opens its sessions; the provider is the bench's own choice (--backend webgpu needs webgpu). */
const sessionOptions = (s: Settings) => baseSessionOptions(s.provider, { intraOpThreads: s.threads });

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
  graphs: Record<Role, { file: string; greedy: boolean; int8Matmuls: number; sharedKvHeads: number; kvDelta: number; float32Cache: number; reason?: string }>;
  maxBatch: number;
  /** the step graph's floor, read from the graph as loaded */
  floor: Floor;
  /** bytes the last step moved between JavaScript and the session's device */
  traffic(): StepTraffic;
  close(): Promise<void>;
}

/**
 * The host backend's step session, counting each run's host tensors in and out: the whole past cache, ids, mask and
 * positions in; the new cache column (the whole present cache with --kv-delta off) and the greedy ids (or logits) out.
 */
function countingTraffic(session: InferenceSession) {
  let last: StepTraffic = { toDevice: 0, toHost: 0 };
  const run = async (feeds: InferenceSession.FeedsType, ...rest: unknown[]) => {
    const out = await (session.run as (...args: unknown[]) => Promise<InferenceSession.ReturnType>).call(session, feeds, ...rest);
    last = { toDevice: hostBytes(Object.values(feeds)), toHost: hostBytes(Object.values(out)) };
    return out;
  };
  return { session: { run: run as InferenceSession['run'] }, last: () => last };
}

/** The model's decoders with the variant's rewrites, on the chosen provider, behind the engine's backend of that variant. */
async function openDecoder(s: Settings, variant: Variant, embeddings: EmbeddingLookup | undefined): Promise<Decoder> {
  const files = findModelFiles(s.modelDir);
  const sessions: InferenceSession[] = [];
  const graphs = {} as Decoder['graphs'];
  let stepGraph = { file: files.step, dataFolder: undefined as string | undefined };
  const open = async (role: Role) => {
    const source = role === 'prefill' ? files.prefill : files.step;
    // lean with shared KV heads: as the engine loads them with LEAN_GRAPHS=true
    const want: GraphRewrite = {
      ...(variant.lean ? { greedy: role, sharedKvHeads: variant.sharedKv, kvDelta: variant.kvDelta && role === 'step', float32Cache: variant.float32Cache === true && role === 'step' } : {}),
      int8Matmuls: variant.int8,
    };
    const graph =
      variant.lean || variant.int8
        ? await rewriteGraph(source, want)
        : { file: source, greedy: false, int8Matmuls: 0, sharedKvHeads: 0, kvDelta: 0, float32Cache: 0, reason: undefined, sessionOptions: {} as InferenceSession.SessionOptions };
    graphs[role] = {
      file: graph.file,
      greedy: graph.greedy,
      int8Matmuls: graph.int8Matmuls,
      sharedKvHeads: graph.sharedKvHeads,
      kvDelta: graph.kvDelta,
      float32Cache: graph.float32Cache,
      ...(graph.reason ? { reason: graph.reason } : {}),
    };
    if (role === 'step') {
      const extra = graph.sessionOptions.extra as { session?: { model_external_initializers_file_folder_path?: string } } | undefined;
      const folder = extra?.session?.model_external_initializers_file_folder_path;
      stepGraph = { file: graph.file, dataFolder: typeof folder === 'string' ? folder : undefined };
    }
    // As the engine opens them for its webgpu backend: present.* stay on the device.
    const onDevice = variant.backend === 'webgpu' ? await deviceResidentCache(graph.file) : {};
    const session = await InferenceSession.create(graph.file, { ...sessionOptions(s), ...graph.sessionOptions, ...onDevice });
    sessions.push(session);
    return { session, contract: readDecoderContract(sessionInfo(session, graph.file), role) };
  };
  let backend: DecoderBackend | undefined;
  try {
    const prefill = await open('prefill');
    const step = await open('step');
    checkDecoderPair(prefill.contract, step.contract, { widens: variant.backend === 'host' });
    const batchDim = sessionInfo(step.session, files.step).inputs.find((t) => t.name === step.contract.token.name)!.shape[0];
    const maxBatch = typeof batchDim === 'number' ? batchDim : Math.max(...s.batches);
    const inputs = new DecoderInputs(embeddings, 'float32');
    let traffic: () => StepTraffic;
    if (variant.backend === 'webgpu') {
      const device = await WebGpuBackend.create(
        { prefill, step, inputs, maxBatch },
        { embeddings, session: sessionOptions(s), logger: { warn: (message) => console.log(`note: ${message}`) } },
      );
      [backend, traffic] = [device, () => device.lastStepTraffic];
    } else {
      const counted = countingTraffic(step.session);
      const kvDelta = graphs.step.kvDelta > 0;
      [backend, traffic] = [new HostBackend({ prefill, step: { ...step, session: counted.session }, inputs, maxBatch, kvDelta }), counted.last];
    }
    const floor = await openFloor(s, stepGraph.file, stepGraph.dataFolder);
    const opened = backend;
    const close = async () => {
      await opened.dispose();
      await Promise.all([...sessions.map((session) => session.release()), floor.release()]);
    };
    return { backend, prefill: prefill.contract, graphs, maxBatch, floor, traffic, close };
  } catch (err) {
    await backend?.dispose();
    await Promise.all(sessions.map((session) => session.release()));
    throw err;
  }
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
  /** where the cache lives: host (JavaScript memory) or webgpu (the device) */
  backend: Backend;
  lean: boolean;
  sharedKv: boolean;
  /** the step returned only the new cache column */
  kvDelta: boolean;
  /** with kvDelta on the CPU: the float16 cache was held as float32 */
  float32Cache?: boolean;
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
  /** bytes a step moved between JavaScript and the session's device each way (median over the measured steps) */
  bytesPerStep: StepTraffic;
  /** audio seconds per second at the clips' speech rate (AUDIO_NOTE) */
  audioSecondsPerSecond: AudioRate;
}

export interface AudioRate {
  /** tokens/s over the clips' answer tokens per audio second: decode steps alone */
  decode: number;
  /** `batch` clips, each prefilled alone, then decoded together */
  withPrefill: number;
}

/** Three significant digits: the audio rates span 0.1 to thousands. */
const significant = (x: number) => Number(x.toPrecision(3));

/** A row's audio seconds per second, from its reported figures and the clips' (AUDIO_NOTE says how). */
function audioRate(row: Omit<StepBenchRow, 'audioSecondsPerSecond'>, speech: SpeechRate): AudioRate {
  const prefillMs = row.batch * speech.promptTokens * row.prefillMsPerToken;
  const decodeMs = speech.answerTokens * row.stepMs.median;
  return {
    decode: significant(row.tokensPerSecond / speech.answerTokensPerAudioSecond),
    withPrefill: significant((row.batch * speech.audioSeconds * 1000) / (prefillMs + decodeMs)),
  };
}

async function measureDecoder(s: Settings, variant: Variant, tokenizer: Tokenizer, embeddings: EmbeddingLookup | undefined, speech: SpeechRate) {
  const decoder = await openDecoder(s, variant, embeddings);
  const { floor } = decoder;
  const rows: StepBenchRow[] = [];
  const skipped: (Variant & { batch: number; reason: string })[] = [];
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
            return { ms: performance.now() - t, runMs: result.runMs, traffic: decoder.traffic() };
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
          const row = {
            ...variant,
            batch,
            context,
            contextMeasured: round(startLength + (s.steps - 1) / 2, 1),
            // four places: on a GPU a prefilled token can take well under 0.01 ms
            prefillMsPerToken: round(prefillMsPerToken, 4),
            stepMs,
            hostMs: spread(measured.map((m) => m.ms - m.runMs)),
            runMs: spread(measured.map((m) => m.runMs)),
            floorMs,
            stepOverFloor: round(stepMs.median / floorMs),
            tokensPerSecond: round((batch * 1000) / stepMs.median, 1),
            bytesPerStep: { toDevice: spread(measured.map((m) => m.traffic.toDevice)).median, toHost: spread(measured.map((m) => m.traffic.toHost)).median },
          };
          rows.push({ ...row, audioSecondsPerSecond: audioRate(row, speech) });
          printRow(rows[rows.length - 1]!);
        }
      } finally {
        for (const cache of caches) decoder.backend.release(cache);
      }
    }
    const floorRows = [...floor.runs].filter(([, ms]) => ms.length > 0).map(([batch, ms]) => ({ batch, ms: spread(ms) }));
    return { ...variant, rows, skipped, graphs: decoder.graphs, maxBatch: decoder.maxBatch, floor: { matmuls: floor.matmuls, quantized: floor.quantized, weightMB: floor.weightMB, rows: floorRows } };
  } finally {
    await decoder.close();
  }
}

const COLUMNS = ['backend/graphs', 'batch', 'context', 'step ms p50', 'p90', 'host ms', 'host min', 'run ms', 'floor ms', 'step/floor', 'tokens/s', 'audio s/s', '+prefill', 'prefill ms/token', 'to device/step', 'to host/step'];
const WIDTHS = COLUMNS.map((c) => Math.max(c.length, 8));
const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(WIDTHS[i]!) : c.padStart(WIDTHS[i]!))).join('  ');

const variantName = (v: Variant) =>
  `${v.backend}/${v.lean ? `lean${v.sharedKv ? '' : '-kv-repeated'}${v.kvDelta || v.backend !== 'host' ? '' : '-whole-cache'}${v.float32Cache === false ? '-float16-cache' : ''}` : 'original'}${v.int8 ? '+int8' : ''}`;

/** 24 B, 3.5 KiB, 67.2 MiB, 2.15 GiB */
function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  const i = Math.min(units.length - 1, Math.max(0, Math.floor(Math.log(Math.max(n, 1)) / Math.log(1024))));
  return i === 0 ? `${n} B` : `${(n / 1024 ** i).toFixed(i === 3 ? 2 : 1)} ${units[i]}`;
}

/** What the bytes columns count, in the report and under the table. */
const BYTES_NOTE =
  'bytes per step: host backend: what JavaScript hands the step session and gets back (the whole past cache in, the new cache column out (the whole present cache when the step returns it), ' +
  'plus ids, mask, positions and the greedy ids or logits): on cuda or webgpu this crosses PCIe each way, on the cpu provider nothing crosses ' +
  "(the session computes in the same memory); webgpu backend: what a step sends to the device and reads back (ids, positions, each row's first " +
  'column; the greedy ids), the cache never leaves the device';

/** What the audio columns count, in the report and under the table. */
function audioNote(speech: SpeechRate): string {
  return (
    `audio s/s at the speech rate of ${speech.clips} clips in ${speech.source} (mean ${speech.audioSeconds} s, a ${speech.promptTokens}-token prompt, ` +
    `${speech.answerTokens} answer tokens: ${speech.answerTokensPerAudioSecond} per audio second): decode = tokens/s / answer tokens per audio second, ` +
    'the audio this step rate transcribes, decode steps alone; +prefill = batch x audio seconds / (batch x prompt tokens x prefill ms/token + ' +
    'answer tokens x step ms): `batch` such clips, each prefilled alone, then decoded together one step per answer token; ' +
    'neither counts the log-mel features or the encoder (bench:step runs neither)'
  );
}

function printRow(r: StepBenchRow): void {
  console.log(
    line([
      variantName(r),
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
      String(r.audioSecondsPerSecond.decode),
      String(r.audioSecondsPerSecond.withPrefill),
      r.prefillMsPerToken.toFixed(4), // the four places the JSON keeps
      bytes(r.bytesPerStep.toDevice),
      bytes(r.bytesPerStep.toHost),
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
  let speech: SpeechRate;
  try {
    speech = speechRate(s.clipsDir, tokenizer);
  } catch (err) {
    if (!(err instanceof SpeechRateError)) throw err;
    usage(`--clips: ${err.message}`, false);
  }
  const startedAt = new Date().toISOString();
  console.log(
    `bench:step ${s.modelDir}: ${s.backend === 'both' ? 'webgpu and host backends' : `${s.backend} backend`} on ${s.provider} with ${s.threads} threads: ` +
      `${s.steps} steps after ${WARMUP_STEPS} warm-up per row`,
  );
  const embeddingFile = findEmbeddingFiles(s.modelDir)[0];
  const embeddings = embeddingFile ? new EmbeddingLookup(loadEmbeddingTableOnce(embeddingFile)) : undefined;
  console.log(line(COLUMNS));
  const runs: Awaited<ReturnType<typeof measureDecoder>>[] = [];
  const report = (complete: boolean) => ({
    bench: 'step',
    startedAt,
    complete,
    modelDir: s.modelDir,
    provider: s.provider,
    backend: s.backend,
    threads: s.threads,
    steps: s.steps,
    warmupSteps: WARMUP_STEPS,
    bytesNote: BYTES_NOTE,
    speech,
    audioNote: audioNote(speech),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', memoryGiB: round(totalmem() / 2 ** 30, 1), node: process.version },
    variants: runs.map((r) => ({ backend: r.backend, lean: r.lean, sharedKv: r.sharedKv, kvDelta: r.kvDelta, ...(r.float32Cache === undefined ? {} : { float32Cache: r.float32Cache }), int8: r.int8, maxBatch: r.maxBatch, graphs: r.graphs, floor: r.floor })),
    rows: runs.flatMap((r) => r.rows),
    skipped: runs.flatMap((r) => r.skipped),
  });
  const write = (complete: boolean) => s.out && writeFileSync(s.out, `${JSON.stringify(report(complete), null, 2)}\n`);
  for (const variant of s.variants) {
    try {
      runs.push(await measureDecoder(s, variant, tokenizer, embeddings, speech));
    } catch (err) {
      // What was measured so far stays in the report; the failure is one line, not a stack trace.
      write(false);
      const message = String((err as Error).message ?? err).split('\n')[0];
      const hint = s.provider === 'webgpu' ? ' (the webgpu provider needs a Vulkan loader and driver; on a CPU: VK_ICD_FILENAMES=$(bash tools/lavapipe.sh))' : '';
      console.error(`bench:step: ${variantName(variant)} on ${s.provider} failed: ${message}${hint}`);
      process.exit(1);
    }
    // After each variant, so a run stopped by a time limit keeps what it measured.
    write(false);
  }
  console.log(BYTES_NOTE);
  console.log(audioNote(speech));
  for (const run of runs) {
    const name = variantName(run);
    const f = run.floor;
    console.log(`${name} floor: ${f.matmuls} ${f.quantized ? 'MatMulNBits' : 'MatMul'} nodes, ${f.weightMB} MiB of weights`);
    for (const [role, g] of Object.entries(run.graphs)) if (g.reason) console.log(`${name} ${role} graph: ${g.reason}`);
    for (const k of run.skipped) console.log(`${name} batch ${k.batch} skipped: ${k.reason}`);
  }
  if (s.out) {
    write(true);
    console.log(`wrote ${s.out}`);
  }
}

await main();
