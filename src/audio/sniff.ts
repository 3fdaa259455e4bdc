/**
 * Recognises an upload from its first bytes, never from its name or declared content type. Audio results
 * name the container (the ffmpeg demuxer is then forced from it: probing could pick a playlist or concat
 * demuxer that opens other files); recognised non-audio is named so the error can say what the file is.
 */

export type AudioContainer =
  | 'wav'
  | 'flac'
  | 'mp3'
  | 'aac'
  | 'ogg'
  | 'matroska'
  | 'mp4'
  | 'amr'
  | 'aiff'
  | 'caf'
  | 'mpeg-ps'
  | 'mpeg-ts'
  | 'avi';

export type SniffResult =
  | { kind: 'audio'; container: AudioContainer; /** what the header says is inside, when it says */ codec?: string; label: string }
  | { kind: 'not-audio'; /** e.g. "a PDF document" */ label: string }
  | { kind: 'unknown' };

const ascii = (b: Uint8Array, offset: number, length: number): string => {
  let s = '';
  for (let i = offset; i < offset + length && i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
};

const startsWith = (b: Uint8Array, magic: readonly number[], offset = 0): boolean =>
  b.length >= offset + magic.length && magic.every((x, i) => b[offset + i] === x);

const audio = (container: AudioContainer, label: string, codec?: string): SniffResult =>
  codec === undefined ? { kind: 'audio', container, label } : { kind: 'audio', container, codec, label };

const notAudio = (label: string): SniffResult => ({ kind: 'not-audio', label });

/** Bitrates (kbit/s) by [MPEG-1 ? 0 : 1][layer 1..3][index]; 0 = free format. */
const MPEG_BITRATES = [
  [
    [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
    [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
    [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
  ],
  [
    [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
  ],
];
const MPEG_RATES = [44100, 48000, 32000];

/** Length in bytes of the MPEG audio frame whose header is at `o` (0: free format), or undefined if not a valid header. */
function mpegFrameLength(b: Uint8Array, o: number): { length: number; layer: number } | undefined {
  if (o + 4 > b.length) return undefined;
  const h1 = b[o + 1]!;
  const h2 = b[o + 2]!;
  if (b[o] !== 0xff || (h1 & 0xe0) !== 0xe0) return undefined;
  const version = (h1 >> 3) & 3; // 0: MPEG-2.5, 1: reserved, 2: MPEG-2, 3: MPEG-1
  const layerBits = (h1 >> 1) & 3; // 0 is reserved (and is ADTS's)
  const bitrateIndex = h2 >> 4;
  const rateIndex = (h2 >> 2) & 3;
  if (version === 1 || layerBits === 0 || bitrateIndex === 15 || rateIndex === 3) return undefined;
  const layer = 4 - layerBits;
  const rate = MPEG_RATES[rateIndex]! / (version === 3 ? 1 : version === 2 ? 2 : 4);
  const kbps = MPEG_BITRATES[version === 3 ? 0 : 1]![layer - 1]![bitrateIndex]!;
  const padding = (h2 >> 1) & 1;
  if (kbps === 0) return { length: 0, layer };
  const length =
    layer === 1
      ? (Math.floor((12 * kbps * 1000) / rate) + padding) * 4
      : Math.floor(((layer === 3 && version !== 3 ? 72 : 144) * kbps * 1000) / rate) + padding;
  return { length, layer };
}

/** A valid MPEG audio frame header at `o`, followed by another one where the file is long enough to tell. */
function isMpegAudio(b: Uint8Array, o: number): number | undefined {
  const frame = mpegFrameLength(b, o);
  if (!frame) return undefined;
  const next = o + frame.length;
  if (frame.length > 0 && next + 4 <= b.length && !mpegFrameLength(b, next)) return undefined;
  return frame.layer;
}

const ADTS_RATES = 13;

/** An ADTS (raw AAC) header at `o`: 12-bit sync, layer 0, a valid rate index and frame length, and the next frame's sync. */
function isAdts(b: Uint8Array, o: number): boolean {
  if (o + 7 > b.length || b[o] !== 0xff || (b[o + 1]! & 0xf6) !== 0xf0) return false;
  if (((b[o + 2]! >> 2) & 0xf) >= ADTS_RATES) return false;
  const length = ((b[o + 3]! & 3) << 11) | (b[o + 4]! << 3) | (b[o + 5]! >> 5);
  if (length < 7) return false;
  const next = o + length;
  return next + 2 > b.length || (b[next] === 0xff && (b[next + 1]! & 0xf6) === 0xf0);
}

/** The codec of an Ogg stream, from its first packet (in the first page, after the segment table). */
function oggCodec(b: Uint8Array): string | undefined {
  const segments = b[26];
  if (segments === undefined) return undefined;
  const p = 27 + segments;
  if (ascii(b, p, 8) === 'OpusHead') return 'opus';
  if (ascii(b, p, 7) === '\x01vorbis') return 'vorbis';
  if (ascii(b, p, 5) === '\x7fFLAC') return 'flac';
  if (ascii(b, p, 8) === 'Speex   ') return 'speex';
  return undefined;
}

const OGG_LABELS: Record<string, string> = { opus: 'Ogg Opus', vorbis: 'Ogg Vorbis', flac: 'Ogg FLAC', speex: 'Ogg Speex' };

/** ISO-BMFF brands of still images (HEIF, AVIF): the same box structure as MP4, but no sound. */
const IMAGE_BRANDS = new Set(['heic', 'heix', 'heim', 'heis', 'hevc', 'hevx', 'mif1', 'msf1', 'avif', 'avis']);
const MP4_FIRST_BOXES = new Set(['moov', 'mdat', 'free', 'skip', 'wide', 'pnot']);

function isoBmff(b: Uint8Array): SniffResult | undefined {
  const size = b.length >= 8 ? new DataView(b.buffer, b.byteOffset, 8).getUint32(0) : 0;
  const box = ascii(b, 4, 4);
  if (box === 'ftyp' && size >= 8) {
    const brand = ascii(b, 8, 4);
    if (IMAGE_BRANDS.has(brand)) return notAudio('a HEIF/AVIF image');
    const label = brand.startsWith('3g') ? '3GP' : brand === 'qt  ' ? 'QuickTime (MOV)' : brand.startsWith('M4') ? 'M4A' : 'MP4';
    return audio('mp4', label);
  }
  // Files without ftyp (old QuickTime) start with one of these boxes; size 1 means a 64-bit size follows.
  if (MP4_FIRST_BOXES.has(box) && (size === 1 || size >= 8)) return audio('mp4', 'QuickTime (MOV)');
  return undefined;
}

/** Size of the ID3v2 tag at the start (header, syncsafe size, optional footer), or 0 without one. */
function id3Length(b: Uint8Array): number {
  if (b.length < 10 || ascii(b, 0, 3) !== 'ID3' || b[3]! > 4) return 0;
  const sizeBytes = [b[6]!, b[7]!, b[8]!, b[9]!];
  if (sizeBytes.some((x) => x >= 0x80)) return 0;
  const size = sizeBytes.reduce((n, x) => n * 128 + x, 0);
  return 10 + size + (b[5]! & 0x10 ? 10 : 0);
}

/** "BM", then a DIB header whose size (at 14) is one of the known ones. */
function isBmp(b: Uint8Array): boolean {
  return ascii(b, 0, 2) === 'BM' && b.length >= 26 && [12, 40, 52, 56, 64, 108, 124].includes(b[14]!) && b[15] === 0 && b[16] === 0 && b[17] === 0;
}

function isMpegTs(b: Uint8Array): boolean {
  if (b.length < 188 * 3) return b.length >= 188 && b[0] === 0x47 && b[188] === 0x47;
  return b[0] === 0x47 && b[188] === 0x47 && b[376] === 0x47;
}

/** Printable text (UTF-8 allowed) in the first bytes: HTML, XML, JSON, or text of some other kind. */
function textKind(b: Uint8Array): string | undefined {
  const head = b.subarray(0, 512);
  for (const x of head) {
    if (x < 0x09 || (x > 0x0d && x < 0x20) || x === 0x7f) return undefined;
  }
  const text = new TextDecoder('utf-8', { fatal: false }).decode(head).replace(/^\ufeff/, '').trimStart();
  const lower = text.slice(0, 64).toLowerCase();
  if (lower.startsWith('<!doctype html') || lower.startsWith('<html')) return 'an HTML document';
  if (lower.startsWith('<svg') || (lower.startsWith('<?xml') && text.includes('<svg'))) return 'an SVG image';
  if (lower.startsWith('<?xml') || lower.startsWith('<')) return 'an XML document';
  if (lower.startsWith('{') || lower.startsWith('[')) return 'JSON text';
  if (lower.startsWith('%!ps')) return 'a PostScript document';
  return 'text';
}

/** Magic numbers of common non-audio files, checked before the weak MPEG frame sync. */
const NOT_AUDIO: readonly [readonly number[] | string, string, number?][] = [
  [[0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'a PNG image'],
  [[0xff, 0xd8, 0xff], 'a JPEG image'],
  ['GIF87a', 'a GIF image'],
  ['GIF89a', 'a GIF image'],
  [[0x49, 0x49, 0x2a, 0x00], 'a TIFF image'],
  [[0x4d, 0x4d, 0x00, 0x2a], 'a TIFF image'],
  [[0x00, 0x00, 0x01, 0x00], 'an icon (ICO) image'],
  ['8BPS', 'a Photoshop image'],
  ['%PDF-', 'a PDF document'],
  [[0x50, 0x4b, 0x03, 0x04], 'a ZIP archive (or an Office/OpenDocument file)'],
  [[0x50, 0x4b, 0x05, 0x06], 'an empty ZIP archive'],
  [[0x1f, 0x8b], 'a gzip archive'],
  ['BZh', 'a bzip2 archive'],
  [[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], 'an xz archive'],
  [[0x28, 0xb5, 0x2f, 0xfd], 'a zstd archive'],
  [[0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c], 'a 7-Zip archive'],
  ['Rar!\x1a\x07', 'a RAR archive'],
  ['ustar', 'a tar archive', 257],
  [[0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1], 'an MS Office (OLE) document'],
  [[0x7f, 0x45, 0x4c, 0x46], 'an ELF executable'],
  ['MZ', 'a Windows executable'],
  [[0xcf, 0xfa, 0xed, 0xfe], 'a Mach-O executable'],
  [[0x00, 0x61, 0x73, 0x6d], 'a WebAssembly module'],
  ['SQLite format 3\0', 'an SQLite database'],
  ['MThd', 'a MIDI file (notes, not recorded sound)'],
  ['{\\rtf', 'an RTF document'],
];

function magic(b: Uint8Array, m: readonly number[] | string, offset = 0): boolean {
  return typeof m === 'string' ? ascii(b, offset, m.length) === m : startsWith(b, m, offset);
}

export function sniffFormat(b: Uint8Array): SniffResult {
  const fourCC = ascii(b, 0, 4);
  const form = ascii(b, 8, 4);
  if (fourCC === 'RIFF' || fourCC === 'RF64' || fourCC === 'BW64') {
    if (form === 'WAVE') return audio('wav', fourCC === 'RIFF' ? 'WAV' : `WAV (${fourCC})`);
    if (fourCC === 'RIFF' && form === 'AVI ') return audio('avi', 'AVI');
    if (fourCC === 'RIFF' && form === 'WEBP') return notAudio('a WebP image');
  }
  if (fourCC === 'fLaC') return audio('flac', 'FLAC', 'flac');
  if (fourCC === 'OggS') {
    const codec = oggCodec(b);
    return audio('ogg', codec ? OGG_LABELS[codec]! : 'Ogg', codec);
  }
  if (startsWith(b, [0x1a, 0x45, 0xdf, 0xa3])) return audio('matroska', 'WebM/Matroska');
  if (fourCC === 'FORM' && (form === 'AIFF' || form === 'AIFC')) return audio('aiff', form === 'AIFF' ? 'AIFF' : 'AIFF-C');
  if (fourCC === 'caff') return audio('caf', 'CAF');
  if (ascii(b, 0, 9) === '#!AMR-WB\n') return audio('amr', 'AMR-WB', 'amr_wb');
  if (ascii(b, 0, 6) === '#!AMR\n') return audio('amr', 'AMR', 'amr_nb');
  const bmff = isoBmff(b);
  if (bmff) return bmff;

  const id3 = id3Length(b);
  if (id3 > 0) {
    // ID3 tags also front FLAC and raw AAC files; what follows the tag decides.
    if (ascii(b, id3, 4) === 'fLaC') return audio('flac', 'FLAC', 'flac');
    if (isAdts(b, id3)) return audio('aac', 'AAC (ADTS)', 'aac');
    const layer = isMpegAudio(b, id3);
    return audio('mp3', layer === undefined || layer === 3 ? 'MP3' : `MPEG audio layer ${layer}`);
  }

  for (const [m, label, offset] of NOT_AUDIO) if (magic(b, m, offset)) return notAudio(label);
  if (startsWith(b, [0x00, 0x00, 0x01, 0xba])) return audio('mpeg-ps', 'MPEG program stream');
  if (isMpegTs(b)) return audio('mpeg-ts', 'MPEG transport stream');
  if (isAdts(b, 0)) return audio('aac', 'AAC (ADTS)', 'aac');
  const layer = isMpegAudio(b, 0);
  if (layer !== undefined) return audio('mp3', layer === 3 ? 'MP3' : `MPEG audio layer ${layer}`);
  if (isBmp(b)) return notAudio('a BMP image');
  const text = textKind(b);
  if (text !== undefined && b.length > 0) return notAudio(text);
  return { kind: 'unknown' };
}
