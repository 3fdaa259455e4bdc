/** `invalid_value`: longer than the configured maximum duration (OpenAI's code for that case). */
export type AudioErrorCode = 'invalid_audio' | 'unsupported_audio_format' | 'audio_too_short' | 'invalid_value';

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
