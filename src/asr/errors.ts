/** The model directory or one of its sessions does not fit what the engine can drive: a startup error. */
export class ModelLoadError extends Error {
  override name = 'ModelLoadError';
}

/** A transcription failed inside the engine (a bad model output, not the caller's input). */
export class InferenceError extends Error {
  override name = 'InferenceError';
}
