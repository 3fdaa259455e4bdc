/* global registerProcessor, AudioWorkletProcessor, sampleRate */
// Runs on the audio thread: the microphone's float samples, at whatever rate the AudioContext runs, become
// 24 kHz 16-bit little-endian mono, posted to the page about every 100 ms as an ArrayBuffer (what OpenAI's
// Realtime `audio/pcm` format takes). A 'flush' message posts what is left, then 'flushed'.

const OUTPUT_RATE = 24000;
const BATCH_SAMPLES = OUTPUT_RATE / 10;
/** Zero crossings of the windowed-sinc kernel on each side: flat to ~0.9 of the output's Nyquist rate. */
const ZERO_CROSSINGS = 12;

/** Blackman-windowed sinc, for |x| < 1 the window's own position. */
function kernel(t, x) {
  if (t === 0) return 1;
  const window = 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
  return (Math.sin(Math.PI * t) / (Math.PI * t)) * window;
}

class Pcm16Processor extends AudioWorkletProcessor {
  constructor() {
    super();
    /** below the output's Nyquist rate when downsampling (no aliasing), the input's when upsampling */
    this.cutoff = Math.min(1, OUTPUT_RATE / sampleRate);
    /** input samples each side of an output sample that the kernel reaches */
    this.reach = Math.ceil(ZERO_CROSSINGS / this.cutoff);
    /** the input not yet used up, starting with silence before the stream; `first` is the index of pending[0] */
    this.pending = new Float32Array(this.reach);
    this.first = -this.reach;
    /** output samples made so far: the next one lies at input index made x sampleRate / OUTPUT_RATE */
    this.made = 0;
    this.batch = new Int16Array(BATCH_SAMPLES);
    this.filled = 0;
    this.port.onmessage = (e) => {
      if (e.data !== 'flush') return;
      // The last samples' right-hand neighbours are silence: pad so that every input sample is used.
      this.take(new Float32Array(this.reach));
      this.post();
      this.port.postMessage('flushed');
    };
  }

  take(input) {
    const joined = new Float32Array(this.pending.length + input.length);
    joined.set(this.pending);
    joined.set(input, this.pending.length);
    const last = this.first + joined.length - 1;
    // The position from the integer count, not a running sum: no drift, and exact where the rates divide.
    const position = () => (this.made * sampleRate) / OUTPUT_RATE;
    while (Math.floor(position()) + this.reach <= last) {
      this.emit(this.sample(joined, position() - this.first));
      this.made += 1;
    }
    // Keep what the next output samples still reach back to.
    const keepFrom = Math.max(0, Math.floor(position()) - this.reach - this.first);
    this.pending = joined.slice(keepFrom);
    this.first += keepFrom;
  }

  /** The band-limited value of `x` at fractional index `at`. */
  sample(x, at) {
    const centre = Math.floor(at);
    let sum = 0;
    for (let k = centre - this.reach + 1; k <= centre + this.reach; k++) {
      const distance = at - k;
      const w = distance / this.reach;
      if (w <= -1 || w >= 1) continue;
      sum += x[k] * kernel(distance * this.cutoff, w);
    }
    return sum * this.cutoff;
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.batch[this.filled++] = Math.round(clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff);
    if (this.filled === BATCH_SAMPLES) this.post();
  }

  /** Posts the batch so far as little-endian bytes (the buffer is handed over, not copied). */
  post() {
    if (this.filled === 0) return;
    const bytes = new DataView(new ArrayBuffer(this.filled * 2));
    for (let i = 0; i < this.filled; i++) bytes.setInt16(i * 2, this.batch[i], true);
    this.port.postMessage(bytes.buffer, [bytes.buffer]);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length > 0) {
      // Mono: the mean of the channels (a microphone is usually one already).
      const mono = new Float32Array(channels[0].length);
      for (const channel of channels) for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / channels.length;
      this.take(mono);
    }
    return true;
  }
}

registerProcessor('pcm16-24k', Pcm16Processor);
