import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Language } from '../pool/result.js';
import { ApiError, badRequest } from './errors.js';
import { parseResponseFormat, type ResponseFormat } from './formats.js';
import { resolveLanguage } from './language-codes.js';

/** What the transcription route needs from a request, validated. */
export interface TranscriptionRequest {
  /** the uploaded file */
  audio: Buffer;
  language?: Language;
  prompt?: string;
  responseFormat: ResponseFormat;
  stream: boolean;
}

/** The prompt is repeated in every chunk's prefill: a bound keeps it context, not a cost amplifier. */
export const MAX_PROMPT_CHARACTERS = 4000;

export interface UploadLimits {
  maxUploadBytes: number;
}

type Fields = Map<string, string[]>;

/**
 * Reads the multipart body. The file size limit is enforced while the stream is read (the OpenAI SDK
 * streams uploads without Content-Length), throwing FST_REQ_FILE_TOO_LARGE -> 413.
 */
async function readForm(req: FastifyRequest, limits: UploadLimits): Promise<{ fields: Fields; file?: { bytes: Buffer; filename: string } }> {
  const fields: Fields = new Map();
  let file: { bytes: Buffer; filename: string } | undefined;
  const parts = req.parts({
    limits: { fileSize: limits.maxUploadBytes, files: 1, fields: 64, parts: 80, fieldSize: 256 * 1024 },
  });
  try {
    for await (const part of parts) {
      if (part.type === 'file') {
        if (part.fieldname !== 'file') {
          part.file.resume();
          throw badRequest(`Unexpected file field "${part.fieldname}"; upload the audio in the "file" field`, part.fieldname, 'unexpected_file');
        }
        file = { bytes: await part.toBuffer(), filename: part.filename };
      } else {
          // Repeated fields arrive as `key[]` (openai-node, openai-python) or plain `key`.
        const key = part.fieldname.replace(/\[\]$/, '');
        if (part.valueTruncated) throw badRequest(`The '${key}' field is too long`, key, 'invalid_value');
        fields.set(key, [...(fields.get(key) ?? []), String(part.value)]);
      }
    }
  } catch (err) {
    // The client went away mid-upload: there is nobody to answer, and it is not the server's failure.
    // (The socket tells: the parser destroys the request stream itself when it rejects a body.)
    if (req.raw.readableAborted || req.socket.destroyed) throw new ApiError(499, 'The client closed the request', 'invalid_request_error', 'client_closed_request');
    if (!req.raw.complete) discardRest(req, limits.maxUploadBytes);
    // Limits and our own checks carry a code; anything else is the parser rejecting a malformed body.
    if (err instanceof ApiError || (err as { code?: string }).code) throw err;
    throw badRequest(`Malformed multipart body: ${(err as Error).message}`, null, 'invalid_multipart');
  }
  return { fields, ...(file ? { file } : {}) };
}

/**
 * A form refused before its end (a field too long, a second file, the size limit) leaves the rest of the body
 * unread, and the next request on that keep-alive connection would wait behind it for ever: read the rest to
 * nowhere, up to another `maxBytes` (then the connection is cut).
 */
function discardRest(req: FastifyRequest, maxBytes: number): void {
  let left = maxBytes;
  req.raw.unpipe();
  req.raw.on('data', (chunk: Buffer) => {
    if ((left -= chunk.length) < 0) req.raw.socket.destroy();
  });
  req.raw.resume();
}

const single = (fields: Fields, key: string) => fields.get(key)?.at(-1);
/** Caller input quoted in an error message, kept short. */
const clip = (s: string) => (s.length > 64 ? `${s.slice(0, 64)}…` : s);

const booleanString = z
  .string()
  .transform((s) => s.trim().toLowerCase())
  .pipe(z.enum(['true', 'false', '1', '0']))
  .transform((s) => s === 'true' || s === '1');

const temperatureSchema = z.coerce.number().refine(Number.isFinite, 'must be a number').pipe(z.number().min(0).max(1));

function parseWith<T>(schema: z.ZodType<T>, value: string, param: string, what: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw badRequest(`Invalid value for '${param}': ${JSON.stringify(clip(value))} (${what})`, param);
  return r.data;
}

export interface ModelIds {
  served: string;
  aliases: readonly string[];
}

export function checkModel(model: string | undefined, ids: ModelIds): string {
  if (!model) throw new ApiError(400, "Missing required parameter: 'model'", 'invalid_request_error', 'missing_required_parameter', 'model');
  if (model !== ids.served && !ids.aliases.includes(model)) {
    throw new ApiError(
      404,
      `The model '${clip(model)}' does not exist. This server serves '${ids.served}'${ids.aliases.length ? ` (also accepted as ${ids.aliases.map((a) => `'${a}'`).join(', ')})` : ''}.`,
      'invalid_request_error',
      'model_not_found',
      'model',
    );
  }
  return model;
}

/** Reads and validates the whole request; every rejection names its parameter. */
export async function readTranscriptionRequest(req: FastifyRequest, limits: UploadLimits, ids: ModelIds): Promise<TranscriptionRequest> {
  const { fields, file } = await readForm(req, limits);
  checkModel(single(fields, 'model'), ids);
  if (!file) throw new ApiError(400, "Missing required parameter: 'file'", 'invalid_request_error', 'missing_required_parameter', 'file');

  const languageValue = single(fields, 'language')?.trim();
  let language: Language | undefined;
  if (languageValue) {
    language = resolveLanguage(languageValue);
    if (!language) {
      throw badRequest(
        `Unsupported language '${clip(languageValue)}'. Use an ISO-639-1 code (e.g. 'en') or a name of one of the model's 30 languages (e.g. 'English').`,
        'language',
        'unsupported_language',
      );
    }
  }

  const formatValue = single(fields, 'response_format');
  const responseFormat = parseResponseFormat(formatValue);
  if (!responseFormat) {
    throw badRequest(`Invalid value for 'response_format': '${clip(String(formatValue))}'. Supported: json, text, srt, vtt, verbose_json.`, 'response_format');
  }
  // temperature is validated for compatibility and otherwise ignored: decoding is greedy (README).
  const temperatureValue = single(fields, 'temperature');
  if (temperatureValue !== undefined) parseWith(temperatureSchema, temperatureValue, 'temperature', 'a number from 0 to 1');
  const streamValue = single(fields, 'stream');
  const stream = streamValue === undefined ? false : parseWith(booleanString, streamValue, 'stream', 'true or false');
  if (stream && responseFormat !== 'json' && responseFormat !== 'text') {
    throw badRequest(`Streaming is available for response_format 'json' or 'text', not '${responseFormat}'.`, 'stream', 'unsupported_value');
  }

  for (const g of (fields.get('timestamp_granularities') ?? []).map((v) => v.trim())) {
    if (g === 'word') {
      throw badRequest(
        "Word timestamps are not available: Mega-ASR does not produce them. Use 'segment' (segments follow pauses in the speech).",
        'timestamp_granularities[]',
        'unsupported_value',
      );
    }
    if (g !== 'segment') throw badRequest(`Invalid value for 'timestamp_granularities[]': '${clip(g)}'. Supported: segment.`, 'timestamp_granularities[]');
  }

  const prompt = single(fields, 'prompt')?.trim();
  if (prompt && prompt.length > MAX_PROMPT_CHARACTERS) {
    throw badRequest(`The prompt has ${prompt.length} characters; at most ${MAX_PROMPT_CHARACTERS} are accepted.`, 'prompt', 'invalid_value');
  }
  return {
    audio: file.bytes,
    ...(language ? { language } : {}),
    ...(prompt ? { prompt } : {}),
    responseFormat,
    stream,
  };
}
