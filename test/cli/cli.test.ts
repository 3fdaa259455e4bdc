import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { CLIP_NAMES, fixtureModel } from '../support/fixture-models.js';
import { megaAsr, megaAsrBin as bin } from '../support/cli.js';
import { sharedPath } from '../support/shared.js';

describe('mega-asr transcribe', () => {
  let modelDir: string;
  beforeAll(() => {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run "npm run build" (npm test does)`);
    modelDir = fixtureModel('default');
  });

  it.each(CLIP_NAMES)('transcribes %s.wav on the generated model', async (name) => {
    const r = await megaAsr(['transcribe', sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`), '--model-dir', modelDir, '--device', 'cpu']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(FIXTURE_SENTENCES).toContain(r.stdout.trim());
  });

  it('takes the model directory from MODEL_DIR, a forced language, context and --json', async () => {
    const clip = sharedPath('fixtures', 'voices-in-the-wild', 'echo.wav');
    const r = await megaAsr(['transcribe', clip, '--language', 'english', '--context', 'shoes, size', '--json'], {
      MODEL_DIR: modelDir,
      ASR_DEVICE: 'cpu',
    });
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout) as { text: string; languages: string[]; provider: string; segments: { start: number; end: number }[] };
    expect(result).toMatchObject({ languages: ['English'], provider: 'cpu' });
    expect(FIXTURE_SENTENCES).toContain(result.text);
    expect(result.segments.length).toBeGreaterThanOrEqual(1);
    expect(result.segments[0]!.start).toBeLessThan(1); // where the speech starts
  });

  it('warns once and runs on CPU when CUDA is not available (auto)', async () => {
    const r = await megaAsr(['transcribe', sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'), '--model-dir', modelDir]);
    expect(r.code).toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^warning: ASR_DEVICE=auto: CUDA execution provider unavailable/);
  });

  it('fails with one clear line, no stack trace', async () => {
    const notWav = join(mkdtempSync(join(tmpdir(), 'cli-')), 'notes.wav');
    writeFileSync(notWav, 'this is not audio at all');
    const cases: [string[], number, RegExp][] = [
      [['transcribe', notWav, '--model-dir', modelDir], 1, /^mega-asr: .*(audio|too small)/i],
      [['transcribe', sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'), '--model-dir', '/nonexistent/model'], 1, /does not exist/],
      [['transcribe', sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'), '--model-dir', modelDir, '--device', 'cuda'], 1, /ASR_DEVICE=cuda/],
      [['transcribe', sharedPath('fixtures', 'voices-in-the-wild', 'noise.wav'), '--language', 'Klingon'], 2, /unsupported language "Klingon"/],
      [['transcribe'], 2, /usage: mega-asr transcribe/],
      [['transcribe', '/nonexistent.wav', '--model-dir', modelDir], 1, /ENOENT/],
    ];
    for (const [args, code, message] of cases) {
      const r = await megaAsr(args);
      expect(r.code, args.join(' ')).toBe(code);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });
});
