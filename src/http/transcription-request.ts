import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Language } from '../asr/languages.js';
import { resolveLanguage } from '../asr/language-codes.js';
import { ApiError, badRequest } from './errors.js';
import { parseResponseFormat, type ResponseFormat } from './formats.js';

/** What the transcription route needs from a request, validated; `bytes` is the uploaded file. */
export interface TranscriptionRequest {
  bytes: Buffer;
  filename: string;
  model: string;
  language?: Language;
  prompt?: string;
  responseFormat: ResponseFormat;
  temperature: number;
  stream: boolean;
  granularities: ('segment' | 'word')[];
}

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
        fields.set(key, [...(fields.get(key) ?? []), String(part.value)]);
      }
    }
  } catch (err) {
    // Limits and our own checks carry a code; anything else is the parser rejecting a malformed body.
    if (err instanceof ApiError || (err as { code?: string }).code) throw err;
    throw badRequest(`Malformed multipart body: ${(err as Error).message}`, null, 'invalid_multipart');
  }
  return { fields, ...(file ? { file } : {}) };
}

const single = (fields: Fields, key: string) => fields.get(key)?.at(-1);

const booleanString = z
  .string()
  .transform((s) => s.trim().toLowerCase())
  .pipe(z.enum(['true', 'false', '1', '0']))
  .transform((s) => s === 'true' || s === '1');

const temperatureSchema = z.coerce.number().refine(Number.isFinite, 'must be a number').pipe(z.number().min(0).max(1));

function parseWith<T>(schema: z.ZodType<T>, value: string, param: string, what: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw badRequest(`Invalid value for '${param}': ${JSON.stringify(value)} (${what})`, param);
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
      `The model '${model}' does not exist. This server serves '${ids.served}'${ids.aliases.length ? ` (also accepted as ${ids.aliases.map((a) => `'${a}'`).join(', ')})` : ''}.`,
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
  const model = checkModel(single(fields, 'model'), ids);
  if (!file) throw new ApiError(400, "Missing required parameter: 'file'", 'invalid_request_error', 'missing_required_parameter', 'file');

  const languageValue = single(fields, 'language')?.trim();
  let language: Language | undefined;
  if (languageValue) {
    language = resolveLanguage(languageValue);
    if (!language) {
      throw badRequest(
        `Unsupported language '${languageValue}'. Use an ISO-639-1 code (e.g. 'en') or a name of one of the model's 30 languages (e.g. 'English').`,
        'language',
        'unsupported_language',
      );
    }
  }

  const formatValue = single(fields, 'response_format');
  const responseFormat = parseResponseFormat(formatValue);
  if (!responseFormat) {
    throw badRequest(`Invalid value for 'response_format': '${formatValue}'. Supported: json, text, srt, vtt, verbose_json.`, 'response_format');
  }
  const temperatureValue = single(fields, 'temperature');
  const temperature = temperatureValue === undefined ? 0 : parseWith(temperatureSchema, temperatureValue, 'temperature', 'a number from 0 to 1');
  const streamValue = single(fields, 'stream');
  const stream = streamValue === undefined ? false : parseWith(booleanString, streamValue, 'stream', 'true or false');
  if (stream && responseFormat !== 'json' && responseFormat !== 'text') {
    throw badRequest(`Streaming is available for response_format 'json' or 'text', not '${responseFormat}'.`, 'stream', 'unsupported_value');
  }

  const granularities = (fields.get('timestamp_granularities') ?? []).map((g) => g.trim());
  for (const g of granularities) {
    if (g === 'word') {
      throw badRequest(
        "Word timestamps are not available: Mega-ASR does not produce them. Use 'segment' (segments follow the audio's chunks).",
        'timestamp_granularities[]',
        'unsupported_value',
      );
    }
    if (g !== 'segment') throw badRequest(`Invalid value for 'timestamp_granularities[]': '${g}'. Supported: segment.`, 'timestamp_granularities[]');
  }

  const prompt = single(fields, 'prompt')?.trim();
  return {
    bytes: file.bytes,
    filename: file.filename,
    model,
    ...(language ? { language } : {}),
    ...(prompt ? { prompt } : {}),
    responseFormat,
    temperature,
    stream,
    granularities: granularities as 'segment'[],
  };
}
