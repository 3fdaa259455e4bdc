import type { Piscina } from 'piscina';
import type { VadThread } from '../../src/pool/vad-thread.js';

/** The thread's piscina, to end its worker while it is idle (never inside a model run). */
export const piscinaOf = (thread: VadThread): Piscina => (thread as unknown as { piscina: Piscina }).piscina;
