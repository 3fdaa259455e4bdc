import { sharedPath } from './shared.js';
import { ffmpeg, transcode, type TempDir } from './transcode.js';

/**
 * Hostile inputs made from real files: byte-level mutations of audio (the decoder's fuzz) and whole mangled
 * multipart requests (the front door's fuzz: the HTTP fuzz test and the soak's hostile uploads).
 */

export type Rand = () => number;
const int = (rand: Rand, n: number) => Math.floor(rand() * n);
const pick = <T>(rand: Rand, items: readonly T[]): T => items[int(rand, items.length)]!;
const junk = (rand: Rand, n: number) => Uint8Array.from({ length: n }, () => int(rand, 256));
const EXTREMES = [0, 1, 0xff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff, 44100, 64, 3];

/** One random mutation: byte flips (often in the header), truncation, inserted junk, a deleted or repeated range, a header field set to an extreme value. */
export function mutate(seed: Uint8Array, rand: Rand): Uint8Array {
  const b = seed.slice();
  const at = (headerBias: boolean) => (headerBias && rand() < 0.6 ? int(rand, Math.min(128, b.length)) : int(rand, b.length));
  switch (int(rand, 6)) {
    case 0: {
      for (let k = 1 + int(rand, 8); k > 0; k--) b[at(true)] = int(rand, 256);
      return b;
    }
    case 1:
      return b.subarray(0, int(rand, b.length));
    case 2: {
      const p = at(true);
      const out = new Uint8Array(b.length + 1 + int(rand, 512));
      out.set(b.subarray(0, p));
      out.set(junk(rand, out.length - b.length), p);
      out.set(b.subarray(p), p + out.length - b.length);
      return out;
    }
    case 3: {
      const p = at(true);
      const q = Math.min(b.length, p + 1 + int(rand, 4096));
      return new Uint8Array([...b.subarray(0, p), ...b.subarray(q)]);
    }
    case 4: {
      const p = at(false);
      const q = Math.min(b.length, p + 1 + int(rand, 4096));
      const r = at(false);
      return new Uint8Array([...b.subarray(0, r), ...b.subarray(p, q), ...b.subarray(r)]);
    }
    default: {
      const p = int(rand, Math.max(1, Math.min(64, b.length - 4)));
      const view = new DataView(b.buffer);
      const value = EXTREMES[int(rand, EXTREMES.length)]!;
      if (rand() < 0.5) view.setUint32(p, value >>> 0, rand() < 0.7);
      else view.setUint16(p, value & 0xffff, rand() < 0.7);
      return b;
    }
  }
}

/** The seed files every fuzz mutates: 1.5 s of a shared clip in each container the service meets most. */
export const SEED_FORMATS = ['wav-pcm16', 'wav-float32', 'flac', 'mp3', 'ogg-opus', 'm4a'] as const;

export function fuzzSeeds(dir: TempDir): Record<string, Uint8Array> {
  const short = dir.path('short.wav');
  ffmpeg('-i', sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'), '-t', '1.5', short);
  const seeds: Record<string, Uint8Array> = {};
  for (const name of SEED_FORMATS) seeds[name] = transcode(short, name, dir).bytes;
  seeds['wav-pcm24-stereo-44k'] = transcode(short, 'wav-pcm24', dir, { rate: 44100, channels: 2 }).bytes;
  return seeds;
}

/** One request to POST /v1/audio/transcriptions, as bytes: what a hostile or broken client sends. */
export interface HostileRequest {
  /** which mangling made it (for the tallies) */
  kind: string;
  headers: Record<string, string>;
  body: Buffer;
}

export interface Part {
  name: string;
  value: Uint8Array | string;
  filename?: string;
  contentType?: string;
}

const CRLF = '\r\n';

/** A multipart body built part by part, so that any piece of it can be wrong (or all of it right). */
export function multipart(boundary: string, parts: Part[], closing = true): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disposition = `Content-Disposition: form-data; name="${p.name}"${p.filename !== undefined ? `; filename="${p.filename}"` : ''}`;
    const type = p.contentType !== undefined ? `${CRLF}Content-Type: ${p.contentType}` : '';
    chunks.push(Buffer.from(`--${boundary}${CRLF}${disposition}${type}${CRLF}${CRLF}`), Buffer.from(p.value), Buffer.from(CRLF));
  }
  if (closing) chunks.push(Buffer.from(`--${boundary}--${CRLF}`));
  return Buffer.concat(chunks);
}

const FORMATS = ['json', 'text', 'srt', 'verbose_json', 'vtt'];
const FILE_TYPES = ['audio/wav', 'audio/mpeg', 'application/octet-stream', 'text/html', 'image/png', '', 'audio/*; codecs=opus', 'x/\u0000'];
/** field values a form should never carry: wrong types, out-of-range numbers, injection-looking text */
const ODD_VALUES = ['', ' ', 'NaN', '-1', '1e309', 'true', 'null', '{"a":1}', '../../etc/passwd', '%00', '\u0000\u0001', 'é'.repeat(300), '<script>'];
const FIELDS = ['model', 'language', 'prompt', 'response_format', 'temperature', 'stream', 'timestamp_granularities[]', 'chunking_strategy', 'include[]'];

/** A plausible request around `file`: the model, sometimes a format, a language, stream=true. */
function plausibleParts(rand: Rand, file: Uint8Array): Part[] {
  const parts: Part[] = [{ name: 'model', value: pick(rand, ['mega-asr', 'whisper-1']) }];
  if (rand() < 0.5) parts.push({ name: 'response_format', value: pick(rand, FORMATS) });
  if (rand() < 0.2) parts.push({ name: 'stream', value: 'true' });
  if (rand() < 0.2) parts.push({ name: 'language', value: pick(rand, ['en', 'fr', 'zz', 'english']) });
  parts.push({ name: 'file', value: file, filename: pick(rand, ['clip.wav', 'fuzz.bin', 'a.mp3', '', '..\\..\\x.flac']), contentType: pick(rand, FILE_TYPES.slice(0, 3)) });
  return parts;
}

/**
 * The i-th hostile request: every other one is a mutated real file in a well-formed form; the rest break the
 * form itself (mangled boundaries, duplicate fields, huge field values, wrong content types, truncated parts,
 * odd field values, a missing file).
 */
export function hostileRequest(rand: Rand, seeds: Record<string, Uint8Array>, i: number): HostileRequest {
  const boundary = `fuzz${int(rand, 1e9).toString(36)}`;
  const typed = (b: string) => ({ 'content-type': `multipart/form-data; boundary=${b}` });
  const names = Object.keys(seeds);
  const seed = seeds[names[i % names.length]!]!;
  const file = rand() < 0.7 ? mutate(seed, rand) : seed;
  if (i % 2 === 0) return { kind: 'mutated-file', headers: typed(boundary), body: multipart(boundary, plausibleParts(rand, mutate(seed, rand))) };
  const parts = plausibleParts(rand, file);
  switch (int(rand, 8)) {
    case 0: {
      // the header's boundary is not the body's, is missing, quoted oddly, over RFC 2046's 70 characters or empty
      const header = pick(rand, [`${boundary}x`, '', '"', `"${boundary}`, 'x'.repeat(200), `${boundary}; boundary=other`]);
      const body = multipart(pick(rand, [boundary, 'x'.repeat(200), `${boundary} `]), parts);
      return { kind: 'mangled-boundary', headers: header ? typed(header) : { 'content-type': 'multipart/form-data' }, body };
    }
    case 1: {
      const dup = pick(rand, ['file', 'model', 'response_format', 'stream', 'language']);
      const extra = parts.find((p) => p.name === dup) ?? { name: dup, value: pick(rand, FORMATS) };
      const copies = Array.from({ length: 1 + int(rand, 20) }, () => extra);
      return { kind: 'duplicate-fields', headers: typed(boundary), body: multipart(boundary, [...copies, ...parts]) };
    }
    case 2: {
      // a field far past any sane size (up to 2 MiB), or a huge field name
      const size = pick(rand, [70_000, 300_000, 2 * 2 ** 20]);
      const huge = rand() < 0.8 ? { name: pick(rand, FIELDS), value: 'a'.repeat(size) } : { name: 'n'.repeat(size), value: 'x' };
      return { kind: 'huge-field', headers: typed(boundary), body: multipart(boundary, [huge, ...parts]) };
    }
    case 3: {
      const type = pick(rand, ['application/json', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/mixed; boundary=' + boundary, 'audio/wav', '']);
      return { kind: 'wrong-content-type', headers: type ? { 'content-type': type } : {}, body: multipart(boundary, parts) };
    }
    case 4: {
      const whole = multipart(boundary, parts);
      return { kind: 'truncated', headers: typed(boundary), body: whole.subarray(0, int(rand, whole.length)) };
    }
    case 5:
      return { kind: 'unclosed', headers: typed(boundary), body: multipart(boundary, parts, false) };
    case 6: {
      const odd = Array.from({ length: 1 + int(rand, 4) }, () => ({ name: pick(rand, FIELDS), value: pick(rand, ODD_VALUES) }));
      return { kind: 'odd-values', headers: typed(boundary), body: multipart(boundary, [...odd, ...parts]) };
    }
    default: {
      // no file part, a file sent as a plain field, or junk between the parts
      const variant = int(rand, 3);
      const body =
        variant === 0
          ? multipart(boundary, parts.filter((p) => p.name !== 'file'))
          : variant === 1
            ? multipart(boundary, parts.map((p) => (p.name === 'file' ? { name: 'file', value: p.value } : p)))
            : Buffer.concat([Buffer.from(junk(rand, 1 + int(rand, 200))), multipart(boundary, parts)]);
      return { kind: 'missing-file', headers: typed(boundary), body };
    }
  }
}
