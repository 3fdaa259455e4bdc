/**
 * Accuracy next to speed: transcribes each clip of a references file in-process, exactly as `mega-asr transcribe`
 * does (decodeUpload, AsrEngine.load and transcribe with the settings from the environment), and scores it with
 * the model card's "agreement" (1 - WER after lowercasing and stripping punctuation).
 *
 *   npm run eval -- --model-dir DIR --clips DIR --references FILE.jsonl [--language English] [--out FILE]
 *
 * The references file has one JSON object a line: {"file": "noise.wav", "subset": "...", "text": "..."}.
 * Prints a Markdown table; --out also writes the whole result as JSON. Exit: 0 done, 1 failed, 2 usage.
 */
process.env.ORT_DISABLE_TELEMETRY ??= '1';

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { DEFAULT_DECODE_LIMITS, decodeUpload } from '../src/audio/decode.js';
import { AudioError } from '../src/audio/errors.js';
import { SAMPLE_RATE } from '../src/audio/pcm.js';
import { InferenceError, ModelLoadError } from '../src/asr/errors.js';
import { SUPPORTED_LANGUAGES, toLanguage, type Language } from '../src/asr/languages.js';
import { transcribe } from '../src/asr/transcribe.js';
import { ConfigError, engineSettings, loadConfig, transcriptionSettings } from '../src/config.js';
import { describeDifferences, normalizeWords, scoreClip, scoreCorpus, type ClipScore } from './wer.js';

const USAGE = `usage: npm run eval -- --model-dir DIR --clips DIR --references FILE.jsonl [--language NAME] [--out FILE]
  --references  one JSON object a line: {"file": "noise.wav", "subset": "...", "text": "reference transcript"}
  --language    force the language (as mega-asr transcribe --language); default: detect
  --out         also write the result as JSON
ASR_DEVICE, ASR_INTRA_OP_THREADS, ASR_CHUNK_SECONDS, ASR_VAD etc. come from the environment, as for the server.`;

class UsageError extends Error {}
class EvalError extends Error {}

const referenceLine = z.object({ file: z.string().min(1), subset: z.string().optional(), text: z.string() });
type Reference = z.infer<typeof referenceLine>;

/** A clip's transcript and its score; `differences`: `ref→hyp` substitution, `-ref` deletion, `+hyp` insertion. */
export type ClipResult = Omit<ClipScore, 'alignment'> & {
  file: string;
  subset?: string;
  reference: string;
  hypothesis: string;
  /** languages the model heard, in order */
  languages: string[];
  audioSeconds: number;
  transcribeMs: number;
  differences: string[];
};

function readReferences(path: string): Reference[] {
  const refs = readFileSync(path, 'utf8')
    .split('\n')
    .map((line, i) => ({ line: line.trim(), n: i + 1 }))
    .filter(({ line }) => line.length > 0)
    .map(({ line, n }) => {
      let json: unknown;
      try {
        json = JSON.parse(line);
      } catch {
        throw new EvalError(`${path}:${n}: not JSON`);
      }
      const parsed = referenceLine.safeParse(json);
      if (!parsed.success) throw new EvalError(`${path}:${n}: expected {"file": "...", "text": "..."}`);
      // WER divides by the reference's words: a reference without any cannot be scored
      if (normalizeWords(parsed.data.text).length === 0) throw new EvalError(`${path}:${n}: the reference text has no words`);
      return parsed.data;
    });
  if (refs.length === 0) throw new EvalError(`${path}: no references`);
  return refs;
}

async function evaluate(o: { modelDir: string; clips: string; references: Reference[]; language?: Language }): Promise<ClipResult[]> {
  const config = loadConfig({ ...process.env, MODEL_DIR: o.modelDir });
  // onnxruntime-node is loaded only once the arguments and references are known good
  const { AsrEngine } = await import('../src/asr/engine.js');
  const engine = await AsrEngine.load({ modelDir: o.modelDir, ...engineSettings(config), logger: { warn: (m) => console.error(`warning: ${m}`) } });
  try {
    const results: ClipResult[] = [];
    for (const ref of o.references) {
      let pcm: Float32Array;
      try {
        pcm = await decodeUpload(readFileSync(join(o.clips, ref.file)), { ...DEFAULT_DECODE_LIMITS, maxSeconds: config.MAX_AUDIO_SECONDS });
      } catch (err) {
        throw new EvalError(`${ref.file}: ${(err as Error).message}`);
      }
      const started = performance.now();
      const result = await transcribe(engine, pcm, {
        ...transcriptionSettings(config),
        ...(o.language ? { language: o.language } : {}),
      });
      const transcribeMs = performance.now() - started;
      const { alignment, ...score } = scoreClip(ref.text, result.text);
      results.push({
        file: ref.file,
        ...(ref.subset !== undefined ? { subset: ref.subset } : {}),
        reference: ref.text,
        hypothesis: result.text,
        languages: result.languages,
        audioSeconds: pcm.length / SAMPLE_RATE,
        transcribeMs,
        ...score,
        differences: describeDifferences(alignment),
      });
    }
    return results;
  } finally {
    await engine.release();
  }
}

const percent = (x: number) => `${(100 * x).toFixed(1)} %`;

function markdown(clips: ClipResult[], language: string): string {
  const overall = scoreCorpus(clips);
  const audio = clips.reduce((n, c) => n + c.audioSeconds, 0);
  const ms = clips.reduce((n, c) => n + c.transcribeMs, 0);
  const rows = clips.map((c) =>
    `| ${c.file} | ${c.refWords} | ${c.substitutions}/${c.deletions}/${c.insertions} | ${percent(c.wer)} | ${percent(c.agreement)} | ${(c.transcribeMs / 1000 / c.audioSeconds).toFixed(3)} | ${c.differences.join(' ') || '—'} |`,
  );
  return [
    `language: ${language}`,
    '',
    '| clip | ref words | sub/del/ins | WER | agreement | RTF | differing words (ref→hyp, -deleted, +inserted) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows,
    '',
    `corpus WER (all edits / all reference words): ${percent(overall.wer)} (${overall.edits}/${overall.refWords}), agreement ${percent(overall.agreement)}`,
    `mean of per-clip agreements (the card's "agreement" most likely): ${percent(overall.meanAgreement)}`,
    `real-time factor: ${(ms / 1000 / audio).toFixed(3)} (${(ms / 1000).toFixed(1)} s for ${audio.toFixed(1)} s of audio)`,
  ].join('\n');
}

/** Runs the command; returns the exit code (0 done, 1 failed, 2 usage). Errors are one line, no stack. */
async function main(argv: string[]): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'model-dir': { type: 'string' },
        clips: { type: 'string' },
        references: { type: 'string' },
        language: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const { 'model-dir': modelDir, clips, references } = values;
    if (!modelDir || !clips || !references) throw new UsageError('--model-dir, --clips and --references are required');
    const language = values.language === undefined ? undefined : toLanguage(values.language);
    if (values.language !== undefined && !language) {
      throw new UsageError(`unsupported language "${values.language}" (one of ${SUPPORTED_LANGUAGES.join(', ')})`);
    }

    const results = await evaluate({ modelDir, clips, references: readReferences(references), ...(language ? { language } : {}) });
    console.log(markdown(results, language ?? 'detected'));
    if (values.out) {
      writeFileSync(values.out, `${JSON.stringify({ modelDir, language: language ?? null, clips: results, overall: scoreCorpus(results) }, null, 2)}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`eval: ${(err as Error).message}\n${USAGE}`);
      return 2;
    }
    const known = [EvalError, AudioError, ModelLoadError, InferenceError, ConfigError].some((E) => err instanceof E);
    const io = ['ENOENT', 'EISDIR', 'EACCES'].includes((err as NodeJS.ErrnoException).code ?? '');
    console.error(`eval: ${known || io ? (err as Error).message : `unexpected error: ${String(err)}`}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
