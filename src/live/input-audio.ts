import { decodeAlaw, decodeMulaw } from '../audio/g711.js';
import { SAMPLE_RATE } from '../audio/pcm.js';
import { gcd, kernelWing, resample } from '../audio/resample.js';
import type { LiveAudioFormat } from './types.js';

/**
 * resample() over a stream that arrives in pieces: each output sample is produced once the input its kernel
 * reaches has arrived, from a window that starts on a whole period of the rate ratio, so the output is
 * bit-identical to resampling the whole stream at once. The delay is the kernel's wing (~2 ms).
 */
export class StreamResampler {
  private readonly wing: number;
  /** input samples per period of the ratio (outputs per period: `outPeriod`) */
  private readonly inPeriod: number;
  private readonly outPeriod: number;
  private buffer = new Float32Array(0);
  /** stream index of buffer[0] (a multiple of inPeriod) */
  private bufferStart = 0;
  private inputEnd = 0;
  private nextOutput = 0;

  constructor(private readonly fromRate: number) {
    this.wing = kernelWing(fromRate, SAMPLE_RATE);
    const g = gcd(fromRate, SAMPLE_RATE);
    this.inPeriod = fromRate / g;
    this.outPeriod = SAMPLE_RATE / g;
  }

  push(input: Float32Array): Float32Array {
    const grown = new Float32Array(this.buffer.length + input.length);
    grown.set(this.buffer);
    grown.set(input, this.buffer.length);
    this.buffer = grown;
    this.inputEnd += input.length;
    // Output j sits at input j * from / to; its kernel reads up to floor(that) + wing.
    const ready = Math.floor(((this.inputEnd - this.wing) * this.outPeriod) / this.inPeriod);
    return this.emit(Math.max(this.nextOutput, ready));
  }

  /** Outputs nextOutput .. end - 1, then drops the input no later output reads. */
  private emit(end: number): Float32Array {
    if (end <= this.nextOutput) return new Float32Array(0);
    const resampled = resample(this.buffer, this.fromRate, SAMPLE_RATE);
    const first = (this.bufferStart / this.inPeriod) * this.outPeriod;
    const out = resampled.slice(this.nextOutput - first, end - first);
    this.nextOutput = end;
    const firstRead = Math.floor((end * this.inPeriod) / this.outPeriod) - this.wing + 1;
    const keepFrom = Math.max(0, Math.floor(firstRead / this.inPeriod) * this.inPeriod);
    if (keepFrom > this.bufferStart) {
      this.buffer = this.buffer.slice(keepFrom - this.bufferStart);
      this.bufferStart = keepFrom;
    }
    return out;
  }
}

/**
 * A client's audio bytes, in any piece sizes (an odd byte of PCM16 waits for its pair), to 16 kHz float samples.
 */
export class InputAudio {
  private carry: number | undefined;
  private readonly resampler: StreamResampler | undefined;

  constructor(readonly format: LiveAudioFormat) {
    this.resampler = format.sampleRate === SAMPLE_RATE ? undefined : new StreamResampler(format.sampleRate);
  }

  push(bytes: Uint8Array): Float32Array {
    const samples = this.decode(bytes);
    return this.resampler ? this.resampler.push(samples) : samples;
  }

  private decode(bytes: Uint8Array): Float32Array {
    switch (this.format.encoding) {
      case 'mulaw':
        return decodeMulaw(bytes);
      case 'alaw':
        return decodeAlaw(bytes);
      case 'pcm16':
        return this.decodePcm16(bytes);
    }
  }

  private decodePcm16(bytes: Uint8Array): Float32Array {
    const held = this.carry === undefined ? 0 : 1;
    const total = held + bytes.length;
    const out = new Float32Array(total >> 1);
    const byteAt = (i: number) => (held ? (i === 0 ? this.carry! : bytes[i - 1]!) : bytes[i]!);
    for (let s = 0; s < out.length; s++) {
      const v = byteAt(2 * s) | (byteAt(2 * s + 1) << 8);
      out[s] = (v >= 0x8000 ? v - 0x10000 : v) / 32768;
    }
    this.carry = total & 1 ? byteAt(total - 1) : undefined;
    return out;
  }
}
