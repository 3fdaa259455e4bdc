import { AudioError, PoolError, type AudioErrorCode, type PoolErrorCode } from '../pool/errors.js';

export type ErrorType = 'invalid_request_error' | 'server_error' | 'rate_limit_exceeded';

/**
 * An error as data: the HTTP status and the OpenAI error body `{"error":{message,type,param,code}}`
 * (all four keys always present, as the spec requires). One place (the app's error handler) sends it.
 */
export class ApiError extends Error {
  override name = 'ApiError';

  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = 'invalid_value') =>
  new ApiError(400, message, 'invalid_request_error', code, param);

/** Fastify and @fastify/multipart error codes, mapped to what an OpenAI client expects. */
const FASTIFY_CODES: Record<string, (err: FastifyLikeError, maxUploadBytes: number) => ApiError> = {
  FST_REQ_FILE_TOO_LARGE: (_e, max) =>
    new ApiError(413, `Maximum content size limit (${max}) exceeded`, 'invalid_request_error', 'file_too_large', 'file'),
  FST_ERR_CTP_BODY_TOO_LARGE: () => new ApiError(413, 'The request body is too large', 'invalid_request_error', 'request_too_large'),
  FST_PARTS_LIMIT: () => badRequest('Too many multipart parts', null, 'too_many_parts'),
  FST_FILES_LIMIT: () => badRequest('Only one file may be uploaded, in the "file" field', 'file', 'too_many_files'),
  FST_FIELDS_LIMIT: () => badRequest('Too many form fields', null, 'too_many_fields'),
  FST_INVALID_MULTIPART_CONTENT_TYPE: () =>
    new ApiError(400, 'Expected a multipart/form-data body', 'invalid_request_error', 'invalid_content_type'),
  FST_ERR_CTP_INVALID_MEDIA_TYPE: (e) => new ApiError(415, e.message, 'invalid_request_error', 'unsupported_media_type'),
  FST_ERR_CTP_EMPTY_JSON_BODY: () => badRequest('The JSON body is empty', null, 'invalid_json'),
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: () => badRequest('Content-Length does not match the body', null, 'invalid_content_length'),
  FST_ERR_BAD_URL: () => badRequest('The URL is malformed', null, 'invalid_url'),
};

interface FastifyLikeError {
  message: string;
  code?: string;
  statusCode?: number;
}

/** The audio domain's codes in OpenAI's words (its code for audio over the length limit is `invalid_value`). */
const AUDIO_CODES: Record<AudioErrorCode, string> = {
  invalid: 'invalid_audio',
  unsupported_format: 'unsupported_audio_format',
  too_short: 'audio_too_short',
  too_long: 'invalid_value',
};

export const serverStopped = () =>
  new ApiError(503, 'The server shut down before the transcription finished; retry.', 'server_error', 'service_unavailable');

const modelFailed = () =>
  new ApiError(500, 'The transcription failed inside the model runtime; the server logged the details.', 'server_error', 'inference_failed');

/** The pool's failures; the detail (file paths, runtime messages) goes to the log with the request id, not to the client. */
const POOL_ERRORS: Record<PoolErrorCode, () => ApiError> = {
  inference_failed: modelFailed,
  worker_lost: modelFailed,
  closed: serverStopped,
};

/** Why an upload was cut: no byte for the idle limit, or fewer bytes than the minimum rate allows. */
export type UploadCut = 'idle' | 'slow';

const UPLOAD_CUT_MESSAGES: Record<UploadCut, string> = {
  idle: 'The request body stopped arriving; the upload was cut. Retry the upload.',
  slow: 'The request body arrived too slowly; the upload was cut. Retry on a faster connection.',
};

/** A body cut by the upload guard; the rest of it is not read. */
export const uploadTimedOut = (reason: UploadCut) => new ApiError(408, UPLOAD_CUT_MESSAGES[reason], 'invalid_request_error', 'request_timeout');

/** Every upload slot (MAX_UPLOADS) is reading a body: refused before this one is read. */
export const tooManyUploads = (retryAfterSeconds: number) =>
  new ApiError(429, 'The server is reading as many uploads as it allows; retry after the delay in Retry-After.', 'rate_limit_exceeded', 'too_many_uploads', null, {
    'retry-after': String(retryAfterSeconds),
  });

/** Headers that never finished (Node's headersTimeout): the socket is answered and closed. */
const headersTimedOut = () => new ApiError(408, 'The request headers did not arrive in time', 'invalid_request_error', 'request_timeout');

const REASON_PHRASES: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };

/** A whole HTTP/1.1 response with the error's body that closes the connection, for a socket Fastify never saw. */
function rawResponse(api: ApiError): string {
  const body = JSON.stringify(api.body());
  return `HTTP/1.1 ${api.status} ${REASON_PHRASES[api.status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** Node's own parse failures and timeouts, before Fastify sees a request: answered on the socket in OpenAI's shape. */
export function clientErrorResponse(err: NodeJS.ErrnoException): string {
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    return rawResponse(new ApiError(431, 'The request headers (or URL) are too large', 'invalid_request_error', 'headers_too_large'));
  }
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return rawResponse(headersTimedOut());
  return rawResponse(badRequest('The HTTP request is malformed', null, 'malformed_request'));
}

/** Anything thrown while serving a request -> the ApiError to answer with. Never leaks a stack trace. */
export function toApiError(err: unknown, maxUploadBytes: number): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof AudioError) return new ApiError(400, err.message, 'invalid_request_error', AUDIO_CODES[err.code], 'file');
  if (err instanceof PoolError) return POOL_ERRORS[err.code]();
  const e = err as FastifyLikeError;
  const mapped = e?.code ? FASTIFY_CODES[e.code] : undefined;
  if (mapped) return mapped(e, maxUploadBytes);
  // Fastify's own 4xx (e.g. a malformed JSON body): the message is meant for the client.
  if (e?.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
    return new ApiError(e.statusCode, e.message, 'invalid_request_error', 'invalid_request');
  }
  return new ApiError(500, 'The server had an error while processing your request.', 'server_error', 'internal_error');
}
