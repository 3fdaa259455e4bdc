import { env, InferenceSession, Tensor } from 'onnxruntime-node';
import { logMel, N_MELS } from '../audio/logMel.js';
import {
  checkDecoderPair,
  readDecoderContract,
  readEncoderContract,
  type DecoderContract,
  type EncoderContract,
  type FloatType,
  type SessionInfo,
} from './contract.js';
import { EmbeddingLookup, findEmbeddingFiles, loadEmbeddingTableOnce, type SharedEmbeddingTable } from './embeddings.js';
import { InferenceError, ModelLoadError } from './errors.js';
import { float16Table, float32ToFloat16Bits } from './half.js';
import type { Language } from './languages.js';
import { checkPreprocessorConfig, findModelFiles, type ModelFiles } from './model-dir.js';
import { TranscriptDeltas, parseAsrOutput } from './postprocess.js';
import { buildPrompt, nAudioTokens, SPECIAL } from './prompt.js';
import { Tokenizer } from './tokenizer.js';

export type DeviceSetting = 'auto' | 'cuda' | 'cpu';
export type Provider = 'cuda' | 'cpu';

export interface Logger {
  warn(message: string): void;
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
}

export interface ChunkOptions {
  language?: Language;
  context?: string;
  /** generation stops here and the result says `truncated` */
  maxNewTokens: number;
  /** transcript text as it is decoded (never half a character, no "language X<asr_text>" header) */
  onDelta?: (text: string) => void;
  /** checked between decode steps: cancellation is cooperative, a running session is never interrupted */
  shouldStop?: () => boolean;
  /** defaults to <|im_end|> and <|endoftext|> */
  stopTokenIds?: readonly number[];
}

export interface ChunkResult {
  text: string;
  /** canonical language name; '' when the model heard no speech */
  language: string;
  rawText: string;
  /** every generated token id (stop token excluded) */
  tokens: number[];
  /** the ids of the transcript text: after the "language X<asr_text>" header in auto-language mode */
  textTokens: number[];
  promptTokens: number;
  /** encoder rows in the prompt (one <|audio_pad|> each) */
  audioTokens: number;
  truncated: boolean;
  cancelled: boolean;
  timings: { featuresMs: number; encoderMs: number; prefillMs: number; stepsMs: number; steps: number };
}

type Session = Pick<InferenceSession, 'run' | 'inputMetadata' | 'outputMetadata' | 'release'>;
type Feeds = Record<string, Tensor>;

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

async function openSessions(files: ModelFiles, provider: Provider, o: EngineOptions): Promise<EngineSessions> {
  const options: InferenceSession.SessionOptions = {
    executionProviders: provider === 'cuda' ? [{ name: 'cuda', deviceId: o.cudaDeviceId ?? 0 }] : ['cpu'],
    graphOptimizationLevel: 'all',
    // Decoder shapes grow every step: a memory pattern planned for one length is useless for the next.
    enableMemPattern: false,
    logSeverityLevel: 3,
    ...(o.intraOpThreads ? { intraOpNumThreads: o.intraOpThreads } : {}),
  };
  const opened: Session[] = [];
  const open = async (file: string) => {
    try {
      const s = await InferenceSession.create(file, options);
      opened.push(s);
      return s;
    } catch (err) {
      await Promise.all(opened.map((s) => s.release()));
      throw new ModelLoadError(`${file}: onnxruntime could not load it on ${provider}: ${firstLine(err)}`);
    }
  };
  return { encoder: await open(files.encoder), prefill: await open(files.prefill), step: await open(files.step) };
}

/** auto: CUDA, else CPU with one warning; cuda: CUDA or a startup error; cpu: CPU. */
async function openOnDevice(files: ModelFiles, o: EngineOptions): Promise<{ provider: Provider; sessions: EngineSessions }> {
  // Every onnxruntime failure reaches us as an exception that we report with context; its own logger
  // would add multi-line native dumps (e.g. for the CUDA probe in auto mode). Read at first init.
  env.logLevel = 'fatal';
  const device = o.device ?? 'auto';
  if (device !== 'cpu') {
    try {
      return { provider: 'cuda', sessions: await openSessions(files, 'cuda', o) };
    } catch (err) {
      if (device === 'cuda') {
        throw new ModelLoadError(`ASR_DEVICE=cuda, but the CUDA execution provider could not start: ${firstLine(err)}`);
      }
      o.logger?.warn(`ASR_DEVICE=auto: CUDA execution provider unavailable (${firstLine(err)}); running on CPU`);
    }
  }
  return { provider: 'cpu', sessions: await openSessions(files, 'cpu', o) };
}

/** Rows of a float tensor as the element type another graph wants. */
function convertFloats(data: Float32Array | Uint16Array, from: FloatType, to: FloatType): Float32Array | Uint16Array {
  if (from === to) return data;
  if (to === 'float32') {
    const lut = float16Table();
    return Float32Array.from(data as Uint16Array, (h) => lut[h]!);
  }
  return Uint16Array.from(data as Float32Array, float32ToFloat16Bits);
}

function argmaxLastRow(logits: Tensor, type: FloatType): { id: number; value: number } {
  const vocab = logits.dims[logits.dims.length - 1]!;
  const offset = logits.size - vocab;
  let best = 0;
  let bestValue = -Infinity;
  if (type === 'float32') {
    const data = logits.data as Float32Array;
    for (let i = 0; i < vocab; i++) {
      const v = data[offset + i]!;
      if (v > bestValue) {
        bestValue = v;
        best = i;
      }
    }
  } else {
    const data = logits.data as Uint16Array;
    const lut = float16Table();
    for (let i = 0; i < vocab; i++) {
      const v = lut[data[offset + i]!]!;
      if (v > bestValue) {
        bestValue = v;
        best = i;
      }
    }
  }
  return { id: best, value: bestValue };
}

const int64 = (values: ArrayLike<number>, dims: number[]) =>
  new Tensor('int64', BigInt64Array.from(values as ArrayLike<number>, (v) => BigInt(v)), dims);

/**
 * One Mega-ASR model: the three sessions, their contracts as read at load time, the tokenizer and the
 * embedding table. Runs one chunk at a time: features -> encoder -> prompt -> prefill -> greedy steps.
 */
export class AsrEngine {
  private constructor(
    readonly provider: Provider,
    readonly sessions: EngineSessions,
    readonly encoderContract: EncoderContract,
    readonly prefillContract: DecoderContract,
    readonly stepContract: DecoderContract,
    readonly tokenizer: Tokenizer,
    readonly embeddings: EmbeddingLookup | undefined,
  ) {}

  static async load(o: EngineOptions): Promise<AsrEngine> {
    checkPreprocessorConfig(o.modelDir);
    const files = findModelFiles(o.modelDir);
    const tokenizer = Tokenizer.fromModelDir(o.modelDir);
    const { provider, sessions } = await openOnDevice(files, o);
    try {
      const encoder = readEncoderContract(sessionInfo(sessions.encoder, files.encoder));
      const prefill = readDecoderContract(sessionInfo(sessions.prefill, files.prefill), 'prefill');
      const step = readDecoderContract(sessionInfo(sessions.step, files.step), 'step');
      checkDecoderPair(prefill, step);
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
      return new AsrEngine(provider, sessions, encoder, prefill, step, tokenizer, embeddings);
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
    await Promise.all([this.sessions.encoder.release(), this.sessions.prefill.release(), this.sessions.step.release()]);
  }

  /** Encoder rows for 16 kHz mono PCM (clips under 0.5 s are zero-padded by logMel). */
  private async encode(pcm: Float32Array): Promise<{ rows: Tensor; nFrames: number; featuresMs: number; encoderMs: number }> {
    const t0 = performance.now();
    const { data, nFrames } = logMel(pcm);
    const t1 = performance.now();
    const c = this.encoderContract;
    const mel = new Tensor('float32', data, c.mel.rank === 3 ? [1, N_MELS, nFrames] : [N_MELS, nFrames]);
    const rows = (await this.sessions.encoder.run({ [c.mel.name]: mel }))[c.output.name] as Tensor;
    const expected = nAudioTokens(nFrames);
    const found = rows.dims.length === 3 && rows.dims[0] !== 1 ? -1 : rows.dims[rows.dims.length - 2];
    if (found !== expected) {
      throw new InferenceError(
        `${c.file} returned audio rows of shape [${rows.dims.join(', ')}] for ${nFrames} mel frames; expected nAudioTokens(${nFrames}) = ${expected} rows`,
      );
    }
    return { rows, nFrames, featuresMs: t1 - t0, encoderMs: performance.now() - t1 };
  }

  /** Token input for ids at the given positions; audio rows replace the pads when the graph takes embeddings. */
  private tokenFeed(c: DecoderContract, ids: readonly number[], audio?: { rows: Tensor; offset: number }): Tensor {
    if (c.token.kind === 'input_ids') return int64(ids, [1, ids.length]);
    const lookup = this.embeddings!;
    const width = lookup.hiddenSize;
    const type = c.token.type;
    const data = type === 'float32' ? new Float32Array(ids.length * width) : new Uint16Array(ids.length * width);
    ids.forEach((id, i) =>
      type === 'float32' ? lookup.rowToFloat32(id, data as Float32Array, i * width) : lookup.rowToFloat16(id, data as Uint16Array, i * width),
    );
    if (audio) {
      const rows = convertFloats(audio.rows.data as Float32Array | Uint16Array, this.encoderContract.output.type, type);
      data.set(rows, audio.offset * width);
    }
    return new Tensor(type, data, [1, ids.length, width]);
  }

  private positionFeed(c: DecoderContract, start: number, length: number): Tensor {
    const positions = Array.from({ length }, (_, i) => start + i);
    // MRoPE with identical rows is plain RoPE (contract section 8): the same positions three times.
    return c.positionIds!.rank === 3 ? int64([...positions, ...positions, ...positions], [3, 1, length]) : int64(positions, [1, length]);
  }

  private decoderFeeds(
    c: DecoderContract,
    ids: readonly number[],
    start: number,
    ones: BigInt64Array,
    audio?: { rows: Tensor; offset: number },
  ): Feeds {
    const feeds: Feeds = { [c.token.name]: this.tokenFeed(c, ids, c.token.kind === 'inputs_embeds' ? audio : undefined) };
    if (c.audio && audio) {
      const rows = audio.rows;
      const width = rows.dims[rows.dims.length - 1]!;
      const n = rows.size / width;
      const data = convertFloats(rows.data as Float32Array | Uint16Array, this.encoderContract.output.type, c.audio.type);
      feeds[c.audio.name] = new Tensor(c.audio.type, data, c.audio.rank === 3 ? [1, n, width] : [n, width]);
    }
    // A view of the chunk's buffer of ones: no per-step allocation proportional to the context length.
    if (c.attentionMask) feeds[c.attentionMask] = new Tensor('int64', ones.subarray(0, start + ids.length), [1, start + ids.length]);
    if (c.positionIds) feeds[c.positionIds.name] = this.positionFeed(c, start, ids.length);
    return feeds;
  }

  /** A prefill graph that also takes a cache (merged decoders) gets an empty one. */
  private emptyPast(c: DecoderContract): Feeds {
    const feeds: Feeds = {};
    for (const kv of c.kv) {
      if (!kv.input) continue;
      if (!c.kvHeads || !c.headDim) throw new InferenceError(`${c.file}: cannot build an empty cache without numeric head dimensions`);
      const data = c.kvType === 'float32' ? new Float32Array(0) : new Uint16Array(0);
      feeds[kv.input] = new Tensor(c.kvType, data, [1, c.kvHeads, 0, c.headDim]);
    }
    return feeds;
  }

  private nextToken(c: DecoderContract, outputs: InferenceSession.OnnxValueMapType): number {
    const { id, value } = argmaxLastRow(outputs[c.logits.name] as Tensor, c.logits.type);
    if (!Number.isFinite(value)) throw new InferenceError(`${c.file} produced non-finite logits`);
    return id;
  }

  async transcribeChunk(pcm: Float32Array, o: ChunkOptions): Promise<ChunkResult> {
    const { rows, nFrames, featuresMs, encoderMs } = await this.encode(pcm);
    const prompt = buildPrompt(this.tokenizer, {
      nAudioTokens: nAudioTokens(nFrames),
      ...(o.context ? { context: o.context } : {}),
      ...(o.language ? { language: o.language } : {}),
    });
    const stop = new Set(o.stopTokenIds ?? [this.tokenizer.tokenId(SPECIAL.imEnd), this.tokenizer.tokenId(SPECIAL.endOfText)]);
    const pre = this.prefillContract;
    const t0 = performance.now();
    const ones = new BigInt64Array(prompt.ids.length + o.maxNewTokens + 1).fill(1n);
    let outputs = await this.sessions.prefill.run({
      ...this.decoderFeeds(pre, prompt.ids, 0, ones, { rows, offset: prompt.audioOffset }),
      ...this.emptyPast(pre),
    });
    let next = this.nextToken(pre, outputs);
    const t1 = performance.now();

    const step = this.stepContract;
    // Both contracts list the cache by (layer, key/value), so index i is the same tensor in both.
    let cacheNames = pre.kv.map((kv) => kv.output);
    const stepCacheNames = step.kv.map((kv) => kv.output);
    const generated: number[] = [];
    const stream = this.tokenizer.createStreamDecoder();
    const deltas = new TranscriptDeltas(o.language !== undefined);
    const emit = (piece: string) => {
      const text = deltas.push(piece);
      if (text) o.onDelta?.(text);
    };
    let length = prompt.ids.length;
    let truncated = false;
    let cancelled = false;
    while (!stop.has(next)) {
      generated.push(next);
      emit(stream.push(next));
      if (generated.length >= o.maxNewTokens) {
        truncated = true;
        break;
      }
      if (o.shouldStop?.()) {
        cancelled = true;
        break;
      }
      const feeds = this.decoderFeeds(step, [next], length, ones);
      // present.* go straight back in as past_key_values.*: the tensors themselves, no copies.
      step.kv.forEach((kv, i) => (feeds[kv.input!] = outputs[cacheNames[i]!] as Tensor));
      outputs = await this.sessions.step.run(feeds);
      cacheNames = stepCacheNames;
      length += 1;
      next = this.nextToken(step, outputs);
    }
    emit(stream.flush());
    const t2 = performance.now();
    const rawText = this.tokenizer.decode(generated);
    const parsed = parseAsrOutput(rawText, o.language);
    return {
      text: parsed.text,
      language: parsed.language,
      rawText,
      tokens: generated,
      textTokens: o.language ? generated : generated.slice(generated.indexOf(this.tokenizer.tokenId(SPECIAL.asrText)) + 1),
      promptTokens: prompt.ids.length,
      audioTokens: prompt.nAudioTokens,
      truncated,
      cancelled,
      timings: { featuresMs, encoderMs, prefillMs: t1 - t0, stepsMs: t2 - t1, steps: Math.max(0, generated.length - 1) },
    };
  }
}
