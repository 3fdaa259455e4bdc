import { fileURLToPath } from 'node:url';

/** setTimeout clamps larger delays (Infinity included) to 1 ms, so this is the longest real timeout. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** Tests run the sources (tsx in the worker threads too); the build runs the compiled .js next to this file. */
export function workerScript(name: string): { filename: string; execArgv?: string[] } {
  const ts = import.meta.url.endsWith('.ts');
  const filename = fileURLToPath(new URL(`./${name}.${ts ? 'ts' : 'js'}`, import.meta.url));
  return ts ? { filename, execArgv: ['--import', 'tsx'] } : { filename };
}

/** The view itself when it spans its buffer (transferred, so the caller's view is detached), else a copy. */
export function ownBuffer<T extends Uint8Array | Float32Array>(view: T, copy: (v: T) => T): { view: T; transfer: ArrayBuffer[] } {
  const whole = view.buffer instanceof ArrayBuffer && view.byteOffset === 0 && view.byteLength === view.buffer.byteLength;
  const own = whole ? view : copy(view);
  return { view: own, transfer: [own.buffer as ArrayBuffer] };
}
