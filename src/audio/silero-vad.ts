/**
 * Silero VAD v6 (v6.2) on onnxruntime-node's CPU provider: the speech probability of each 32 ms frame of 16 kHz
 * mono audio. The model file ships in `@ricky0123/vad-web` (ISC, pinned in package.json) and is read from
 * node_modules where it stands, never copied.
 *
 * The ONNX graph is recurrent: each call takes one frame (512 samples) after the last 64 samples of the frame
 * before (its context), the recurrent state [2, 1, 128] and the sample rate, and returns the probability and the
 * next state, as Silero's own OnnxWrapper drives it. One session serves every stream of a thread; each stream
 * keeps its own state and context.
 *
 * The state remembers the background for ~10 s: after loud noise, a quiet far-field voice that follows is missed
 * (measured: a noisy clip, 1.5 s of digital silence, then a reverberant one: nothing found in the second). Audio
 * after a second of digital silence is a new recording as far as anyone can tell, so the state is cleared there
 * (the model still hears the rest of the silence: a fresh state fed silence finds a quiet voice best).
 */
import { createRequire } from 'node:module';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { SAMPLE_RATE } from './pcm.js';

/** Samples per frame at 16 kHz (32 ms): the only frame size the v5/v6 graphs take at this rate. */
export const VAD_FRAME_SAMPLES = 512;
/** Samples of the previous frame prepended to each frame. */
const CONTEXT_SAMPLES = 64;
const STATE_DIMS = [2, 1, 128] as const;
const STATE_SIZE = STATE_DIMS[0] * STATE_DIMS[1] * STATE_DIMS[2];
const MODEL = '@ricky0123/vad-web/dist/silero_vad_v6.onnx';
/** A frame whose every sample is under this (-78 dBFS, 4 LSB at 16 bits) is digital silence... */
const SILENT_PEAK = 2 ** -13;
/** ...and this many in a row (1 s) end a recording: the state is cleared. */
const SILENT_FRAMES_TO_RESET = Math.round(SAMPLE_RATE / VAD_FRAME_SAMPLES);

class VadModelError extends Error {
  override name = 'VadModelError';
}

/** The graph's input and output names, read from the session and checked against what we feed it. */
interface Names {
  input: string;
  state: string;
  sr: string;
  output: string;
  stateOut: string;
}

function namesOf(session: InferenceSession): Names {
  const find = (list: readonly string[], name: string, what: string) => {
    if (!list.includes(name)) throw new VadModelError(`Silero VAD model has no ${what} '${name}'; it has ${list.join(', ')}`);
    return name;
  };
  return {
    input: find(session.inputNames, 'input', 'audio input'),
    state: find(session.inputNames, 'state', 'state input'),
    sr: find(session.inputNames, 'sr', 'sample-rate input'),
    output: find(session.outputNames, 'output', 'probability output'),
    stateOut: find(session.outputNames, 'stateN', 'state output'),
  };
}

/** Absolute path of the model file in node_modules. */
export function sileroModelPath(): string {
  try {
    return createRequire(import.meta.url).resolve(MODEL);
  } catch {
    throw new VadModelError(`Silero VAD model not found: ${MODEL} (install the pinned @ricky0123/vad-web with npm ci)`);
  }
}

let threadVad: Promise<SileroVad> | undefined;

export class SileroVad {
  private readonly sampleRate = new Tensor('int64', BigInt64Array.from([BigInt(SAMPLE_RATE)]), []);

  private constructor(
    private readonly session: InferenceSession,
    private readonly names: Names,
  ) {}

  /**
   * One session for the thread: CPU, one intra-op thread (a frame is ~0.1-0.3 ms of work; more threads only cost).
   * `path`: another Silero v5/v6 file than the pinned package's.
   */
  static async load(path = sileroModelPath()): Promise<SileroVad> {
    let session: InferenceSession;
    try {
      session = await InferenceSession.create(path, {
        executionProviders: ['cpu'],
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        logSeverityLevel: 3,
      });
    } catch (err) {
      throw new VadModelError(`${path}: onnxruntime could not load it: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    }
    try {
      return new SileroVad(session, namesOf(session));
    } catch (err) {
      await session.release();
      throw err;
    }
  }

  /**
   * The thread's model, loaded on first use and kept for the thread's life: every file transcription and live
   * stream of a thread shares its one session (onnxruntime-node may be loaded only once per thread anyway).
   */
  static forThread(): Promise<SileroVad> {
    threadVad ??= SileroVad.load().catch((err: unknown) => {
      threadVad = undefined;
      throw err;
    });
    return threadVad;
  }

  /** A new stream with its own recurrent state and context. */
  stream(): VadStream {
    return new SileroStream(this);
  }

  release(): Promise<void> {
    return this.session.release();
  }

  /** A stream's feeds, made once: tensors over its window (context + 512 samples) and state, which it refills. */
  feeds(window: Float32Array, state: Float32Array): Record<string, Tensor> {
    const n = this.names;
    return { [n.input]: new Tensor('float32', window, [1, window.length]), [n.state]: new Tensor('float32', state, [...STATE_DIMS]), [n.sr]: this.sampleRate };
  }

  /** One frame through the model: its speech probability; `state` (the array behind the feeds') updated in place. */
  async frame(feeds: Record<string, Tensor>, state: Float32Array): Promise<number> {
    const out = await this.session.run(feeds);
    state.set(out[this.names.stateOut]!.data as Float32Array);
    return (out[this.names.output]!.data as Float32Array)[0]!;
  }
}

export interface VadStream {
  /**
   * 16 kHz mono samples in any sizes; resolves with the speech probability of each 512-sample (32 ms) frame
   * completed by this push, in order. Calls must not overlap (await each).
   */
  push(pcm: Float32Array): Promise<Float32Array>;
  /** Back to the state of a new stream (silence before, no partial frame); not while a push runs. */
  reset(): void;
  /** Done with the stream: what it holds may be freed (after a push still running). */
  close(): void;
}

class SileroStream implements VadStream {
  /** Context then the frame being filled: the graph's input, reused. */
  private readonly window = new Float32Array(CONTEXT_SAMPLES + VAD_FRAME_SAMPLES);
  private readonly state = new Float32Array(STATE_SIZE);
  /** Samples of the current frame received so far. */
  private filled = 0;
  /** Frames of digital silence in a row. */
  private silentFrames = 0;
  private busy = false;
  private readonly feeds: Record<string, Tensor>;

  constructor(private readonly vad: SileroVad) {
    this.feeds = vad.feeds(this.window, this.state);
  }

  async push(pcm: Float32Array): Promise<Float32Array> {
    if (this.busy) throw new Error('VadStream.push called again before the previous push resolved');
    this.busy = true;
    try {
      const probs = new Float32Array(Math.floor((this.filled + pcm.length) / VAD_FRAME_SAMPLES));
      let at = 0;
      let k = 0;
      while (at < pcm.length) {
        const take = Math.min(VAD_FRAME_SAMPLES - this.filled, pcm.length - at);
        this.window.set(pcm.subarray(at, at + take), CONTEXT_SAMPLES + this.filled);
        this.filled += take;
        at += take;
        if (this.filled < VAD_FRAME_SAMPLES) break;
        probs[k++] = await this.score();
        this.window.copyWithin(0, VAD_FRAME_SAMPLES);
        this.filled = 0;
      }
      return probs;
    } finally {
      this.busy = false;
    }
  }

  /** Nothing to free: the state is this object's, collected with it. */
  close(): void {}

  reset(): void {
    this.window.fill(0);
    this.state.fill(0);
    this.filled = 0;
    this.silentFrames = 0;
  }

  /** The full frame in the window: its probability (0 for digital silence once the state is cleared). */
  private async score(): Promise<number> {
    let peak = 0;
    for (let i = CONTEXT_SAMPLES; i < this.window.length; i++) peak = Math.max(peak, Math.abs(this.window[i]!));
    if (peak >= SILENT_PEAK) this.silentFrames = 0;
    else if (++this.silentFrames === SILENT_FRAMES_TO_RESET) this.state.fill(0);
    return this.vad.frame(this.feeds, this.state);
  }
}
