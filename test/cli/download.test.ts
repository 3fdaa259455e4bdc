import { existsSync, lstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { checkpointRepo, fixtureRepo, startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { fixtureModel } from '../support/fixture-models.js';
import { megaAsr, megaAsrBin as bin } from '../support/cli.js';
import { sharedPath } from '../support/shared.js';

describe('mega-asr download, and transcribe without a model directory', () => {
  let hub: FakeHub;
  let cache: string;
  let env: Record<string, string>;
  beforeAll(async () => {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run "npm run build" (npm test does)`);
    const dir = fixtureModel('default');
    hub = await startFakeHub([fixtureRepo(dir, { id: 'acme/asr-onnx', gated: true }), checkpointRepo(dir).repo]);
    cache = mkdtempSync(join(tmpdir(), 'hf-cli-'));
    env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_TOKEN: hub.token, ASR_DEVICE: 'cpu' };
  });
  afterAll(async () => {
    await hub?.close();
    rmSync(cache, { recursive: true, force: true });
  });

  it('a gated model without HF_TOKEN: one line, exit 1', async () => {
    const r = await megaAsr(['download', '--model', 'acme/asr-onnx'], { ...env, HF_TOKEN: '' });
    expect(r.code).toBe(1);
    // the file list is public, as on the real hub: what would be fetched is said, then the refusal, in one line
    const lines = r.stderr.trim().split('\n');
    expect(lines.at(-1)).toBe(`mega-asr: acme/asr-onnx: gated: accept the conditions on ${hub.url}/acme/asr-onnx, then set HF_TOKEN to an access token of that account`);
    expect(lines.slice(0, -1)).toEqual([expect.stringMatching(/^mega-asr: downloading the model model=acme\/asr-onnx revision=main /)]);
  });

  it('prints the snapshot directory, one line per file on stderr off a terminal; a second run fetches nothing', async () => {
    const first = await megaAsr(['download', '--model', 'acme/asr-onnx', '--revision', 'main'], env);
    expect(first.code).toBe(0);
    const snapshot = first.stdout.trim();
    expect(snapshot).toMatch(new RegExp(`^${cache}/models--acme--asr-onnx/snapshots/[0-9a-f]{40}$`));
    expect(lstatSync(join(snapshot, 'embed_tokens.safetensors')).isSymbolicLink()).toBe(true);
    const lines = first.stderr.trim().split('\n');
    expect(lines[0]).toMatch(/^mega-asr: downloading the model model=acme\/asr-onnx revision=main commit=[0-9a-f]{40} files=\d+ megabytes=\d+/);
    expect(lines.filter((l) => l.startsWith('mega-asr: downloaded file=')).length).toBeGreaterThanOrEqual(8);
    expect(lines.some((l) => l.startsWith('mega-asr: downloaded file=embed_tokens.safetensors '))).toBe(true);

    const again = await megaAsr(['download', '--model', 'acme/asr-onnx'], env);
    expect(again).toMatchObject({ code: 0, stdout: first.stdout, stderr: '' });
  });

  it('transcribe uses the cached model (offline here) and says the same as with --model-dir', async () => {
    const clip = sharedPath('fixtures', 'voices-in-the-wild', 'mixed.wav');
    const cached = await megaAsr(['transcribe', clip], { ...env, MODEL: 'acme/asr-onnx', HF_HUB_OFFLINE: '1' });
    expect(cached.stderr).toMatch(/^(warning: ASR_DEVICE=.*\n)?$/);
    expect(cached.code).toBe(0);
    expect(FIXTURE_SENTENCES).toContain(cached.stdout.trim());
    const local = await megaAsr(['transcribe', clip, '--model-dir', fixtureModel('default')], { ASR_DEVICE: 'cpu' });
    expect(cached.stdout).toBe(local.stdout);
  });

  it('offline with nothing cached: one line that says what to do', async () => {
    const r = await megaAsr(['download', '--model', 'acme/other'], { ...env, HF_HUB_OFFLINE: '1' });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^mega-asr: HF_HUB_OFFLINE is set and acme\/other@main is not complete .*run `mega-asr download` where the hub is reachable/);
  });
});
