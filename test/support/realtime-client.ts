import { readFileSync } from 'node:fs';
import { WebSocket, type ClientOptions } from 'ws';
import { decodeWav } from '../../src/audio/wav.js';
import { sharedPath } from './shared.js';

export type ServerEvent = { type: string; event_id: string } & Record<string, unknown>;

/**
 * A plain `ws` client of /v1/realtime for tests: every server event is kept in order; `next(type)` waits for
 * the next one of that type not yet taken.
 */
export class RealtimeClient {
  readonly events: ServerEvent[] = [];
  private taken = 0;
  private waiters: Array<() => void> = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      this.events.push(JSON.parse(String(data)) as ServerEvent);
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    void this.closed.then(() => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Opens a session; rejects with the HTTP status when the upgrade is refused. */
  static connect(url: string, protocols: string[] = [], options: ClientOptions = {}): Promise<RealtimeClient> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, protocols, options);
      const client = new RealtimeClient(socket);
      socket.once('open', () => resolve(client));
      socket.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, body })));
      });
      socket.once('error', reject);
    });
  }

  send(event: Record<string, unknown>): void {
    this.socket.send(JSON.stringify(event));
  }

  /** The next event of `type` after the last one taken (of any type: events are taken in order). */
  async next(type: string, timeoutMs = 30_000): Promise<ServerEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex((e, k) => k >= this.taken && e.type === type);
      if (i >= 0) {
        this.taken = i + 1;
        return this.events[i]!;
      }
      if (this.socket.readyState === WebSocket.CLOSED) throw new Error(`closed before ${type}; events: ${this.types().join(', ')}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${type} within ${timeoutMs} ms; events: ${this.types().join(', ')}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  types(): string[] {
    return this.events.map((e) => e.type);
  }

  /** Appends `pcm` in chunks of `chunkMs`, paced at `speed` x real time (Infinity: as fast as possible). */
  async stream(pcm: Buffer, o: { bytesPerSecond: number; chunkMs?: number; speed?: number }): Promise<void> {
    const chunk = Math.round((o.bytesPerSecond * (o.chunkMs ?? 100)) / 1000) & ~1;
    const started = performance.now();
    for (let at = 0; at < pcm.length; at += chunk) {
      this.send({ type: 'input_audio_buffer.append', audio: pcm.subarray(at, at + chunk).toString('base64') });
      const due = (((at + chunk) / o.bytesPerSecond) * 1000) / (o.speed ?? 1);
      const wait = due - (performance.now() - started);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }

  close(): Promise<{ code: number; reason: string }> {
    this.socket.close();
    return this.closed;
  }
}

/** A shared clip (24 kHz mono 16-bit WAV) as raw PCM16 bytes, what OpenAI's audio/pcm format carries. */
export function clipPcm24(name: string): Buffer {
  return pcm16(clipSamples(name));
}

/** A shared clip's samples (24 kHz mono). */
export function clipSamples(name: string): Float32Array {
  const { channels, sampleRate } = decodeWav(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`)));
  if (sampleRate !== 24000 || channels.length !== 1) throw new Error(`${name}.wav is not 24 kHz mono`);
  return channels[0]!;
}

/** Float samples -> 16-bit little-endian PCM bytes. */
export function pcm16(samples: Float32Array): Buffer {
  const out = Buffer.alloc(samples.length * 2);
  for (let i = 0; i < samples.length; i++) out.writeInt16LE(Math.max(-32768, Math.min(32767, Math.round(samples[i]! * 32767))), i * 2);
  return out;
}

export const wsURL = (baseURL: string, query = '?intent=transcription') => `${baseURL.replace(/^http/, 'ws')}/v1/realtime${query}`;
