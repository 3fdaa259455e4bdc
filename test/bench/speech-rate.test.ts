import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { speechRate, SpeechRateError } from '../../bench/speech-rate.js';
import { logMel, melFrameCount } from '../../src/audio/logMel.js';
import { Tokenizer } from '../../src/asr/tokenizer.js';
import { writeAsrTokenizerFiles } from '../../tools/tokenizer-files.js';
import { tempDir } from '../support/transcode.js';
import { encodeWav } from '../support/wav-writer.js';

const tmp = tempDir('mega-asr-speech-rate-');
afterAll(() => tmp.remove());

let tokenizer: Tokenizer;
beforeAll(() => {
  writeAsrTokenizerFiles(tmp.path('tokenizer'), 'tokenizer.json');
  tokenizer = Tokenizer.fromModelDir(tmp.path('tokenizer'));
});

/** A silent mono WAV of `frames` samples at `sampleRate`. */
const wav = (frames: number, sampleRate: number) => encodeWav({ channels: [new Float32Array(frames)], sampleRate, format: 'pcm16' });

/** A clips folder: transcripts.jsonl with `lines`, and `files`. */
function clipsFolder(name: string, lines: string[] | undefined, files: Record<string, Uint8Array | string> = {}): string {
  const dir = tmp.path(name);
  mkdirSync(dir, { recursive: true });
  if (lines) writeFileSync(join(dir, 'transcripts.jsonl'), lines.join('\n'));
  for (const [file, bytes] of Object.entries(files)) writeFileSync(join(dir, file), bytes);
  return dir;
}

describe('speechRate', () => {
  it('gives the mean clip length, prompt and answer in the model tokens, and answer tokens per audio second', () => {
    const dir = clipsFolder(
      'three',
      [
        '{"file": "one.wav", "subset": "a", "text": "Hello, world."}',
        '{"file": "two-and-a-half.wav", "text": "yes"}',
        '{"file": "short.wav", "text": ""}',
        '',
      ],
      { 'one.wav': wav(16000, 16000), 'two-and-a-half.wav': wav(60000, 24000), 'short.wav': wav(3200, 16000) },
    );
    // Seconds: 1, 2.5 and 0.2. Mel frames at 16 kHz, one per 160 samples: 100; 250 (60000 samples at 24 kHz are
    // 40000 at 16 kHz); 50 (0.2 s is zero-padded to 0.5 s). Encoder rows, 13 per 100 frames and the tail through
    // three stride-2 convs (50 -> 25 -> 13 -> 7): 13, 26 + 7 = 33, 7. The prompt around them: <|im_start|> system \n,
    // <|im_end|> \n <|im_start|> user \n <|audio_start|>, then <|audio_end|> <|im_end|> \n <|im_start|> assistant \n:
    // 15 tokens. Answers: "language" " English" <asr_text>, the text (Hello , world .: 4; yes: 1; none), <|im_end|>.
    expect(speechRate(dir, tokenizer)).toEqual({
      clips: 3,
      audioSeconds: Number((3.7 / 3).toFixed(3)),
      promptTokens: Number((15 + (13 + 33 + 7) / 3).toFixed(3)),
      answerTokens: Number(((8 + 5 + 4) / 3).toFixed(3)),
      answerTokensPerAudioSecond: Number((17 / 3.7).toFixed(3)),
      source: dir,
    });
  });

  it('counts an answer as the tokenizer reads the whole turn written out', () => {
    const text = 'My sister is bringing dinner over later, so we do not need to cook tonight.';
    const dir = clipsFolder('one', [JSON.stringify({ file: 'a.wav', text })], { 'a.wav': wav(16000, 16000) });
    expect(speechRate(dir, tokenizer).answerTokens).toBe(tokenizer.encode(`language English<asr_text>${text}<|im_end|>`).length);
  });

  it('refuses a folder it cannot read with a one-line SpeechRateError naming what is wrong', () => {
    const cases: [string, RegExp][] = [
      [tmp.path('nowhere'), /^no clips folder .*nowhere$/],
      [clipsFolder('unlisted', undefined, { 'a.wav': wav(16000, 16000) }), /unlisted\/transcripts\.jsonl is missing/],
      [clipsFolder('empty', ['', '']), /empty\/transcripts\.jsonl lists no clips$/],
      [clipsFolder('not-json', ['{"file": "a.wav", "text": "x"}', 'a.wav hello']), /not-json\/transcripts\.jsonl:2: expected \{"file": "NAME\.wav", "text": "\.\.\."\}$/],
      [clipsFolder('no-text', ['{"file": "a.wav"}']), /no-text\/transcripts\.jsonl:1: expected/],
      [clipsFolder('absent', ['{"file": "a.wav", "text": "x"}']), /absent\/a\.wav: not a readable WAV file$/],
      [clipsFolder('not-wav', ['{"file": "a.wav", "text": "x"}'], { 'a.wav': 'RIFF but not really' }), /not-wav\/a\.wav: not a readable WAV file$/],
    ];
    for (const [dir, message] of cases) {
      expect(() => speechRate(dir, tokenizer)).toThrow(SpeechRateError);
      expect(() => speechRate(dir, tokenizer)).toThrow(message);
    }
  });
});

describe('melFrameCount: the mel frames speechRate counts a clip by', () => {
  it('equals the frames logMel computes, for clips shorter than 0.5 s, at a hop boundary and between two', () => {
    // 0.5 s (8000 samples) is the least; 160 samples a frame beyond it
    const expected: [number, number][] = [[0, 50], [1, 50], [7999, 50], [8000, 50], [8159, 50], [8160, 51], [16000, 100], [16159, 100], [40000, 250]];
    for (const [samples, frames] of expected) {
      expect(melFrameCount(samples)).toBe(frames);
      expect(logMel(new Float32Array(samples).fill(0.01)).nFrames).toBe(frames);
    }
  });
});
