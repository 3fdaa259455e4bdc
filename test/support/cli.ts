import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './shared.js';

const run = promisify(execFile);
/** The installed command: package.json "bin" points here; `npm test` builds it first. */
export const megaAsrBin = join(repoRoot, 'dist', 'cli.js');

/** Runs `mega-asr ARGS` as a child process (never with the caller's MODEL_DIR); its exit code and output. */
export async function megaAsr(args: string[], env: Record<string, string> = {}) {
  const { MODEL_DIR: _unset, ...inherited } = process.env;
  try {
    const { stdout, stderr } = await run(process.execPath, [megaAsrBin, ...args], { env: { ...inherited, ...env }, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
