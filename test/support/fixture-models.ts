import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFixtureModel, type FixtureVariantName } from '../../tools/fixture/model-dir.js';
import { repoRoot } from './shared.js';

/** Hash of everything that shapes a generated model, so a changed generator never reuses old files. */
function generatorHash(): string {
  const hash = createHash('sha256');
  for (const dir of ['tools', 'tools/fixture']) {
    for (const name of readdirSync(join(repoRoot, dir)).filter((n) => n.endsWith('.ts')).sort()) {
      hash.update(name).update(readFileSync(join(repoRoot, dir, name)));
    }
  }
  return hash.digest('hex').slice(0, 12);
}

/** A generated model directory for `variant`, written once and shared by test files (renamed into place atomically). */
export function fixtureModel(variant: FixtureVariantName = 'default'): string {
  const dir = join(tmpdir(), 'mega-asr-fixtures', `${variant}-${generatorHash()}`);
  if (existsSync(join(dir, 'fixture.json'))) return dir;
  const staging = `${dir}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  writeFixtureModel(staging, variant);
  rmSync(dir, { recursive: true, force: true });
  renameSync(staging, dir);
  return dir;
}

export const CLIP_NAMES = ['noise', 'far_field', 'obstructed', 'distortion', 'recording', 'echo', 'dropout', 'mixed'] as const;
