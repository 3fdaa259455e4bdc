/**
 * What is wrong with an upload, in the audio domain's words (the HTTP layer words it for its clients):
 * `invalid` damaged or impossible, `unsupported_format` not audio or a format this server cannot decode,
 * `too_short` empty or shorter than the model can take, `too_long` past the configured maximum duration.
 */
export type AudioErrorCode = 'invalid' | 'unsupported_format' | 'too_short' | 'too_long';

/**
 * A problem with the uploaded audio itself. The message is shown to API users, so it says what is
 * wrong with their file rather than where the decoder failed.
 */
export class AudioError extends Error {
  override readonly name = 'AudioError';

  constructor(
    readonly code: AudioErrorCode,
    message: string,
  ) {
    super(message);
  }
}
