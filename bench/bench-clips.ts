import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { readWavHeader } from '../src/audio/wav.js';

/** A clip sent by the bench, with its multipart bodies built once (plain and `stream=true`). */
export interface BenchClip {
  name: string;
  /** audio duration from the WAV header */
  seconds: number;
  plain: Buffer;
  streamed: Buffer;
}

export const MULTIPART_BOUNDARY = 'megaasrbench7f3a';
export const MULTIPART_TYPE = `multipart/form-data; boundary=${MULTIPART_BOUNDARY}`;

function multipart(name: string, audio: Buffer, fields: Record<string, string>): Buffer {
  const parts = Object.entries(fields).map(
    ([k, v]) => `--${MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`,
  );
  return Buffer.concat([
    Buffer.from(parts.join('')),
    Buffer.from(`--${MULTIPART_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\nContent-Type: audio/wav\r\n\r\n`),
    audio,
    Buffer.from(`\r\n--${MULTIPART_BOUNDARY}--\r\n`),
  ]);
}

/** The names of every *.wav in `dir`, sorted; a folder without any is an error. */
export function wavNames(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.toLowerCase().endsWith('.wav')).sort();
  } catch {
    throw new Error(`cannot read the clips folder ${dir}`);
  }
  if (names.length === 0) throw new Error(`no .wav clips in ${dir}`);
  return names;
}

/** Every *.wav in `dir`, sorted by name; a folder without readable WAV files is an error. */
export function loadClips(dir: string): BenchClip[] {
  return wavNames(dir).map((name) => {
    const audio = readFileSync(join(dir, name));
    const header = readWavHeader(audio);
    if (!header?.frames || header.sampleRate <= 0) throw new Error(`${join(dir, name)}: not a readable WAV file`);
    return {
      name: basename(name, '.wav'),
      seconds: header.frames / header.sampleRate,
      plain: multipart(name, audio, { model: 'mega-asr' }),
      streamed: multipart(name, audio, { model: 'mega-asr', stream: 'true' }),
    };
  });
}
