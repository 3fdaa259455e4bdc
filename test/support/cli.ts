import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './shared.js';

const run = promisify(execFile);
/** The installed command: package.json "bin" points here; `npm test` builds it first. */
export const megaAsrBin = join(repoRoot, 'dist', 'cli.js');

export interface NodeRun {
  /** the exit code (0 when it succeeded) */
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node ARGS` from the repository root as a child process; its exit code and output, whatever the code. */
async function node(args: string[], o: { env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<NodeRun> {
  try {
    const { stdout, stderr } = await run(process.execPath, args, { cwd: repoRoot, env: o.env ?? process.env, timeout: o.timeoutMs });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Runs `mega-asr ARGS` as a child process (never with the caller's MODEL_DIR); its exit code and output. */
export function megaAsr(args: string[], env: Record<string, string> = {}): Promise<NodeRun> {
  const { MODEL_DIR: _unset, ...inherited } = process.env;
  return node([megaAsrBin, ...args], { env: { ...inherited, ...env }, timeoutMs: 120_000 });
}

/** `node --import tsx FILE ARGS` (FILE relative to the repository root), with `env` added to this process's environment. */
export function tsxScript(file: string, args: string[], o: { timeoutMs: number; env?: Record<string, string> }): Promise<NodeRun> {
  return node(['--import', 'tsx', join(repoRoot, file), ...args], { env: { ...process.env, ...o.env }, timeoutMs: o.timeoutMs });
}

/**
 * `npm run <script> -- ARGS` without npm: the same command line package.json runs (`node --import tsx bench/NAME.ts`).
 * A service it starts is this checkout's dist/, built by npm test.
 */
export function benchScript(name: string, args: string[], o: { timeoutMs: number; env?: Record<string, string> }): Promise<NodeRun> {
  return tsxScript(join('bench', `${name}.ts`), args, o);
}
