import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (this file lives in test/support). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Path inside the project's shared folder (golden data, clips), read where it stands:
 * `SHARED_DIR` when set, otherwise `../shared` beside the repository. A missing file
 * throws, so a test that needs it fails instead of skipping.
 */
export function sharedPath(...parts: string[]): string {
  const root = process.env.SHARED_DIR ?? join(repoRoot, '..', 'shared');
  const p = join(root, ...parts);
  if (!existsSync(p)) throw new Error(`shared fixture missing: ${p} (set SHARED_DIR to the shared folder)`);
  return p;
}
