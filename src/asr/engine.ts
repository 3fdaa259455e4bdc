import { env, InferenceSession } from 'onnxruntime-node';
import { SAMPLE_RATE } from '../audio/pcm.js';
import { HostBackend, maskedRoomRead } from './backends/host.js';
import { deviceResidentCache, vulkanLoaderOpens, WebGpuBackend } from './backends/webgpu.js';
import type { DecoderBackend } from './backend.js';
import {
  checkDecoderPair,
  readDecoderContract,
  readEncoderContract,
  type DecoderContract,
  type EncoderContract,
  type SessionInfo,
} from './contract.js';
import { DecoderInputs } from './decoder-io.js';
import { rewriteGraph } from './lean-graph.js';
import { EmbeddingLookup, findEmbeddingFiles, loadEmbeddingTableOnce, type SharedEmbeddingTable } from './embeddings.js';
import { ModelLoadError } from './errors.js';
import { Generator, Sequence, type SequenceTimings, type Streamer } from './generation.js';
import type { Language } from './languages.js';
import { checkPreprocessorConfig, findModelFiles, type ModelFiles } from './model-dir.js';
import { TranscriptDeltas, keepsLeadingSpace, parseAsrOutput } from './postprocess.js';
import { AsrProcessor } from './processor.js';
import { SPECIAL, headerLanguage, type TranscriptPrefix } from './prompt.js';
import { StageLock } from './stage-lock.js';
import { Tokenizer } from './tokenizer.js';

export type DeviceSetting = 'auto' | 'cuda' | 'cpu';
/**
 * Where the decoder keeps its KV cache: `host` in JavaScript memory (copied to the device and back every step on
 * CUDA), `webgpu` on the GPU through onnxruntime's WebGPU provider (backends/webgpu.ts). `auto` is host until the
 * webgpu backend has been measured on a GPU.
 */
export type BackendSetting = 'auto' | 'host' | 'webgpu';
export type Provider = 'cuda' | 'cpu' | 'webgpu';

export interface Logger {
  warn(message: string): void;
  info?(message: string): void;
}

export interface EngineOptions {
  modelDir: string;
  device?: DeviceSetting;
  cudaDeviceId?: number;
  /** 0 or absent: onnxruntime's default */
  intraOpThreads?: number;
  /** a table already loaded by this process (the pool shares one with its workers) */
  embeddings?: SharedEmbeddingTable;
  logger?: Logger;
  /** most sequences decoded together in one step (default 8); 1 when the graphs' batch is fixed */
  maxBatch?: number;
  /** default true: load the decoders rewritten to return greedy ids instead of logits (lean-graph.ts) when possible */
  leanGraphs?: boolean;
  /** default true: on the CPU provider, 4-bit matmuls take int8 activations (lean-graph.ts GraphRewrite) */
  cpuInt8Matmuls?: boolean;
  /** default true: on the CPU provider, the new-column step holds a float16 cache as float32 (float32-cache.ts) */
  cpuFloat32Cache?: boolean;
  /** default auto (host); webgpu runs every session on the WebGPU provider and ignores `device` */
  backend?: BackendSetting;
}

/** Whether concurrent sequences decode together, read from the step graph at load. */
export interface Batching {
  dynamic: boolean;
  maxBatch: number;
  /** why sequences decode one at a time */
  reason?: string;
}

/**
 * For callers that load an engine themselves (tests, bench:step, eval); the service always passes MAX_BATCH from
 * config.ts, whose default is the documented one. src/asr may not import the service's config.
 */
const DEFAULT_MAX_BATCH = 8;

export interface ChunkOptions {
  language?: Language;
  context?: string;
  /** generation stops here and the result says `truncated` */
  maxNewTokens: number;
  /**
   * transcript text as it is decoded (never half a character, no "language X<asr_text>" header); the deltas add
   * up to the final text: what the repetition repair could still change is held back until it cannot
   */
  onDelta?: (text: string) => void;
  /** checked between decode steps: cancellation is cooperative, a running session is never interrupted */
  shouldStop?: () => boolean;
  /** defaults to <|im_end|> and <|endoftext|> */
  stopTokenIds?: readonly number[];
  /**
   * forced start of the answer, prefilled with the prompt: decoding continues after `language X<asr_text>text`.
   * The result's text is `text` and then what was generated (repaired on its own; its leading white space kept only
   * after a word: postprocess.ts keepsLeadingSpace); deltas carry only the generated part; maxNewTokens counts it alone
   */
  prefix?: TranscriptPrefix;
}

export interface ChunkResult {
  text: string;
  /** canonical language name; '' when the model heard no speech; a prefix's always */
  language: string;
  /** what the model generated (after a prefix: only what follows it) */
  rawText: string;
  /** every generated token id (stop token excluded) */
  tokens: number[];
  /** the ids of the transcript text: after the "language X<asr_text>" header in auto-language mode, a prefix's text first */
  textTokens: number[];
  promptTokens: number;
  /** encoder rows in the prompt (one <|audio_pad|> each) */
  audioTokens: number;
  truncated: boolean;
  cancelled: boolean;
  timings: ChunkTimings;
}

export interface ChunkTimings extends SequenceTimings {
  featuresMs: number;
  encoderMs: number;
}

type Session = Pick<InferenceSession, 'run' | 'inputMetadata' | 'outputMetadata' | 'release'>;

export interface EngineSessions {
  encoder: Session;
  prefill: Session;
  step: Session;
}

function firstLine(err: unknown): string {
  return String(err instanceof Error ? err.message : err).split('\n')[0]!.trim();
}

function sessionInfo(session: Session, file: string): SessionInfo {
  const tensors = (list: Session['inputMetadata']) =>
    list.map((m) => {
      if (!m.isTensor) throw new ModelLoadError(`${file}: ${m.name} is not a tensor; only tensor inputs and outputs are supported`);
      return { name: m.name, type: m.type, shape: m.shape };
    });
  return { file, inputs: tensors(session.inputMetadata), outputs: tensors(session.outputMetadata) };
}

/** A graph to load: the model's own file, or a lean rewrite of it with the options that find its weights. */
interface GraphChoice {
  file: string;
  options: InferenceSession.SessionOptions;
  /** a step graph returning only the new cache column (kv-delta.ts) */
  kvDelta?: boolean;
}

interface Graphs {
  encoder: GraphChoice;
  prefill: GraphChoice;
  step: GraphChoice;
}

/**
 * The graphs for a provider: lean decoders (greedy ids instead of logits, attention reading each KV head once)
 * unless turned off, and on the CPU 4-bit matmuls with int8 activations unless turned off; a decoder kept with its
 * logits or its repeated KV heads says why.
 */
async function chooseGraphs(files: ModelFiles, provider: Provider, o: EngineOptions): Promise<Graphs> {
  return {
    encoder: await chooseGraph(files.encoder, undefined, provider, o),
    prefill: await chooseGraph(files.prefill, 'prefill', provider, o),
    step: await chooseGraph(files.step, 'step', provider, o),
  };
}

/** One graph as chooseGraphs picks it; `wholeCache` keeps a step returning its whole cache (its kvDelta probe failed). */
async function chooseGraph(file: string, role: 'prefill' | 'step' | undefined, provider: Provider, o: EngineOptions, wholeCache = false): Promise<GraphChoice> {
  const int8Matmuls = provider === 'cpu' && o.cpuInt8Matmuls !== false;
  const lean = o.leanGraphs !== false;
  const greedy = lean ? role : undefined;
  const sharedKvHeads = lean && role !== undefined;
  // the host backend's layout; WebGPU's cache stays on the device as the graph returns it
  const kvDelta = lean && role === 'step' && provider !== 'webgpu' && !wholeCache;
  // on the CPU nothing crosses a bus: a float32 cache costs memory, not transfers
  const float32Cache = kvDelta && provider === 'cpu' && o.cpuFloat32Cache !== false;
  if (!greedy && !int8Matmuls) return { file, options: {} };
  const g = await rewriteGraph(file, { ...(greedy ? { greedy } : {}), int8Matmuls, sharedKvHeads, kvDelta, float32Cache });
  if (wholeCache) return { file: g.file, options: g.sessionOptions };
  if (greedy && !g.greedy) o.logger?.warn(`${file}: kept with its logits (lean graph not possible: ${g.reason})`);
  if (sharedKvHeads && g.sharedKvHeads === 0) o.logger?.info?.(`${file}: attention kept as exported (${g.sharedKvReason ?? g.reason})`);
  if (kvDelta && g.kvDelta === 0) o.logger?.info?.(`${file}: each step returns the whole cache as exported (${g.kvDeltaReason ?? g.reason})`);
  if (g.float32CacheReason) o.logger?.info?.(`${file}: the step keeps its float16 cache (${g.float32CacheReason})`);
  return { file: g.file, options: g.sessionOptions, kvDelta: g.kvDelta > 0 };
}

/** One line for the startup log: what the settings and the graphs made of the decoder. */
function decoderSummary(provider: Provider, prefill: DecoderContract, step: DecoderContract, kvDelta: boolean, maxBatch: number): string {
  const where = provider === 'webgpu' ? 'the webgpu backend, the cache on the device' : `the host backend on ${provider}`;
  const widened = prefill.kvType !== step.kvType ? ` (the prefill's ${prefill.kvType} rows widened as they join)` : '';
  const returns = kvDelta ? 'only its new cache column' : 'its whole cache';
  return `decoder: ${where}, a ${step.kvType} cache${widened}, each step returning ${returns}, up to ${maxBatch} sequence(s) a step`;
}

/** The providers' own options: CUDA on its device, WebGPU on the default adapter (every session shares its device). */
function executionProviders(provider: Provider, o: Pick<EngineOptions, 'cudaDeviceId'>): InferenceSession.SessionOptions['executionProviders'] {
  if (provider === 'cuda') return [{ name: 'cuda', deviceId: o.cudaDeviceId ?? 0 }];
  return [provider];
}

/** The session options every graph of the engine is opened with (DeviceOps' graphs too, on WebGPU; bench:step's). */
export function baseSessionOptions(provider: Provider, o: Pick<EngineOptions, 'cudaDeviceId' | 'intraOpThreads'>): InferenceSession.SessionOptions {
  return {
    executionProviders: executionProviders(provider, o),
    graphOptimizationLevel: 'all',
    // Decoder shapes grow every step: a memory pattern planned for one length is useless for the next.
    enableMemPattern: false,
    logSeverityLevel: 3,
    ...(o.intraOpThreads ? { intraOpNumThreads: o.intraOpThreads } : {}),
  };
}

async function openSessions(graphs: Graphs, provider: Provider, o: EngineOptions): Promise<EngineSessions> {
  const options = baseSessionOptions(provider, o);
  const opened: Session[] = [];
  const open = async ({ file, options: own }: GraphChoice, decoder = false) => {
    try {
      const onDevice = decoder && provider === 'webgpu' ? await deviceResidentCache(file) : {};
      const s = await InferenceSession.create(file, { ...options, ...own, ...onDevice });
      opened.push(s);
      return s;
    } catch (err) {
      await Promise.all(opened.map((s) => s.release()));
      throw new ModelLoadError(`${file}: onnxruntime could not load it on ${provider}: ${firstLine(err)}`);
    }
  };
  return { encoder: await open(graphs.encoder), prefill: await open(graphs.prefill, true), step: await open(graphs.step, true) };
}

async function opened(provider: Provider, graphs: Graphs, o: EngineOptions): Promise<{ provider: Provider; sessions: EngineSessions; kvDelta: boolean }> {
  return { provider, sessions: await openSessions(graphs, provider, o), kvDelta: graphs.step.kvDelta ?? false };
}

/**
 * backend webgpu: every session on the WebGPU provider, or a startup error. Otherwise auto: CUDA, else CPU with one
 * warning; cuda: CUDA or a startup error; cpu: CPU.
 */
async function openOnDevice(files: ModelFiles, o: EngineOptions): Promise<{ provider: Provider; sessions: EngineSessions; kvDelta: boolean }> {
  // Every onnxruntime failure reaches us as an exception that we report with context; its own logger
  // would add multi-line native dumps (e.g. for the CUDA probe in auto mode). Read at first init.
  env.logLevel = 'fatal';
  if (o.backend === 'webgpu') {
    try {
      return await opened('webgpu', await chooseGraphs(files, 'webgpu', o), o);
    } catch (err) {
      const reason = firstLine(err);
      // the hint only where the provider found no device: a bad graph is a bad graph on any driver
      const noDevice = /adapter|vulkan|vkCreateInstance/i.test(reason);
      const missing =
        process.platform !== 'linux'
          ? ''
          : !vulkanLoaderOpens()
            ? ' (no Vulkan loader: libvulkan.so.1 cannot be opened; install libvulkan1)'
            : ` (the Vulkan loader is there, but no adapter: it needs a Vulkan driver, NVIDIA's with the container's "graphics" capability, or Mesa lavapipe 25 on a CPU)`;
      throw new ModelLoadError(`ASR_BACKEND=webgpu, but the WebGPU execution provider could not start: ${reason}${noDevice ? missing : ''}`);
    }
  }
  const device = o.device ?? 'auto';
  if (device !== 'cpu') {
    try {
      return await opened('cuda', await chooseGraphs(files, 'cuda', o), o);
    } catch (err) {
      if (device === 'cuda') {
        throw new ModelLoadError(`ASR_DEVICE=cuda, but the CUDA execution provider could not start: ${firstLine(err)}`);
      }
      o.logger?.warn(`ASR_DEVICE=auto: CUDA execution provider unavailable (${firstLine(err)}); running on CPU`);
    }
  }
  return await opened('cpu', await chooseGraphs(files, 'cpu', o), o);
}

/** The step graph decodes several sequences at once only with a free batch dimension, a mask and positions. */
function batchingOf(step: SessionInfo, c: DecoderContract, maxBatch: number): Batching {
  const batch = step.inputs.find((t) => t.name === c.token.name)!.shape[0];
  const reason =
    typeof batch === 'number'
      ? `${step.file} has a fixed batch of ${batch}`
      : !c.attentionMask
        ? `${step.file} takes no attention mask`
        : !c.positionIds
          ? `${step.file} takes no position ids`
          : undefined;
  return reason ? { dynamic: false, maxBatch: 1, reason } : { dynamic: true, maxBatch };
}

/** 1 s of quiet deterministic noise: exercises every session and kernel choice before the first request. */
function warmUpAudio(): Float32Array {
  const pcm = new Float32Array(SAMPLE_RATE);
  let state = 0x2545f491;
  for (let i = 0; i < pcm.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    pcm[i] = (state / 0x1_0000_0000 - 0.5) * 0.002;
  }
  return pcm;
}

/**
 * One Mega-ASR model: the three sessions, their contracts as read at load time, the tokenizer and the
 * embedding table, driven in transformers.js's stages: the processor (features -> encoder rows -> prompt),
 * generation (greedy, with a streamer and stopping criteria, batched across concurrent calls by one
 * Generator over the decoder backend) and post-processing (header parsing, repetition repair).
 */
export class AsrEngine {
  readonly backend: DecoderBackend;
  private readonly processor: AsrProcessor;
  private readonly generator: Generator;
  private readonly defaultStopIds: ReadonlySet<number>;
  /** One model stage at a time, so each stage's timing is its own (stage-lock.ts). */
  private readonly lock = new StageLock();

  private constructor(
    readonly provider: Provider,
    readonly sessions: EngineSessions,
    readonly encoderContract: EncoderContract,
    readonly prefillContract: DecoderContract,
    readonly stepContract: DecoderContract,
    readonly tokenizer: Tokenizer,
    readonly embeddings: EmbeddingLookup | undefined,
    readonly batching: Batching,
    backend: DecoderBackend,
  ) {
    this.processor = new AsrProcessor(sessions.encoder, encoderContract, tokenizer, this.lock);
    this.backend = backend;
    this.generator = new Generator(this.backend, batching.maxBatch, this.lock);
    this.defaultStopIds = new Set([tokenizer.tokenId(SPECIAL.imEnd), tokenizer.tokenId(SPECIAL.endOfText)]);
  }

  static async load(o: EngineOptions): Promise<AsrEngine> {
    const maxBatch = o.maxBatch ?? DEFAULT_MAX_BATCH;
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new ModelLoadError(`maxBatch must be a positive integer; got ${maxBatch}`);
    checkPreprocessorConfig(o.modelDir);
    const files = findModelFiles(o.modelDir);
    const tokenizer = Tokenizer.fromModelDir(o.modelDir);
    const { provider, sessions, kvDelta: stepKvDelta } = await openOnDevice(files, o);
    let kvDelta = stepKvDelta;
    try {
      const encoder = readEncoderContract(sessionInfo(sessions.encoder, files.encoder));
      const prefill = readDecoderContract(sessionInfo(sessions.prefill, files.prefill), 'prefill');
      let stepInfo = sessionInfo(sessions.step, files.step);
      let step = readDecoderContract(stepInfo, 'step');
      // the host backend widens a float16 prefill cache as it copies it into a float32 step cache
      const onHost = provider !== 'webgpu';
      checkDecoderPair(prefill, step, { widens: onHost });
      const hidden = new Set([encoder.hiddenSize, prefill.hiddenSize, step.hiddenSize].filter((h) => h !== undefined));
      if (hidden.size > 1) {
        throw new ModelLoadError(`${files.prefill}: expected the encoder's embedding width; the graphs declare ${[...hidden].join(' and ')}`);
      }
      let embeddings: EmbeddingLookup | undefined;
      if (prefill.token.kind === 'inputs_embeds') {
        embeddings = new EmbeddingLookup(o.embeddings ?? AsrEngine.findEmbeddings(o.modelDir, files.prefill));
        const width = [...hidden][0];
        if (width !== undefined && embeddings.hiddenSize !== width) {
          throw new ModelLoadError(`${embeddings.table.source}: expected rows of width ${width} for ${files.prefill}; found ${embeddings.hiddenSize}`);
        }
        if (embeddings.table.rows < tokenizer.vocabSize) {
          throw new ModelLoadError(`${embeddings.table.source}: expected at least ${tokenizer.vocabSize} rows (the tokenizer's ids); found ${embeddings.table.rows}`);
        }
      }
      const inputs = new DecoderInputs(embeddings, encoder.output.type);
      const roomRead = kvDelta ? await maskedRoomRead({ session: sessions.step, contract: step }, inputs) : undefined;
      if (roomRead) {
        o.logger?.warn(`${files.step}: the step cannot skip the masked columns after its rows (${roomRead}); it returns its whole cache instead`);
        const whole = await chooseGraph(files.step, 'step', provider, o, true);
        const session = await InferenceSession.create(whole.file, { ...baseSessionOptions(provider, o), ...whole.options }).catch((err: unknown) => {
          throw new ModelLoadError(`${whole.file}: onnxruntime could not load it on ${provider}: ${firstLine(err)}`);
        });
        await sessions.step.release();
        sessions.step = session;
        stepInfo = sessionInfo(session, files.step);
        step = readDecoderContract(stepInfo, 'step');
        kvDelta = false;
      }
      const batching = batchingOf(stepInfo, step, maxBatch);
      if (batching.reason) o.logger?.info?.(`decoding one sequence at a time per worker: ${batching.reason}`);
      const decoders = {
        prefill: { session: sessions.prefill, contract: prefill },
        step: { session: sessions.step, contract: step },
        inputs,
        maxBatch: batching.maxBatch,
      };
      const backend = onHost
        ? new HostBackend({ ...decoders, kvDelta })
        : await WebGpuBackend.create(decoders, { embeddings, session: baseSessionOptions('webgpu', o), ...(o.logger ? { logger: o.logger } : {}) });
      o.logger?.info?.(decoderSummary(provider, prefill, step, kvDelta, batching.maxBatch));
      return new AsrEngine(provider, sessions, encoder, prefill, step, tokenizer, embeddings, batching, backend);
    } catch (err) {
      await Promise.all(Object.values(sessions).map((s: Session) => s.release()));
      throw err;
    }
  }

  private static findEmbeddings(modelDir: string, prefillFile: string): SharedEmbeddingTable {
    const [file] = findEmbeddingFiles(modelDir);
    if (!file) {
      throw new ModelLoadError(
        `${prefillFile} takes inputs_embeds, so the token embedding table [vocab, hidden] must be in ${modelDir} as .npy or .safetensors; found none`,
      );
    }
    return loadEmbeddingTableOnce(file);
  }

  async release(): Promise<void> {
    await this.backend.dispose();
    await Promise.all([this.sessions.encoder.release(), this.sessions.prefill.release(), this.sessions.step.release()]);
  }

  /**
   * Runs `work` as a stage of its own: queued behind the stages already waiting (first come, first served), then
   * alone.
   * For other model work on this thread (a file's voice activity detection) whose many small runs would each
   * wait a whole decode step for their turn.
   */
  betweenStages<T>(work: () => Promise<T>): Promise<T> {
    return this.lock.run(work);
  }

  /** Runs 1 s of quiet noise through every session with a budget of a few tokens (first-run kernel choices). */
  async warmUp(): Promise<void> {
    await this.transcribeChunk(warmUpAudio(), { maxNewTokens: 4 });
  }

  /** One chunk, decoded together with whatever else this engine is decoding. */
  async transcribeChunk(pcm: Float32Array, o: ChunkOptions): Promise<ChunkResult> {
    // A header in the prompt (forced language or prefix): the model writes only text, after the prefix's if any.
    const forced = headerLanguage(o);
    const forcedText = o.prefix?.text ?? '';
    const keepLead = keepsLeadingSpace(forcedText);
    const audio = await this.processor.process(pcm, o);
    const streaming = o.onDelta ? this.streamer(o.onDelta, forced, keepLead) : undefined;
    const criteria = {
      stopIds: o.stopTokenIds ? new Set(o.stopTokenIds) : this.defaultStopIds,
      maxNewTokens: o.maxNewTokens,
      ...(o.shouldStop ? { shouldStop: o.shouldStop } : {}),
    };
    const sequence = new Sequence({ ...audio.prompt, maxLength: audio.prompt.ids.length + o.maxNewTokens }, criteria, streaming?.streamer);
    await this.generator.generate(sequence);
    // Without a listener the ids are decoded and parsed once, here, not at every step.
    const rawText = streaming ? streaming.deltas.rawText : this.tokenizer.decode(sequence.tokens);
    const generated = sequence.tokens;
    const parsed = parseAsrOutput(rawText, forced, keepLead);
    const { ids } = audio.prompt;
    return {
      text: forcedText + parsed.text,
      language: o.prefix ? forced! : parsed.language,
      rawText,
      tokens: generated,
      textTokens: forced
        ? [...ids.slice(ids.length - audio.prefixTextTokens), ...generated]
        : generated.slice(generated.indexOf(this.tokenizer.tokenId(SPECIAL.asrText)) + 1),
      promptTokens: audio.prompt.ids.length,
      audioTokens: audio.audioTokens,
      truncated: sequence.finish === 'budget',
      cancelled: sequence.finish === 'cancel',
      timings: { featuresMs: audio.featuresMs, encoderMs: audio.encoderMs, ...sequence.timings },
    };
  }

  /** Streams each id's text to `onDelta` as transcript deltas that add up to the final text. */
  private streamer(onDelta: (text: string) => void, language: string | undefined, keepLead: boolean): { streamer: Streamer; deltas: TranscriptDeltas } {
    const deltas = new TranscriptDeltas(language, keepLead);
    const stream = this.tokenizer.createStreamDecoder();
    const emit = (text: string) => {
      if (text) onDelta(text);
    };
    const streamer: Streamer = {
      put: (id) => emit(deltas.push(stream.push(id))),
      end: () => {
        emit(deltas.push(stream.flush()));
        emit(deltas.end());
      },
    };
    return { streamer, deltas };
  }
}
