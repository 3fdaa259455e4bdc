import { workerData } from 'node:worker_threads';
import { SileroVad, type VadStream } from '../audio/silero-vad.js';
import type { VadOutcome, VadTask, VadWorkerData } from './vad-thread.js';

const streams = new Map<number, VadStream>();

/**
 * Piscina worker for VadThread: scores live streams' audio with Silero VAD, each stream's state kept here by id.
 * A push marked `first` starts the state afresh; any other push for a stream this thread does not hold means
 * the thread was restarted and the state is gone, which the stream's owner must hear about.
 */
function handler(vad: SileroVad) {
  return async (task: VadTask): Promise<VadOutcome> => {
    try {
      switch (task.op) {
        case 'push': {
          let stream = streams.get(task.stream);
          if (task.first) streams.set(task.stream, (stream = vad.stream()));
          else if (!stream) throw new Error('the stream was lost when the voice activity thread restarted');
          return { ok: true, value: await stream.push(task.pcm) };
        }
        case 'close':
          streams.delete(task.stream);
          return { ok: true, value: undefined };
        case 'stats':
          return { ok: true, value: { streams: streams.size } };
      }
    } catch (err) {
      return { ok: false, message: messageOf(err) };
    }
  };
}

/** When the model cannot be loaded, every task (start's first) hears why, and the thread stays idle to be closed. */
function refuse(err: unknown) {
  const message = `could not load Silero VAD: ${messageOf(err)}`;
  return async (): Promise<VadOutcome> => ({ ok: false, message });
}

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

// A Promise of the handler (no top-level await: under tsx piscina require()s the module first), which piscina
// awaits before the first task. Never a rejected one: that kills the thread with a vaguer error (under tsx,
// piscina's fallback import's "Unknown file extension"), and piscina starts another thread that loads the model
// again while VadThread.start() closes the pool, ending that thread inside onnxruntime.
export default SileroVad.load((workerData as VadWorkerData).modelPath).then(handler, refuse);
