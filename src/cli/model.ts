import type { Config } from '../config.js';
import { ensureModel } from '../hub/ensure-model.js';
import { barProgress, logProgress, type DownloadLogger } from '../hub/progress.js';

/** One stderr line per event: `mega-asr: downloaded file=onnx/x.onnx megabytes=12.5 ...`. */
const stderrLogger: DownloadLogger = {
  info: (fields, message) => console.error(`mega-asr: ${message} ${format(fields)}`),
  warn: (fields, message) => console.error(`warning: ${message} ${format(fields)}`),
};

function format(fields: Record<string, unknown>): string {
  return Object.entries(fields)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
}

/** MODEL_DIR when set; otherwise the cached snapshot of MODEL, downloaded first if needed (a bar on a terminal). */
export async function modelDirFor(config: Config): Promise<string> {
  if (config.MODEL_DIR) return config.MODEL_DIR;
  return ensureModel(config, { logger: stderrLogger, progress: process.stderr.isTTY ? barProgress() : logProgress(stderrLogger) });
}
