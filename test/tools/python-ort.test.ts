import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../support/shared.js';

const SCRIPT = join(repoRoot, 'tools', 'python-ort.sh');
const scratch = mkdtempSync(join(tmpdir(), 'python-ort-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** tools/python-ort.sh [DIR]: downloads on a machine's first call (about 21 s), then only checks. */
const pythonOrt = (...args: string[]) => spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8', timeout: 300_000 });

/** What a Python started with sys.executable reports: its own sys.executable and onnxruntime's version. */
const CHILD = 'import subprocess, sys; print(sys.executable); print(subprocess.run([sys.executable, "-c", "import onnxruntime; print(onnxruntime.__version__)"], capture_output=True, text=True, check=True).stdout, end="")';

describe('tools/python-ort.sh', () => {
  let launcher: string;

  it('prints only the launcher path, the same path again on a second run, which only checks', () => {
    const first = pythonOrt();
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^\/\S+\/python-ort\/python3\n$/);
    const second = pythonOrt();
    expect(second.status, second.stderr).toBe(0);
    expect(second.stdout).toBe(first.stdout);
    expect(second.stderr).toMatch(/^onnxruntime 1\.\d+ numpy \d+\.\d+\.\d+ python 3\.\d+\.\d+\n$/);
    launcher = first.stdout.trim();
  });

  it('runs Python as the launcher: sys.executable names it, and a child Python started with it imports onnxruntime', () => {
    const run = spawnSync(launcher, ['-c', CHILD], { encoding: 'utf8', timeout: 60_000 });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^${launcher}\\n1\\.\\d+\\n$`));
  });

  it('brings a launcher written before it ran Python as itself up to date, and the copy then passes its check', () => {
    // a copy of the cached one with the launcher of before (the interpreter named itself python3.13, which
    // cannot start without trixie's loader): its packages list, and its root linked
    const copy = join(scratch, 'older');
    const cached = dirname(launcher);
    const current = readFileSync(launcher, 'utf8');
    const before = current.replace(' --argv0 "$here/python3"', '');
    expect(before).not.toBe(current);
    const older = join(copy, 'python3');
    mkdirSync(copy);
    copyFileSync(join(cached, 'packages'), join(copy, 'packages'));
    symlinkSync(join(cached, 'root'), join(copy, 'root'));
    writeFileSync(older, before, { mode: 0o755 });
    const stale = spawnSync(older, ['-c', CHILD], { encoding: 'utf8', timeout: 60_000 });
    expect(stale.status).not.toBe(0);

    const run = pythonOrt(copy);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${older}\n`);
    expect(readFileSync(older, 'utf8')).toBe(current);
    const child = spawnSync(older, ['-c', CHILD], { encoding: 'utf8', timeout: 60_000 });
    expect(child.status, child.stderr).toBe(0);
    expect(child.stdout.split('\n')[0]).toBe(older);
  });
});
