import { Tensor, type InferenceSession } from 'onnxruntime-node';
import { logMel, N_MELS } from '../audio/logMel.js';
import type { PrefillInput } from './backend.js';
import type { EncoderContract } from './contract.js';
import { InferenceError } from './errors.js';
import type { Language } from './languages.js';
import { buildPrompt, nAudioTokens, type TranscriptPrefix } from './prompt.js';
import type { StageLock } from './stage-lock.js';
import type { Tokenizer } from './tokenizer.js';

export interface ProcessedAudio {
  /** the prompt's ids and the encoder rows that replace its audio pads */
  prompt: PrefillInput;
  /** encoder rows in the prompt (one <|audio_pad|> each) */
  audioTokens: number;
  /** the prompt's last ids that are forced transcript text (a prefix's) */
  prefixTextTokens: number;
  featuresMs: number;
  encoderMs: number;
}

/**
 * The processor stage: 16 kHz mono PCM -> log-mel features -> encoder rows -> the chat prompt around them
 * (clips under 0.5 s are zero-padded by logMel).
 */
export class AsrProcessor {
  constructor(
    private readonly encoder: Pick<InferenceSession, 'run'>,
    private readonly contract: EncoderContract,
    private readonly tokenizer: Tokenizer,
    /** the engine's: features and encoder run as one stage, timed alone */
    private readonly lock: StageLock,
  ) {}

  async process(pcm: Float32Array, o: { language?: Language; context?: string; prefix?: TranscriptPrefix }): Promise<ProcessedAudio> {
    const { rows, nFrames, featuresMs, encoderMs } = await this.lock.run(() => this.encode(pcm));
    const expected = nAudioTokens(nFrames);
    const prompt = buildPrompt(this.tokenizer, {
      nAudioTokens: expected,
      ...(o.context ? { context: o.context } : {}),
      ...(o.language ? { language: o.language } : {}),
      ...(o.prefix ? { prefix: o.prefix } : {}),
    });
    return {
      prompt: { ids: prompt.ids, audio: { rows, offset: prompt.audioOffset } },
      audioTokens: expected,
      prefixTextTokens: prompt.prefixTextTokens,
      featuresMs,
      encoderMs,
    };
  }

  private async encode(pcm: Float32Array): Promise<{ rows: Tensor; nFrames: number; featuresMs: number; encoderMs: number }> {
    const t0 = performance.now();
    const { data, nFrames } = logMel(pcm);
    const t1 = performance.now();
    const c = this.contract;
    const mel = new Tensor('float32', data, c.mel.rank === 3 ? [1, N_MELS, nFrames] : [N_MELS, nFrames]);
    const rows = (await this.encoder.run({ [c.mel.name]: mel }))[c.output.name] as Tensor;
    const expected = nAudioTokens(nFrames);
    const found = rows.dims.length === 3 && rows.dims[0] !== 1 ? -1 : rows.dims[rows.dims.length - 2];
    if (found !== expected) {
      throw new InferenceError(
        `${c.file} returned audio rows of shape [${rows.dims.join(', ')}] for ${nFrames} mel frames; expected nAudioTokens(${nFrames}) = ${expected} rows`,
      );
    }
    return { rows, nFrames, featuresMs: t1 - t0, encoderMs: performance.now() - t1 };
  }
}
