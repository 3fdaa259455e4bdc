import type { Timings } from './result.js';

/** Where a request's time goes, as the stage metrics name it. */
export type Stage = 'audio_decode' | 'features' | 'encoder' | 'prefill' | 'decode_steps' | 'decode_steps_host';

export const STAGES: readonly Stage[] = ['audio_decode', 'features', 'encoder', 'prefill', 'decode_steps', 'decode_steps_host'];

/** Receives each request's time per stage (the service's metrics implement it). */
export interface StageRecorder {
  /** one request's summed time in `stage` */
  observeStage(stage: Stage, seconds: number): void;
  /** the decode steps a request took part in, and the sum of their batch sizes */
  countDecodeSteps(steps: number, rows: number): void;
}

/** The model stages of one transcription, from the timings its worker measured. */
export function recordTimings(recorder: StageRecorder, t: Timings): void {
  recorder.observeStage('features', t.featuresMs / 1000);
  recorder.observeStage('encoder', t.encoderMs / 1000);
  recorder.observeStage('prefill', t.prefillMs / 1000);
  recorder.observeStage('decode_steps', t.stepsMs / 1000);
  recorder.observeStage('decode_steps_host', t.stepHostMs / 1000);
  recorder.countDecodeSteps(t.steps, t.stepRows);
}
