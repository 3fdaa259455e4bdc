/**
 * The recent part of a session's 16 kHz stream, addressed by stream sample index (0 = the session's first
 * sample): turns are slices of it, and what no turn can still need is dropped from the front.
 */
export class StreamBuffer {
  private data = new Float32Array(16000);
  /** stream index of data[0] */
  private base = 0;
  private length = 0;

  /** stream index one past the last sample */
  get end(): number {
    return this.base + this.length;
  }

  /** stream index of the oldest sample kept */
  get start(): number {
    return this.base;
  }

  append(pcm: Float32Array): void {
    if (this.length + pcm.length > this.data.length) {
      const grown = new Float32Array(Math.max(2 * this.data.length, this.length + pcm.length));
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    }
    this.data.set(pcm, this.length);
    this.length += pcm.length;
  }

  /** A copy of samples [from, to), clamped to what is kept. */
  slice(from: number, to: number): Float32Array {
    const a = Math.max(from, this.base) - this.base;
    const b = Math.min(to, this.end) - this.base;
    return this.data.slice(a, Math.max(a, b));
  }

  /** Forgets the samples before `index`. */
  dropBefore(index: number): void {
    const n = Math.min(index, this.end) - this.base;
    if (n <= 0) return;
    this.data.copyWithin(0, n, this.length);
    this.base += n;
    this.length -= n;
  }
}
