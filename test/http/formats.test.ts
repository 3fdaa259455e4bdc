import { deflateSync } from 'node:zlib';
import type {
  TranscriptionSegment,
  TranscriptionTextDeltaEvent,
  TranscriptionTextDoneEvent,
} from 'openai/resources/audio/transcriptions';
import { describe, expect, it } from 'vitest';
import type { Segment, Transcription } from '../../src/pool/result.js';
import {
  SSE_DONE,
  compressionRatio,
  deltaEvent,
  doneEvent,
  parseResponseFormat,
  renderTranscription,
  sseEvent,
  usageSeconds,
  type ResponseFormat,
  type VerboseSegment,
} from '../../src/http/formats.js';

function result(over: Partial<Transcription> = {}): Transcription {
  return {
    text: '',
    languages: [],
    duration: 0,
    segments: [],
    truncated: false,
    cancelled: false,
    usage: { promptTokens: 0, audioTokens: 0, generatedTokens: 0 },
    timings: { featuresMs: 0, encoderMs: 0, prefillMs: 0, stepsMs: 0, steps: 0, stepHostMs: 0, stepRows: 0 },
    ...over,
  };
}

function segment(start: number, end: number, text: string, tokens: number[] = []): Segment {
  return { start, end, text, language: text ? 'English' : '', tokens, truncated: false };
}

/** Three chunks: speech, silence (no text), and speech past the one-hour mark. */
const RESULT = result({
  text: 'Hello there. 你好，世界。',
  languages: ['English', 'Chinese'],
  duration: 3625.47,
  segments: [
    segment(0, 29.9996, 'Hello there.', [9707, 1052, 13]),
    segment(29.9996, 59.5, ''),
    { ...segment(3599.9876, 3625.47, '你好，世界。', [108386, 3837, 99489, 1773]), language: 'Chinese' },
  ],
  usage: { promptTokens: 520, audioTokens: 468, generatedTokens: 7 },
});

/** Whisper's formula, written out here: len(text.encode()) / len(zlib.compress(text.encode())). */
const whisperRatio = (text: string) => Buffer.byteLength(text) / deflateSync(Buffer.from(text)).length;

const render = (r: Transcription, f: ResponseFormat) => renderTranscription(r, f);

describe('parseResponseFormat', () => {
  it.each(['json', 'text', 'srt', 'vtt', 'verbose_json'] as const)('accepts %s', (f) => {
    expect(parseResponseFormat(f)).toBe(f);
  });

  it('defaults to json when absent', () => {
    expect(parseResponseFormat(undefined)).toBe('json');
  });

  it.each(['', 'JSON', ' json', 'diarized_json', 'xml', 'verbose-json'])('rejects %j', (f) => {
    expect(parseResponseFormat(f)).toBeUndefined();
  });
});

describe('usageSeconds', () => {
  it.each<[number, number]>([
    [8.47, 9],
    [9, 9],
    [9.0001, 10],
    [0.05, 1],
    [1e-6, 1],
    [0, 0],
    [3625.47, 3626],
  ])('%d s bills %d', (duration, seconds) => {
    expect(usageSeconds(duration)).toBe(seconds);
  });
});

describe('compressionRatio', () => {
  it('is 0 for empty text', () => {
    expect(compressionRatio('')).toBe(0);
  });

  it('is well above 2 for a repetition loop', () => {
    expect(compressionRatio('na '.repeat(40))).toBeGreaterThan(2.4);
    expect(compressionRatio('我们'.repeat(60))).toBeGreaterThan(2.4);
  });

  it('is near 1 for a short normal sentence', () => {
    const r = compressionRatio('The quick brown fox jumps over the lazy dog, and then it runs away into the forest.');
    expect(r).toBeGreaterThan(0.8);
    expect(r).toBeLessThan(1.3);
  });

  it('counts UTF-8 bytes, not UTF-16 units', () => {
    const text = '你好，世界。';
    expect(compressionRatio(text)).toBe(whisperRatio(text));
    expect(Buffer.byteLength(text)).toBe(18);
  });
});

describe('renderTranscription: json', () => {
  it('is text plus duration usage, rounded up', () => {
    expect(render(RESULT, 'json')).toEqual({
      contentType: 'application/json; charset=utf-8',
      body: '{"text":"Hello there. 你好，世界。","usage":{"type":"duration","seconds":3626}}',
    });
  });

  it('bills 8.47 s as 9 s (OpenAI example)', () => {
    const body = JSON.parse(render(result({ text: 'Hi.', duration: 8.47 }), 'json').body);
    expect(body).toEqual({ text: 'Hi.', usage: { type: 'duration', seconds: 9 } });
    expect(Number.isInteger(body.usage.seconds)).toBe(true);
  });

  it('has the text and usage keys only', () => {
    expect(Object.keys(JSON.parse(render(RESULT, 'json').body))).toEqual(['text', 'usage']);
  });
});

describe('renderTranscription: text', () => {
  it('is the text with a trailing newline, as plain text', () => {
    expect(render(RESULT, 'text')).toEqual({
      contentType: 'text/plain; charset=utf-8',
      body: 'Hello there. 你好，世界。\n',
    });
  });

  it('is a single newline when nothing was said', () => {
    expect(render(result({ duration: 2 }), 'text').body).toBe('\n');
  });
});

describe('renderTranscription: verbose_json', () => {
  const expected = {
    task: 'transcribe',
    language: 'english', // one language, as OpenAI reports: the one with the most text
    duration: 3625.47,
    text: 'Hello there. 你好，世界。',
    segments: [
      {
        id: 0,
        seek: 0,
        start: 0,
        end: 29.9996,
        text: 'Hello there.',
        tokens: [9707, 1052, 13],
        temperature: 0,
        avg_logprob: 0,
        compression_ratio: whisperRatio('Hello there.'),
        no_speech_prob: 0,
      },
      {
        id: 1,
        seek: 359999,
        start: 3599.9876,
        end: 3625.47,
        text: '你好，世界。',
        tokens: [108386, 3837, 99489, 1773],
        temperature: 0,
        avg_logprob: 0,
        compression_ratio: whisperRatio('你好，世界。'),
        no_speech_prob: 0,
      },
    ],
    usage: { type: 'duration', seconds: 3626 },
  };

  it('renders the exact body, leaving out the empty segment and numbering ids from 0', () => {
    const out = render(RESULT, 'verbose_json');
    expect(out.contentType).toBe('application/json; charset=utf-8');
    expect(out.body).toBe(JSON.stringify(expected));
  });

  it('has OpenAI key order at the top level and exactly the TranscriptionSegment keys', () => {
    const body = JSON.parse(render(RESULT, 'verbose_json').body);
    expect(Object.keys(body)).toEqual(['task', 'language', 'duration', 'text', 'segments', 'usage']);
    for (const s of body.segments) {
      expect(Object.keys(s)).toEqual([
        'id', 'seek', 'start', 'end', 'text', 'tokens', 'temperature', 'avg_logprob', 'compression_ratio', 'no_speech_prob',
      ]);
      expect(Number.isInteger(s.id) && Number.isInteger(s.seek)).toBe(true);
      expect(s.tokens.every(Number.isInteger)).toBe(true);
    }
  });

  it('gives duration as a number and language as a lowercase name', () => {
    const body = JSON.parse(render(result({ text: 'Hi.', languages: ['English'], duration: 8.47 }), 'verbose_json').body);
    expect(body.duration).toBe(8.47);
    expect(typeof body.duration).toBe('number');
    expect(body.language).toBe('english');
    expect(body.usage).toEqual({ type: 'duration', seconds: 9 });
  });

  it('flags a repetition loop through compression_ratio', () => {
    const loop = 'na '.repeat(40);
    const body = JSON.parse(render(result({ text: loop, duration: 5, segments: [segment(0, 5, loop)] }), 'verbose_json').body);
    expect(body.segments[0].compression_ratio).toBeGreaterThan(2.4);
  });

  it('reports the language that carries the most text when chunks differ', () => {
    const mixed = result({
      languages: ['English', 'Chinese'],
      duration: 20,
      segments: [segment(0, 10, 'Hi.'), { ...segment(10, 20, '今天天气很好，我们去公园散步吧。'), language: 'Chinese' }],
    });
    expect(JSON.parse(render(mixed, 'verbose_json').body).language).toBe('chinese');
  });

  it('renders no speech as an empty language and no segments', () => {
    expect(render(result({ duration: 3, segments: [segment(0, 3, ''), segment(3, 4, '  ')] }), 'verbose_json').body).toBe(
      '{"task":"transcribe","language":"","duration":3,"text":"","segments":[],"usage":{"type":"duration","seconds":3}}',
    );
  });
});

describe('renderTranscription: srt', () => {
  it('renders numbered cues with comma milliseconds, hours past 1 and the empty segment left out', () => {
    expect(render(RESULT, 'srt')).toEqual({
      contentType: 'text/plain; charset=utf-8',
      body:
        '1\n00:00:00,000 --> 00:00:30,000\nHello there.\n\n' +
        '2\n00:59:59,988 --> 01:00:25,470\n你好，世界。\n\n',
    });
  });

  it('is empty when nothing was said', () => {
    expect(render(result({ duration: 3, segments: [segment(0, 3, '')] }), 'srt').body).toBe('');
  });

  it('rounds times to the millisecond across minute and hour boundaries', () => {
    const r = result({ duration: 40000, segments: [segment(59.9995, 3599.9995, 'a'), segment(36000.0004, 39599.001, 'b')] });
    expect(render(r, 'srt').body).toBe(
      '1\n00:01:00,000 --> 01:00:00,000\na\n\n2\n10:00:00,000 --> 10:59:59,001\nb\n\n',
    );
  });
});

describe('renderTranscription: vtt', () => {
  it('renders a WEBVTT header and cues with dot milliseconds and hours always present', () => {
    expect(render(RESULT, 'vtt')).toEqual({
      contentType: 'text/vtt; charset=utf-8',
      body:
        'WEBVTT\n\n' +
        '00:00:00.000 --> 00:00:30.000\nHello there.\n\n' +
        '00:59:59.988 --> 01:00:25.470\n你好，世界。\n\n',
    });
  });

  it('is just the header when nothing was said', () => {
    expect(render(result({ duration: 3, segments: [segment(0, 3, '')] }), 'vtt').body).toBe('WEBVTT\n\n');
  });
});

describe('cue text that could break srt/vtt', () => {
  const hostile = result({
    text: 'x',
    duration: 10,
    segments: [
      segment(0, 4, ' Line one.\n\n\nLine two --> three ---> four\r\n  \r\nfive & <i>six</i> '),
      segment(4, 10, 'after'),
    ],
  });

  it('srt: collapses blank lines, trims, and turns --> into ->', () => {
    expect(render(hostile, 'srt').body).toBe(
      '1\n00:00:00,000 --> 00:00:04,000\nLine one.\nLine two -> three -> four\nfive & <i>six</i>\n\n' +
        '2\n00:00:04,000 --> 00:00:10,000\nafter\n\n',
    );
  });

  it('vtt: the same, with &, < and > escaped so players show them as text', () => {
    expect(render(hostile, 'vtt').body).toBe(
      'WEBVTT\n\n' +
        '00:00:00.000 --> 00:00:04.000\nLine one.\nLine two -&gt; three -&gt; four\nfive &amp; &lt;i&gt;six&lt;/i&gt;\n\n' +
        '00:00:04.000 --> 00:00:10.000\nafter\n\n',
    );
  });

  it('keeps one timing line per cue when the body is split at blank lines', () => {
    const srtCues = render(hostile, 'srt').body.trimEnd().split('\n\n');
    expect(srtCues).toHaveLength(2);
    for (const cue of srtCues) expect(cue.split('\n').filter((l) => l.includes('-->'))).toHaveLength(1);
    const vttBlocks = render(hostile, 'vtt').body.trimEnd().split('\n\n');
    expect(vttBlocks).toHaveLength(3);
    for (const cue of vttBlocks.slice(1)) expect(cue.split('\n').filter((l) => l.includes('-->'))).toHaveLength(1);
  });
});

describe('SSE', () => {
  it('frames one JSON payload per data line, ending in a blank line', () => {
    expect(sseEvent({ a: 1 })).toBe('data: {"a":1}\n\n');
    expect(SSE_DONE).toBe('data: [DONE]\n\n');
  });

  it('keeps a delta with newlines on one data line', () => {
    expect(sseEvent(deltaEvent('Hi\n\nthere'))).toBe('data: {"type":"transcript.text.delta","delta":"Hi\\n\\nthere"}\n\n');
  });

  it('ends with a done event carrying token usage, input split into text and audio', () => {
    expect(sseEvent(doneEvent(RESULT))).toBe(
      'data: {"type":"transcript.text.done","text":"Hello there. 你好，世界。",' +
        '"usage":{"type":"tokens","input_tokens":520,"output_tokens":7,"total_tokens":527,' +
        '"input_token_details":{"text_tokens":52,"audio_tokens":468}}}\n\n',
    );
  });
});

describe('type compatibility with the openai SDK', () => {
  it('produces values the SDK types accept (checked by tsc)', () => {
    const segments: TranscriptionSegment[] = (JSON.parse(render(RESULT, 'verbose_json').body) as { segments: VerboseSegment[] }).segments;
    const delta: TranscriptionTextDeltaEvent = deltaEvent('a');
    const done: TranscriptionTextDoneEvent = doneEvent(RESULT);
    expect([segments.length, delta.delta, done.text]).toEqual([2, 'a', RESULT.text]);
  });
});
