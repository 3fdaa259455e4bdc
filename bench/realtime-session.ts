import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { toMono } from '../src/audio/pcm.js';
import { resample } from '../src/audio/resample.js';
import { decodeWav } from '../src/audio/wav.js';
import { wavNames } from './bench-clips.js';

/**
 * One client of GET /v1/realtime?intent=transcription, as a live caller is: it plays clips in real time (24 kHz
 * PCM16 appends every 100 ms) and notes when each server event arrives, so that latencies can be read against
 * the moment the audio they concern was sent.
 */

export const RATE = 24000;
const CHUNK_MS = 100;
const CHUNK_SAMPLES = (RATE * CHUNK_MS) / 1000;
/** Silence after each clip with server_vad: longer than its default silence_duration_ms (500), so the turn ends. */
const TRAILING_SILENCE_MS = 1000;

export interface RealtimeClip {
  name: string;
  seconds: number;
  /** 24 kHz PCM16 LE mono */
  pcm: Buffer;
}

/** Every *.wav in `dir`, sorted by name, as 24 kHz PCM16 (resampled from whatever rate it has). */
export function loadRealtimeClips(dir: string): RealtimeClip[] {
  return wavNames(dir).map((name) => {
    const audio = decodeWav(readFileSync(join(dir, name)));
    const mono = resample(toMono(audio.channels), audio.sampleRate, RATE);
    const pcm = Buffer.alloc(mono.length * 2);
    for (let i = 0; i < mono.length; i++) pcm.writeInt16LE(Math.round(Math.max(-1, Math.min(1, mono[i]!)) * 32767), i * 2);
    return { name: basename(name, '.wav'), seconds: mono.length / RATE, pcm };
  });
}

export type TurnMode = 'vad' | 'commit';

export interface TurnRecord {
  itemId: string;
  /** when the turn's first audio was sent (performance.now() ms) */
  startedAt: number;
  /** when its last audio was sent (speech_stopped's audio_end_ms) or its commit */
  endedAt?: number;
  /** arrival of each delta: ms since the turn's first audio was sent */
  deltas: number[];
  text: string;
  completedAt?: number;
  transcript?: string;
  failed?: string;
}

export interface SessionRecord {
  turns: TurnRecord[];
  /** `error` events, as `code: message` */
  errors: string[];
  /** the connection closed before the session was done (a refusal: 1013 with a reason) */
  brokenClose?: { code: number; reason: string };
  /** turns still without a transcript when the session gave up waiting */
  unfinished: number;
  audioSeconds: number;
}

export interface SessionOptions {
  /** ws://host:port */
  url: string;
  clips: RealtimeClip[];
  /** the first clip played; the rest follow in rotation */
  firstClip: number;
  /** audio played at least this long (whole clips) */
  seconds: number;
  turns: TurnMode;
  /** delay before the first append, so that sessions do not all send in the same millisecond */
  offsetMs: number;
  /** how long to wait for the last transcripts after the audio ends */
  settleTimeoutMs: number;
}

interface Chunk {
  pcm: Buffer;
  /** the clip this chunk starts (its turn starts here in commit mode) */
  startsClip: boolean;
  /** commit after this chunk (commit mode, a clip's last chunk) */
  commitAfter: boolean;
}

function plan(o: SessionOptions): Chunk[] {
  const chunks: Chunk[] = [];
  let played = 0;
  for (let i = 0; played === 0 || played < o.seconds; i++) {
    const clip = o.clips[(o.firstClip + i) % o.clips.length]!;
    const pieces = Math.ceil(clip.pcm.length / (CHUNK_SAMPLES * 2));
    for (let p = 0; p < pieces; p++) {
      chunks.push({
        pcm: clip.pcm.subarray(p * CHUNK_SAMPLES * 2, (p + 1) * CHUNK_SAMPLES * 2),
        startsClip: p === 0,
        commitAfter: o.turns === 'commit' && p === pieces - 1,
      });
    }
    if (o.turns === 'vad') {
      for (let s = 0; s < TRAILING_SILENCE_MS / CHUNK_MS; s++) chunks.push({ pcm: Buffer.alloc(CHUNK_SAMPLES * 2), startsClip: false, commitAfter: false });
    }
    played += clip.seconds;
  }
  return chunks;
}

/** Plays the clips over one session and waits for their transcripts; never throws for what the server does. */
export async function driveSession(o: SessionOptions): Promise<SessionRecord> {
  const record: SessionRecord = { turns: [], errors: [], unfinished: 0, audioSeconds: 0 };
  const turns = new Map<string, TurnRecord>();
  /** send time and audio end (ms of session audio) of each chunk sent */
  const sent: { at: number; audioEndMs: number }[] = [];
  /** send times of the clips not yet committed (commit mode) */
  const clipStarts: number[] = [];
  const commits: number[] = [];
  let audioMs = 0;
  let speaking = false;
  let finishing = false;
  let wake: () => void = () => {};

  /** When the chunk holding session audio `ms` was sent. */
  const sentAt = (ms: number) => (sent.find((c) => c.audioEndMs >= ms) ?? sent.at(-1))?.at ?? performance.now();
  const turn = (id: string) => {
    let t = turns.get(id);
    if (!t) {
      // In commit mode the server names the turn at its first delta or its commit: it began with the oldest uncommitted clip.
      t = { itemId: id, startedAt: clipStarts[0] ?? performance.now(), deltas: [], text: '' };
      turns.set(id, t);
      record.turns.push(t);
    }
    return t;
  };
  const open = () => record.turns.filter((t) => t.completedAt === undefined && t.failed === undefined).length;

  const socket = new WebSocket(`${o.url}/v1/realtime?intent=transcription`);
  const closed = new Promise<void>((resolve) => {
    socket.once('close', (code, reason) => {
      if (!finishing) record.brokenClose = { code, reason: reason.toString() };
      resolve();
      wake();
    });
  });
  socket.once('error', (err) => record.errors.push(`connection: ${err.message}`));
  const ready = new Promise<boolean>((resolve) => {
    socket.on('message', (data) => {
      const now = performance.now();
      const e = JSON.parse(data.toString()) as Record<string, unknown> & { type: string; item_id?: string };
      switch (e.type) {
        case 'session.created':
          socket.send(JSON.stringify({
            type: 'session.update',
            session: {
              type: 'transcription',
              audio: { input: { format: { type: 'audio/pcm', rate: RATE }, turn_detection: o.turns === 'vad' ? { type: 'server_vad' } : null } },
            },
          }));
          break;
        case 'session.updated':
          resolve(true);
          break;
        case 'input_audio_buffer.speech_started':
          speaking = true;
          turns.set(e.item_id!, { itemId: e.item_id!, startedAt: sentAt(e.audio_start_ms as number), deltas: [], text: '' });
          record.turns.push(turns.get(e.item_id!)!);
          break;
        case 'input_audio_buffer.speech_stopped':
          speaking = false;
          turn(e.item_id!).endedAt = sentAt(e.audio_end_ms as number);
          break;
        case 'input_audio_buffer.committed': {
          const t = turn(e.item_id!);
          if (o.turns === 'commit') {
            clipStarts.shift();
            t.endedAt = commits.shift();
          }
          break;
        }
        case 'conversation.item.input_audio_transcription.delta': {
          const t = turn(e.item_id!);
          t.deltas.push(now - t.startedAt);
          t.text += e.delta as string;
          break;
        }
        case 'conversation.item.input_audio_transcription.completed': {
          const t = turn(e.item_id!);
          t.completedAt = now;
          t.transcript = e.transcript as string;
          wake();
          break;
        }
        case 'conversation.item.input_audio_transcription.failed': {
          const t = turn(e.item_id!);
          t.failed = (e.error as { message?: string } | undefined)?.message ?? 'failed';
          wake();
          break;
        }
        case 'error': {
          const err = e.error as { code?: string; message?: string };
          record.errors.push(`${err.code ?? 'error'}: ${err.message ?? ''}`);
          // Before session.updated: the settings were refused, nothing to play (later, a no-op).
          resolve(false);
          break;
        }
      }
    });
    void closed.then(() => resolve(false));
  });

  if (await ready) {
    const chunks = plan(o);
    const start = performance.now() + o.offsetMs;
    for (const [k, chunk] of chunks.entries()) {
      // Chunk k holds audio that a live speaker finishes saying at start + (k + 1) x 100 ms.
      const due = start + (k + 1) * CHUNK_MS - performance.now();
      if (due > 0) await sleep(due);
      if (socket.readyState !== WebSocket.OPEN) break;
      const at = performance.now();
      if (chunk.startsClip) clipStarts.push(at);
      socket.send(JSON.stringify({ type: 'input_audio_buffer.append', audio: chunk.pcm.toString('base64') }));
      audioMs += (chunk.pcm.length / 2 / RATE) * 1000;
      sent.push({ at, audioEndMs: audioMs });
      if (chunk.commitAfter) {
        commits.push(performance.now());
        socket.send(JSON.stringify({ type: 'input_audio_buffer.commit' }));
      }
    }
    record.audioSeconds = audioMs / 1000;
    const deadline = performance.now() + o.settleTimeoutMs;
    // Wait for every turn's transcript (and, with server_vad, for a turn still being detected).
    while (socket.readyState === WebSocket.OPEN && (open() > 0 || speaking) && performance.now() < deadline) {
      // the deadline's timer is cancelled on each wake: left running it would keep the bench alive for minutes
      const woken = new AbortController();
      const timeout = sleep(Math.max(0, deadline - performance.now()), undefined, { signal: woken.signal }).catch(() => {});
      await Promise.race([new Promise<void>((resolve) => (wake = resolve)), timeout]);
      woken.abort();
    }
  }
  record.unfinished = open();
  finishing = true;
  if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) socket.close(1000);
  await closed;
  return record;
}
