import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../support/shared.js';

const dir = mkdtempSync(join(tmpdir(), 'private-apt-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The scripts that bring unpacked Debian packages through tools/private-apt.sh, and what their copy is called. */
const SCRIPTS = [
  ['tools/python-ort.sh', 'python-ort'],
  ['tools/lavapipe.sh', 'lavapipe'],
] as const;

const script = (name: string, args: string[]) => spawnSync('bash', [join(repoRoot, name), ...args], { encoding: 'utf8', timeout: 60_000 });

describe.each(SCRIPTS)('%s (tools/private-apt.sh)', (name, copy) => {
  it('says in one line what is wrong with its command line, and prints no path', () => {
    for (const [args, message] of [
      [['--bogus'], `unknown option --bogus (usage: ${name} [--install-missing] [DIR])`],
      [[join(dir, 'a'), join(dir, 'b')], `one DIR only (usage: ${name} [--install-missing] [DIR])`],
    ] as const) {
      const run = script(name, [...args]);
      expect(run.status).toBe(1);
      expect(run.stdout).toBe('');
      expect(run.stderr).toBe(`${name}: ${message}\n`);
    }
  });

  it('--help prints its whole header comment, usage first, and nothing on stdout', () => {
    const run = script(name, ['--help']);
    expect(run.status).toBe(0);
    expect(run.stdout).toBe('');
    const header = readFileSync(join(repoRoot, name), 'utf8').split('\n');
    const comment = header.slice(1, header.findIndex((line, i) => i > 0 && !line.startsWith('#')));
    expect(run.stderr).toBe(comment.map((line) => line.replace(/^# ?/, '') + '\n').join(''));
    expect(run.stderr).toContain(`Usage: ${name} [--install-missing] [DIR]\n`);
    expect(run.stderr).toMatch(/stdout carries only the path; every message goes to stderr\.\n$/);
  });

  it('refuses a DIR that exists and is not its own copy, and leaves what is there alone', () => {
    const foreign = mkdtempSync(join(dir, 'foreign-'));
    writeFileSync(join(foreign, 'notes.txt'), 'keep me');
    const run = script(name, [foreign]);
    expect(run.status).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(`${name}: ${foreign} exists and is not a ${copy} copy made by this script: choose another DIR, or remove it\n`);
    expect(readdirSync(foreign)).toEqual(['notes.txt']);
    expect(readFileSync(join(foreign, 'notes.txt'), 'utf8')).toBe('keep me');
  });
});
