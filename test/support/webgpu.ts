import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './shared.js';

let icd: string | undefined;

/**
 * The Vulkan ICD json of Mesa's software driver (lavapipe, Mesa 25), from tools/lavapipe.sh: downloaded and
 * unpacked on the first call on a machine, then only checked. Throws with the script's own words when it cannot be
 * had (no Vulkan loader, no network on the first call): a webgpu test fails rather than skips.
 */
export function lavapipeIcd(): string {
  if (icd === undefined) {
    try {
      icd = execFileSync('bash', [join(repoRoot, 'tools', 'lavapipe.sh')], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 300_000,
      }).trim();
    } catch (e) {
      const stderr = (e as { stderr?: string }).stderr?.trim();
      throw new Error(`tools/lavapipe.sh could not provide Mesa lavapipe for the webgpu tests: ${stderr || (e as Error).message}`);
    }
  }
  return icd;
}

/**
 * Points the Vulkan loader at lavapipe unless the environment already chose a driver (VK_ICD_FILENAMES, or
 * VK_DRIVER_FILES on a GPU machine). Call it before the first webgpu session is created: the loader reads the
 * variable then, and a test file has its own process (vitest's forks pool), so this process.env is what it reads.
 */
export function useLavapipe(): void {
  if (process.env.VK_ICD_FILENAMES || process.env.VK_DRIVER_FILES) return;
  process.env.VK_ICD_FILENAMES = lavapipeIcd();
}
