import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { AudioError } from '../audio/errors.js';
import { DEFAULT_DECODE_LIMITS, decodeUpload } from '../audio/decode.js';
import { ModelLoadError, InferenceError } from '../asr/errors.js';
import { SUPPORTED_LANGUAGES, toLanguage } from '../asr/languages.js';
import { transcribe } from '../asr/transcribe.js';
import { ConfigError, engineSettings, loadConfig, transcriptionSettings } from '../config.js';
import { HubError } from '../hub/errors.js';
import { modelDirFor } from './model.js';

const USAGE = `usage: mega-asr transcribe <audio file> [--model-dir DIR] [--language NAME] [--context TEXT] [--device auto|cuda|cpu] [--json]
       mega-asr download [--model ID] [--revision REV]

transcribe:
  --model-dir DIR   model directory (default: $MODEL_DIR; unset: $MODEL from the Hugging Face cache, downloaded if missing)
  --language NAME   force the language (one of ${SUPPORTED_LANGUAGES.length}: ${SUPPORTED_LANGUAGES.join(', ')}); default: detect
  --context TEXT    background text for the model (names, terms)
  --device D        execution provider (default: $ASR_DEVICE or auto)
  --json            print the whole result (language, segments, token counts, timings) as JSON

download: fetches what the engine needs into the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or
~/.cache/huggingface/hub) and prints the snapshot directory; a complete cache downloads nothing.
  --model ID        Hugging Face repo (default: $MODEL or Reza2kn/mega-asr-onnx)
  --revision REV    branch, tag or commit (default: $MODEL_REVISION or main)`;

class UsageError extends Error {}

/** Runs the command; returns the exit code (0 ok, 1 failed, 2 usage). Errors are one line, no stack. */
export async function main(argv: string[]): Promise<number> {
  try {
    const { positionals, values } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'model-dir': { type: 'string' },
        model: { type: 'string' },
        revision: { type: 'string' },
        language: { type: 'string' },
        context: { type: 'string' },
        device: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const [command, file, ...extra] = positionals;
    if (command === 'download') {
      if (file || extra.length) throw new UsageError('expected: download [--model ID] [--revision REV]');
      const config = loadConfig({
        ...process.env,
        ...(values.model ? { MODEL: values.model } : {}),
        ...(values.revision ? { MODEL_REVISION: values.revision } : {}),
        MODEL_DIR: undefined,
      });
      console.log(await modelDirFor(config));
      return 0;
    }
    if (command !== 'transcribe' || !file || extra.length) throw new UsageError('expected: transcribe <audio file>, or download');
    const language = values.language === undefined ? undefined : toLanguage(values.language);
    if (values.language !== undefined && !language) throw new UsageError(`unsupported language "${values.language}"`);
    const config = loadConfig({
      ...process.env,
      ...(values['model-dir'] ? { MODEL_DIR: values['model-dir'] } : {}),
      ...(values.device ? { ASR_DEVICE: values.device } : {}),
    });

    const pcm = await decodeUpload(readFileSync(file), { ...DEFAULT_DECODE_LIMITS, maxSeconds: config.MAX_AUDIO_SECONDS });
    const modelDir = await modelDirFor(config);
    // onnxruntime-node is loaded only to transcribe: `download` (an init container's whole job) never needs it
    const { AsrEngine } = await import('../asr/engine.js');
    const engine = await AsrEngine.load({
      modelDir,
      ...engineSettings(config),
      // The engine's notices (how it batches, which graphs it loaded) are for the service's log; one file here.
      logger: { warn: (m) => console.error(`warning: ${m}`), info: () => {} },
    });
    try {
      const result = await transcribe(engine, pcm, {
        ...transcriptionSettings(config),
        ...(language ? { language } : {}),
        ...(values.context ? { context: values.context } : {}),
      });
      if (values.json) console.log(JSON.stringify({ provider: engine.provider, ...result }, null, 2));
      else console.log(result.text);
      if (result.truncated) console.error('warning: the token budget cut the transcript short (see ASR_TOKENS_PER_SECOND)');
    } finally {
      await engine.release();
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`mega-asr: ${(err as Error).message}\n${USAGE}`);
      return 2;
    }
    const known = [AudioError, ModelLoadError, InferenceError, ConfigError, HubError].some((E) => err instanceof E);
    const io = (err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'EISDIR';
    console.error(`mega-asr: ${known || io ? (err as Error).message : `unexpected error: ${String(err)}`}`);
    return 1;
  }
}
