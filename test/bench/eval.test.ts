import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClipResult } from '../../bench/eval.js';
import { alignWords, describeDifferences, normalizeWords, scoreClip, scoreCorpus, type CorpusScore } from '../../bench/wer.js';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { megaAsr } from '../support/cli.js';
import { CLIP_NAMES, fixtureModel } from '../support/fixture-models.js';
import { benchScript } from '../support/cli.js';
import { sharedPath } from '../support/shared.js';
import { tempDir } from '../support/transcode.js';

describe('normalisation (the card: lowercase, no punctuation, collapsed whitespace)', () => {
  it('lowercases, strips punctuation and collapses whitespace', () => {
    expect(normalizeWords('  Hello,   World!\n\tHow ARE you?  ')).toEqual(['hello', 'world', 'how', 'are', 'you']);
  });

  it('keeps apostrophes inside words only, typographic ones included', () => {
    expect(normalizeWords("Don't")).toEqual(["don't"]);
    expect(normalizeWords('Don\u2019t')).toEqual(["don't"]);
    expect(normalizeWords("'Quoted' dogs' rock'n'roll")).toEqual(['quoted', 'dogs', "rock'n'roll"]);
  });

  it('splits on hyphens and dashes', () => {
    expect(normalizeWords('A well-known fact\u2014isn\u2019t it?')).toEqual(['a', 'well', 'known', 'fact', "isn't", 'it']);
  });

  it('keeps letters with accents, other scripts and digits', () => {
    expect(normalizeWords('Ça va? SÜSS, naïve café. ÉCOLE')).toEqual(['ça', 'va', 'süss', 'naïve', 'café', 'école']);
    expect(normalizeWords('नमस्ते दुनिया।')).toEqual(['नमस्ते', 'दुनिया']);
    expect(normalizeWords('Room 101, floor 3.')).toEqual(['room', '101', 'floor', '3']);
  });

  it('leaves no words in punctuation alone', () => {
    expect(normalizeWords(' ... — !? ')).toEqual([]);
  });
});

describe('word error rate', () => {
  it('counts a substitution', () => {
    const s = scoreClip('the cat sat', 'the bat sat');
    expect([s.substitutions, s.deletions, s.insertions, s.refWords]).toEqual([1, 0, 0, 3]);
    expect(s.wer).toBeCloseTo(1 / 3, 12);
    expect(s.agreement).toBeCloseTo(2 / 3, 12);
    expect(describeDifferences(s.alignment)).toEqual(['cat→bat']);
  });

  it('counts an insertion', () => {
    const s = scoreClip('the cat sat', 'the cat sat down');
    expect([s.substitutions, s.deletions, s.insertions]).toEqual([0, 0, 1]);
    expect(s.wer).toBeCloseTo(1 / 3, 12);
    expect(describeDifferences(s.alignment)).toEqual(['+down']);
  });

  it('counts a deletion', () => {
    const s = scoreClip('the cat sat down', 'the sat down');
    expect([s.substitutions, s.deletions, s.insertions]).toEqual([0, 1, 0]);
    expect(s.wer).toBe(0.25);
    expect(describeDifferences(s.alignment)).toEqual(['-cat']);
    expect(s.alignment.map((x) => x.op)).toEqual(['match', 'del', 'match', 'match']);
  });

  it('ignores case and punctuation, so the same words score 0', () => {
    const s = scoreClip("Hello, world. Don't stop!", "hello world don't stop");
    expect(s.wer).toBe(0);
    expect(s.agreement).toBe(1);
    expect(describeDifferences(s.alignment)).toEqual([]);
  });

  it('an empty hypothesis deletes every reference word', () => {
    const s = scoreClip('a b c', '');
    expect([s.substitutions, s.deletions, s.insertions]).toEqual([0, 3, 0]);
    expect(s.wer).toBe(1);
    expect(s.agreement).toBe(0);
    expect(describeDifferences(s.alignment)).toEqual(['-a', '-b', '-c']);
  });

  it('an empty reference scores 0 against nothing and is unbounded against words', () => {
    expect(scoreClip('', '').wer).toBe(0);
    expect(scoreClip('...', '').refWords).toBe(0);
    const s = scoreClip('', 'x y');
    expect(s.insertions).toBe(2);
    expect(s.wer).toBe(Infinity);
  });

  it('reports agreement below 0 as it is', () => {
    // yes→no, +no, +no: 3 edits over 1 reference word
    const s = scoreClip('Yes.', 'no no no');
    expect([s.substitutions, s.deletions, s.insertions]).toEqual([1, 0, 2]);
    expect(s.wer).toBe(3);
    expect(s.agreement).toBe(-2);
  });

  it('takes the cheapest alignment, preferring substitutions on ties', () => {
    // a b c d e / a x c e f: 3 edits either way (b→x, -d, +f or b→x, d→e, e→f); ties resolve to substitutions
    const steps = alignWords(['a', 'b', 'c', 'd', 'e'], ['a', 'x', 'c', 'e', 'f']);
    expect(describeDifferences(steps)).toEqual(['b→x', 'd→e', 'e→f']);
    // no tie: a b c d / a c d is one deletion, never two substitutions and a deletion
    expect(describeDifferences(alignWords(['a', 'b', 'c', 'd'], ['a', 'c', 'd']))).toEqual(['-b']);
  });

  it('aggregates a corpus pooled over words and averaged over clips', () => {
    const clips = [scoreClip('the cat sat', 'the bat sat'), scoreClip('yes', 'no no no')];
    const c = scoreCorpus(clips);
    // (1 + 3) edits over (3 + 1) words; mean of 2/3 and -2
    expect([c.clips, c.edits, c.refWords, c.wer, c.agreement]).toEqual([2, 4, 4, 1, 0]);
    expect(c.meanAgreement).toBeCloseTo(-2 / 3, 12);
  });
});


/** `npm run eval -- ARGS` as a child process, on the CPU. */
const evalCommand = (args: string[]) => benchScript('eval', args, { timeoutMs: 120_000, env: { ORT_DISABLE_TELEMETRY: '1', ASR_DEVICE: 'cpu' } });

describe('npm run eval on the generated model and the voices-in-the-wild clips', () => {
  const clips = sharedPath('fixtures', 'voices-in-the-wild');
  const references = sharedPath('fixtures', 'voices-in-the-wild', 'transcripts.jsonl');
  const dir = tempDir('mega-asr-eval-');
  let modelDir: string;
  beforeAll(() => {
    modelDir = fixtureModel('default');
  });
  afterAll(() => dir.remove());

  it('transcribes every clip as mega-asr transcribe does and reports consistent scores', async () => {
    const out = dir.path('eval.json');
    const r = await evalCommand(['--model-dir', modelDir, '--clips', clips, '--references', references, '--language', 'English', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const result = JSON.parse(readFileSync(out, 'utf8')) as { language: string; clips: ClipResult[]; overall: CorpusScore };
    expect(result.language).toBe('English');
    expect(result.clips.map((c) => c.file).sort()).toEqual(CLIP_NAMES.map((n) => `${n}.wav`).sort());

    const refs = new Map(
      readFileSync(references, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { file: string; text: string })
        .map((l) => [l.file, l.text]),
    );
    for (const clip of result.clips) {
      expect(clip.reference).toBe(refs.get(clip.file));
      // the generated model can only say one of its sentences
      expect(FIXTURE_SENTENCES).toContain(clip.hypothesis);
      expect(clip.languages).toEqual(['English']);
      expect(clip.refWords).toBeGreaterThan(0);
      expect(clip.edits).toBe(clip.substitutions + clip.deletions + clip.insertions);
      expect(clip.wer).toBeCloseTo(clip.edits / clip.refWords, 12);
      expect(clip.agreement).toBeCloseTo(1 - clip.wer, 12);
      // one listed difference per edit, of the edit's kind (normalised words hold no arrow and start with no sign)
      expect(clip.differences.filter((d) => d.includes('→'))).toHaveLength(clip.substitutions);
      expect(clip.differences.filter((d) => d.startsWith('-'))).toHaveLength(clip.deletions);
      expect(clip.differences.filter((d) => d.startsWith('+'))).toHaveLength(clip.insertions);
      expect(clip.differences).toHaveLength(clip.edits);
      // the generated model's sentences are not the references: most words differ
      expect(clip.wer).toBeGreaterThan(0.5);
    }

    // one clip through the real CLI: the eval transcribes as mega-asr transcribe does
    const first = result.clips[0]!;
    const cli = await megaAsr(['transcribe', join(clips, first.file), '--model-dir', modelDir, '--language', 'English', '--device', 'cpu', '--json']);
    expect(cli.code).toBe(0);
    const expected = JSON.parse(cli.stdout) as { text: string; languages: string[] };
    expect(first.hypothesis).toBe(expected.text);
    expect(first.languages).toEqual(expected.languages);

    // the overall numbers from the per-clip fields: pooled over words, and averaged over clips
    const edits = result.clips.reduce((n, c) => n + c.substitutions + c.deletions + c.insertions, 0);
    const words = result.clips.reduce((n, c) => n + c.refWords, 0);
    const meanAgreement = result.clips.reduce((n, c) => n + c.agreement, 0) / result.clips.length;
    expect(result.overall.clips).toBe(CLIP_NAMES.length);
    expect(result.overall.edits).toBe(edits);
    expect(result.overall.refWords).toBe(words);
    expect(result.overall.wer).toBeCloseTo(edits / words, 12);
    expect(result.overall.agreement).toBeCloseTo(1 - edits / words, 12);
    expect(result.overall.meanAgreement).toBeCloseTo(meanAgreement, 12);

    // the Markdown on stdout: a row per clip and both overall numbers
    for (const c of result.clips) expect(r.stdout).toContain(`| ${c.file} | ${c.refWords} | ${c.substitutions}/${c.deletions}/${c.insertions} |`);
    expect(r.stdout).toContain(`corpus WER (all edits / all reference words): ${(100 * edits / words).toFixed(1)} % (${edits}/${words})`);
    expect(r.stdout).toContain(`mean of per-clip agreements (the card's "agreement" most likely): ${(100 * meanAgreement).toFixed(1)} %`);
    console.log(r.stdout);
  });

  it('exits 2 with the usage for missing arguments and unknown languages', async () => {
    const missing = await evalCommand(['--model-dir', modelDir, '--clips', clips]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^eval: --model-dir, --clips and --references are required\nusage: npm run eval/);
    const language = await evalCommand(['--model-dir', modelDir, '--clips', clips, '--references', references, '--language', 'Klingon']);
    expect(language.code).toBe(2);
    expect(language.stderr).toContain('eval: unsupported language "Klingon"');
  });

  it('exits 1 with one line for a bad references file or a missing clip', async () => {
    const bad = dir.path('bad.jsonl');
    writeFileSync(bad, '{"file": "noise.wav", "text": "fine"}\n{"file": "echo.wav"}\n');
    const r = await evalCommand(['--model-dir', modelDir, '--clips', clips, '--references', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`eval: ${bad}:2: expected {"file": "...", "text": "..."}\n`);

    const empty = dir.path('empty.jsonl');
    writeFileSync(empty, '{"file": "noise.wav", "text": " ... "}\n');
    const e = await evalCommand(['--model-dir', modelDir, '--clips', clips, '--references', empty]);
    expect(e.code).toBe(1);
    expect(e.stderr).toBe(`eval: ${empty}:1: the reference text has no words\n`);

    const gone = dir.path('gone.jsonl');
    writeFileSync(gone, '{"file": "noise.wav", "text": "fine"}\n{"file": "nowhere.wav", "text": "lost"}\n');
    const g = await evalCommand(['--model-dir', modelDir, '--clips', clips, '--references', gone]);
    expect(g.code).toBe(1);
    expect(g.stderr.trim().split('\n')).toHaveLength(1);
    expect(g.stderr).toMatch(/^eval: nowhere\.wav: ENOENT/);
  });
});
