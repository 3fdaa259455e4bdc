import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { sniffFormat, type AudioContainer } from '../../src/audio/sniff.js';
import { mulberry32 } from '../../tools/random.js';
import { sharedPath } from '../support/shared.js';
import { allVariants, tempDir } from '../support/transcode.js';

const dir = tempDir();
afterAll(() => dir.remove());
const clip = sharedPath('fixtures', 'voices-in-the-wild', 'recording.wav');
const variants = allVariants(clip, dir);
const bytesOf = (name: string) => variants.find((v) => v.name === name)!.bytes;

const text = (s: string) => new TextEncoder().encode(s);
const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((offset, p) => (out.set(p, offset), offset + p.length), 0);
  return out;
};

const EXPECTED: Record<string, { container: AudioContainer; codec?: string; label: string }> = {
  'wav-pcm16': { container: 'wav', label: 'WAV' },
  'wav-pcm24': { container: 'wav', label: 'WAV' },
  'wav-float32': { container: 'wav', label: 'WAV' },
  'wav-pcm8': { container: 'wav', label: 'WAV' },
  'wav-rf64': { container: 'wav', label: 'WAV (RF64)' },
  'wav-mulaw': { container: 'wav', label: 'WAV' },
  'wav-adpcm': { container: 'wav', label: 'WAV' },
  flac: { container: 'flac', codec: 'flac', label: 'FLAC' },
  aiff: { container: 'aiff', label: 'AIFF' },
  caf: { container: 'caf', label: 'CAF' },
  'mkv-flac': { container: 'matroska', label: 'WebM/Matroska' },
  'ogg-flac': { container: 'ogg', codec: 'flac', label: 'Ogg FLAC' },
  mp3: { container: 'mp3', label: 'MP3' },
  mpga: { container: 'mp3', label: 'MPEG audio layer 2' },
  m4a: { container: 'mp4', label: 'M4A' },
  'mp4-not-faststart': { container: 'mp4', label: 'MP4' },
  'mp4-video': { container: 'mp4', label: 'MP4' },
  '3gp': { container: 'mp4', label: '3GP' },
  'aac-adts': { container: 'aac', codec: 'aac', label: 'AAC (ADTS)' },
  'ogg-vorbis': { container: 'ogg', codec: 'vorbis', label: 'Ogg Vorbis' },
  'ogg-opus': { container: 'ogg', codec: 'opus', label: 'Ogg Opus' },
  'webm-opus': { container: 'matroska', label: 'WebM/Matroska' },
  'mpeg-ps-video': { container: 'mpeg-ps', label: 'MPEG program stream' },
  'mpeg-ts-video': { container: 'mpeg-ts', label: 'MPEG transport stream' },
  'avi-video': { container: 'avi', label: 'AVI' },
  'amr-nb': { container: 'amr', codec: 'amr_nb', label: 'AMR' },
  'amr-wb': { container: 'amr', codec: 'amr_wb', label: 'AMR-WB' },
};

describe('sniffFormat: audio, from the bytes alone', () => {
  it('covers every generated variant', () => {
    expect(Object.keys(EXPECTED).sort()).toEqual(variants.map((v) => v.name).sort());
  });

  for (const [name, expected] of Object.entries(EXPECTED)) {
    it(name, () => {
      expect(sniffFormat(bytesOf(name))).toEqual({ kind: 'audio', ...expected });
    });
  }

  it('BW64 and AIFF-C headers', () => {
    const wav = bytesOf('wav-pcm16').slice();
    wav.set(text('BW64'), 0);
    expect(sniffFormat(wav)).toMatchObject({ container: 'wav', label: 'WAV (BW64)' });
    expect(sniffFormat(concat(text('FORM\0\0\0\x20AIFCFVER'), new Uint8Array(24)))).toMatchObject({ container: 'aiff', label: 'AIFF-C' });
  });

  it('QuickTime files without ftyp, and M4A brands', () => {
    expect(sniffFormat(concat(new Uint8Array([0, 0, 0, 8]), text('wide'), new Uint8Array(16)))).toMatchObject({ container: 'mp4' });
    expect(sniffFormat(concat(new Uint8Array([0, 0, 0, 32]), text('moov'), new Uint8Array(24)))).toMatchObject({ container: 'mp4' });
    expect(sniffFormat(concat(new Uint8Array([0, 0, 0, 24]), text('ftypM4A \0\0\0\0'), new Uint8Array(8)))).toMatchObject({ label: 'M4A' });
  });

  it('FLAC, ADTS and MP3 after an ID3v2 tag', () => {
    const id3 = concat(text('ID3\x04\x00\x00'), new Uint8Array([0, 0, 0, 10]), new Uint8Array(10));
    expect(sniffFormat(concat(id3, bytesOf('flac')))).toMatchObject({ container: 'flac' });
    expect(sniffFormat(concat(id3, bytesOf('aac-adts')))).toMatchObject({ container: 'aac' });
    expect(sniffFormat(concat(id3, bytesOf('mpga')))).toMatchObject({ container: 'mp3', label: 'MPEG audio layer 2' });
    expect(sniffFormat(concat(id3, text('anything')))).toMatchObject({ container: 'mp3', label: 'MP3' });
  });

  it('an MPEG frame sync needs a valid header and, where it fits, a second frame', () => {
    const mp3 = bytesOf('mp3');
    // MP3 written by ffmpeg starts with an ID3 tag: find the first frame.
    const first = mp3.findIndex((x, i) => x === 0xff && (mp3[i + 1]! & 0xe0) === 0xe0);
    expect(sniffFormat(mp3.subarray(first))).toMatchObject({ container: 'mp3', label: 'MP3' });
    const broken = mp3.slice(first, first + 2000);
    broken.fill(0, 4, 2000); // the next frame's sync is gone
    expect(sniffFormat(broken)).toEqual({ kind: 'unknown' });
    expect(sniffFormat(new Uint8Array([0xff, 0xfb, 0xf0, 0x00, 1, 2, 3]))).toEqual({ kind: 'unknown' }); // bitrate index 15
    expect(sniffFormat(new Uint8Array([0xff, 0xf1, 0x50, 0x80, 0x00, 0x1f, 0xfc, 1, 2]))).toEqual({ kind: 'unknown' }); // ADTS sync, frame length 0
  });
});

describe('sniffFormat: recognised non-audio', () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ['PNG', concat(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), new Uint8Array(64)), /PNG image/],
    ['JPEG', concat(new Uint8Array([0xff, 0xd8, 0xff, 0xe0]), new Uint8Array(64)), /JPEG image/],
    ['GIF', concat(text('GIF89a'), new Uint8Array(64)), /GIF image/],
    ['WebP', concat(text('RIFF\x40\0\0\0WEBPVP8 '), new Uint8Array(64)), /WebP image/],
    ['HEIC', concat(new Uint8Array([0, 0, 0, 24]), text('ftypheic\0\0\0\0mif1heic'), new Uint8Array(32)), /HEIF\/AVIF image/],
    ['BMP', concat(text('BM'), new Uint8Array([0x46, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0, 40, 0, 0, 0]), new Uint8Array(64)), /BMP image/],
    ['PDF', text('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n'), /PDF document/],
    ['ZIP', concat(new Uint8Array([0x50, 0x4b, 0x03, 0x04]), new Uint8Array(64)), /ZIP archive/],
    ['gzip', concat(new Uint8Array([0x1f, 0x8b, 0x08, 0x00]), new Uint8Array(64)), /gzip archive/],
    ['ELF', concat(new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), new Uint8Array(64)), /ELF executable/],
    ['MIDI', concat(text('MThd\0\0\0\x06'), new Uint8Array(64)), /MIDI/],
    ['HTML', text('<!DOCTYPE html>\n<html><body>not audio</body></html>'), /HTML document/],
    ['XML', text('<?xml version="1.0"?><root/>'), /XML document/],
    ['SVG', text('<svg xmlns="http://www.w3.org/2000/svg"></svg>'), /SVG image/],
    ['JSON', text('  {"text": "hello"}'), /JSON text/],
    ['an HLS playlist', text('#EXTM3U\n#EXT-X-VERSION:3\nfile:///etc/passwd\n'), /^text$/],
    ['an ffconcat script', text('ffconcat version 1.0\nfile /etc/passwd\n'), /^text$/],
  ];
  for (const [name, bytes, label] of cases) {
    it(name, () => {
      const r = sniffFormat(bytes);
      expect(r.kind).toBe('not-audio');
      expect(r.kind === 'not-audio' && r.label).toMatch(label);
    });
  }
});

describe('sniffFormat: unknown', () => {
  it('empty input and random bytes', () => {
    expect(sniffFormat(new Uint8Array(0))).toEqual({ kind: 'unknown' });
    const rand = mulberry32(3);
    let audio = 0;
    for (let trial = 0; trial < 2000; trial++) {
      const bytes = Uint8Array.from({ length: 256 }, () => Math.floor(rand() * 256));
      if (sniffFormat(bytes).kind === 'audio') audio++;
    }
    // A valid MPEG/ADTS header plus the next frame's sync by chance: about one in 10^5.
    expect(audio).toBeLessThanOrEqual(1);
  });

  it('a RIFF file that is neither WAVE nor AVI, and a bare header of a real WAV', () => {
    expect(sniffFormat(concat(text('RIFF\x40\0\0\0RMIDdata'), new Uint8Array(64)))).toEqual({ kind: 'unknown' });
    expect(sniffFormat(readFileSync(clip).subarray(0, 12))).toMatchObject({ kind: 'audio', container: 'wav' });
  });
});
