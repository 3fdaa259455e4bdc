import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { findModelFiles } from '../../src/asr/model-dir.js';
import { findEmbeddingFiles, readEmbeddingTable } from '../../src/asr/embeddings.js';
import { ensureModel, type ModelSource } from '../../src/hub/ensure-model.js';
import { HubError } from '../../src/hub/errors.js';
import type { Progress } from '../../src/hub/progress.js';
import { checkpointRepo, fakeCommit, fixtureRepo, hubSource, safetensorsFile, startFakeHub, type FakeHub, type FakeRepo } from '../support/fake-hub.js';
import { fixtureModel } from '../support/fixture-models.js';

const quiet = { info: () => {}, warn: () => {} };
const noBar: Progress = { file: () => ({ start() {}, advance() {}, done() {}, fail() {} }) };
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let hub: FakeHub;
let model: FakeRepo;
let gated: FakeRepo;
let bare: FakeRepo;
let checkpoint: ReturnType<typeof checkpointRepo>;
/** the same table bytes as [rows x 8] in a single model.safetensors: rows too narrow for the decoders' 16 */
let narrowBase: FakeRepo;
/** an index that does not list the embedding tensor */
let indexWithoutTable: FakeRepo;
/** a repo with an empty top-level file (some ship one) */
let withEmptyFile: FakeRepo;
/** decoders fed input_ids (the table is inside the graphs), a vocab.json + merges.txt tokenizer */
let inputIds: FakeRepo;
let closedPort: string;
let dirs: string[] = [];

beforeAll(async () => {
  const dir = fixtureModel('default');
  model = fixtureRepo(dir, { withTable: true });
  // an INT8 encoder beside the INT4 one: the card's recommendation, so the one fetched
  model.files['onnx/audio_encoder_int8.onnx'] = model.files['onnx/audio_encoder_int4.onnx']!;
  model.files['onnx/audio_encoder_int8.onnx.data'] = model.files['onnx/audio_encoder_int4.onnx.data']!;
  gated = fixtureRepo(dir, { id: 'acme/gated-asr', withTable: true, gated: true });
  bare = fixtureRepo(dir, { id: 'acme/no-table-asr' });
  withEmptyFile = fixtureRepo(dir, { id: 'acme/empty-file-asr', withTable: true });
  withEmptyFile.files['added_tokens.txt'] = Buffer.alloc(0);
  inputIds = fixtureRepo(fixtureModel('input-ids'), { id: 'acme/input-ids-asr' });
  checkpoint = checkpointRepo(dir);
  const { table } = checkpoint;
  narrowBase = {
    id: 'acme/narrow-base',
    commit: fakeCommit('acme/narrow-base'),
    files: { 'model.safetensors': safetensorsFile([{ name: 'thinker.model.embed_tokens.weight', dtype: 'BF16', shape: [table.length / 16, 8], data: table }]) },
  };
  indexWithoutTable = {
    id: 'acme/index-without-table',
    commit: fakeCommit('acme/index-without-table'),
    files: { ...checkpoint.repo.files, 'model.safetensors.index.json': Buffer.from(JSON.stringify({ weight_map: { 'thinker.lm_head.weight': 'model-00001-of-00002.safetensors' } })) },
  };
  hub = await startFakeHub([model, gated, bare, checkpoint.repo, narrowBase, indexWithoutTable, withEmptyFile, inputIds]);
  // After the hub has its port: a port freed first could be handed to the hub next (it happened under CI's load,
  // and the "unreachable" hub answered).
  closedPort = await new Promise<string>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(`http://127.0.0.1:${port}`));
    });
  });
});
afterAll(() => hub?.close());
afterEach(() => {
  hub.faults.cutOnce.clear();
  hub.faults.corrupt.clear();
  hub.faults.ignoreRange.clear();
  hub.faults.apiDown = false;
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
});

function source(over: Partial<ModelSource> = {}): ModelSource {
  const cache = mkdtempSync(join(tmpdir(), 'hf-cache-'));
  dirs.push(cache);
  return { ...hubSource(hub, model.id, cache), ...over };
}

const fetchModel = (s: ModelSource) => ensureModel(s, { logger: quiet, progress: noBar });
const since = (n: number) => hub.requests.slice(n);
/** every file under dir, as relative paths, links and all */
function tree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((p) => !lstatSync(join(dir, p)).isDirectory()).sort();
}
const repoRoot = (s: ModelSource, repo = model) => join(s.HF_HUB_CACHE!, `models--${repo.id.replace('/', '--')}`);

describe('ensureModel against a fake hub', () => {
  it('fetches only what the engine needs into the Hugging Face cache layout, then nothing the second time', async () => {
    const s = source({ HF_TOKEN: hub.token });
    const n = hub.requests.length;
    const snapshot = await fetchModel(s);
    const root = repoRoot(s);
    expect(snapshot).toBe(join(root, 'snapshots', model.commit));
    expect(readFileSync(join(root, 'refs', 'main'), 'utf8')).toBe(model.commit);
    expect(tree(snapshot)).toEqual([
      'embed_tokens.safetensors',
      'onnx/audio_encoder_int8.onnx',
      'onnx/audio_encoder_int8.onnx.data',
      'onnx/decoder_prefill_int4.onnx',
      'onnx/decoder_prefill_int4.onnx.data',
      'onnx/decoder_step_int4.onnx',
      'onnx/decoder_step_int4.onnx.data',
      'preprocessor_config.json',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    for (const path of tree(snapshot)) {
      const link = join(snapshot, path);
      // relative links into blobs/, named by the LFS sha256 or the git blob id, as huggingface_hub writes them
      expect(lstatSync(link).isSymbolicLink()).toBe(true);
      expect(readlinkSync(link).startsWith('..')).toBe(true);
      expect(dirname(realpathSync(link))).toBe(realpathSync(join(root, 'blobs')));
      expect(readFileSync(link).equals(model.files[path]!)).toBe(true);
    }
    expect(readlinkSync(join(snapshot, 'onnx/decoder_step_int4.onnx.data'))).toBe(`../../../blobs/${sha256(model.files['onnx/decoder_step_int4.onnx.data']!)}`);
    expect(findModelFiles(snapshot).encoder).toMatch(/audio_encoder_int8\.onnx$/);
    // LFS files came from the CDN through the 302, without the token; small files through the 307
    const cdn = since(n).filter((r) => r.server === 'cdn');
    // once per distinct LFS blob (weights, and text of 1 MiB or more): identical files cross the network once
    const lfs = (p: string) => /\.(onnx|data|safetensors)$/.test(p) || model.files[p]!.length >= 1024 * 1024;
    const lfsBlobs = new Set(tree(snapshot).filter(lfs).map((p) => sha256(model.files[p]!)));
    expect(cdn.length).toBe(lfsBlobs.size);
    expect(cdn.every((r) => r.authorization === undefined)).toBe(true);
    expect(since(n).some((r) => r.path.startsWith('/api/resolve-cache/') && r.authorization === `Bearer ${hub.token}`)).toBe(true);

    const m = hub.requests.length;
    expect(await fetchModel(s)).toBe(snapshot);
    expect(since(m).map((r) => r.path.split('?')[0])).toEqual([`/api/models/${model.id}/revision/main`, `/api/models/${model.id}/tree/${model.commit}`]);
  });

  it('resumes a transfer cut in the middle with a Range request, byte for byte', async () => {
    const s = source();
    const path = 'onnx/decoder_prefill_int4.onnx';
    hub.faults.cutOnce.add(`${model.id}/${path}`);
    const n = hub.requests.length;
    const snapshot = await fetchModel(s);
    const oid = sha256(model.files[path]!);
    const transfers = since(n).filter((r) => r.server === 'cdn' && r.path.startsWith(`/repos/${oid}`));
    expect(transfers.length).toBe(2);
    expect(transfers[0]!.range).toBeUndefined();
    // from what reached the disk (at most the half the hub sent) to the end
    const [, from, to] = /^bytes=(\d+)-(\d+)$/.exec(transfers[1]!.range ?? '') ?? [];
    expect(Number(from)).toBeGreaterThan(0);
    expect(Number(from)).toBeLessThanOrEqual(model.files[path]!.length >> 1);
    expect(Number(to)).toBe(model.files[path]!.length - 1);
    expect(readFileSync(join(snapshot, path)).equals(model.files[path]!)).toBe(true);
    expect(tree(join(repoRoot(s), 'blobs')).filter((f) => f.endsWith('.incomplete'))).toEqual([]);
  });

  it('starts a cut transfer again from zero when the server ignores Range, and still gets the exact file', async () => {
    const s = source();
    const path = 'onnx/decoder_prefill_int4.onnx';
    hub.faults.cutOnce.add(`${model.id}/${path}`);
    hub.faults.ignoreRange.add(`${model.id}/${path}`);
    const n = hub.requests.length;
    const snapshot = await fetchModel(s);
    const oid = sha256(model.files[path]!);
    const transfers = since(n).filter((r) => r.server === 'cdn' && r.path.startsWith(`/repos/${oid}`));
    expect(transfers.map((t) => t.range === undefined)).toEqual([true, false]);
    expect(readFileSync(join(snapshot, path)).equals(model.files[path]!)).toBe(true);
  });

  it('refuses a file whose sha256 does not match and leaves nothing that looks complete', async () => {
    const s = source();
    const path = 'onnx/decoder_step_int4.onnx';
    hub.faults.corrupt.add(`${model.id}/${path}`);
    await expect(fetchModel(s)).rejects.toThrow(new RegExp(`^${path.replace(/\./g, '\\.')}: checksum mismatch \\(expected sha256 ${sha256(model.files[path]!)}`));
    const blobs = tree(join(repoRoot(s), 'blobs'));
    expect(blobs).not.toContain(sha256(model.files[path]!));
    expect(blobs.filter((f) => f.includes('.incomplete'))).toEqual([]);
    expect(existsSync(join(repoRoot(s), 'snapshots', model.commit, path))).toBe(false);
  });

  it('a gated repo: one line asking for HF_TOKEN without one, the download with it or with a saved login', async () => {
    const home = mkdtempSync(join(tmpdir(), 'hf-home-'));
    dirs.push(home);
    const withoutToken = source({ MODEL: gated.id, HF_HOME: home });
    const err = await fetchModel(withoutToken).catch((e: Error) => e);
    expect(err).toBeInstanceOf(HubError);
    expect((err as Error).message).toBe(`${gated.id}: gated: accept the conditions on ${hub.url}/${gated.id}, then set HF_TOKEN to an access token of that account`);
    // as on the real hub the file list is public and the files are not: nothing that looks complete is left
    expect(tree(withoutToken.HF_HUB_CACHE!).filter((f) => !f.endsWith('.incomplete') && !f.includes('.locks'))).toEqual([]);
    const snapshot = await fetchModel(source({ MODEL: gated.id, HF_HOME: home, HF_TOKEN: hub.token }));
    expect(findModelFiles(snapshot).prefill).toMatch(/decoder_prefill_int4\.onnx$/);
    // `huggingface-cli login` leaves the token in HF_HOME/token; huggingface_hub reads it when HF_TOKEN is unset
    writeFileSync(join(home, 'token'), `${hub.token}\n`);
    const n = hub.requests.length;
    expect(await fetchModel(source({ MODEL: gated.id, HF_HOME: home }))).toMatch(/snapshots/);
    expect(since(n).every((r) => r.server === 'cdn' || r.authorization === `Bearer ${hub.token}`)).toBe(true);
  });

  it('names the repo or revision that does not exist, in one line', async () => {
    await expect(fetchModel(source({ MODEL_REVISION: 'v9-nope' }))).rejects.toThrow(
      `${model.id} has no revision "v9-nope": set MODEL_REVISION (or --revision) to a branch, tag or commit that exists, e.g. main`,
    );
    await expect(fetchModel(source({ MODEL: 'acme/missing' }))).rejects.toThrow(/^acme\/missing not found on http:\/\/127\.0\.0\.1:\d+, or it is private \(Repository not found\): check MODEL/);
    // a token the hub does not accept is named as the problem, not the repo
    await expect(fetchModel(source({ HF_TOKEN: 'hf_expired' }))).rejects.toThrow(
      /^http:\/\/127\.0\.0\.1:\d+ refused HF_TOKEN \(Invalid credentials in Authorization header\): set a valid access token/,
    );
    await expect(fetchModel(source({ MODEL: 'acme/missing', HF_TOKEN: hub.token }))).rejects.toThrow(/HF_TOKEN has no access/);
    await expect(fetchModel(source({ HF_ENDPOINT: closedPort }))).rejects.toThrow(/^cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\).*HF_HUB_OFFLINE=1.*MODEL_DIR/);
    hub.faults.apiDown = true;
    await expect(fetchModel(source())).rejects.toThrow(/^Reza2kn\/mega-asr-onnx@main: http:\/\/127\.0\.0\.1:\d+ answered 503 \(The hub is down for maintenance\); try again later$/);
  });

  it('offline: the cached snapshot without a single request, or one line that says what to do', async () => {
    const s = source();
    const snapshot = await fetchModel(s);
    const n = hub.requests.length;
    expect(await fetchModel({ ...s, HF_HUB_OFFLINE: true })).toBe(snapshot);
    // an unreachable hub falls back to the cache too
    expect(await fetchModel({ ...s, HF_ENDPOINT: closedPort })).toBe(snapshot);
    expect(since(n)).toEqual([]);
    // and so does a hub that is down (5xx) or rate-limiting: a restart during an outage still starts
    hub.faults.apiDown = true;
    expect(await fetchModel(s)).toBe(snapshot);
    hub.faults.apiDown = false;
    const m = hub.requests.length;
    const empty = source({ HF_HUB_OFFLINE: true });
    const err = await fetchModel(empty).catch((e: Error) => e);
    expect((err as Error).message).toBe(
      `HF_HUB_OFFLINE is set and ${model.id}@main is not complete in the Hugging Face cache ${empty.HF_HUB_CACHE} (nothing is cached for it): ` +
        'run `mega-asr download` where the hub is reachable (with the same HF_HOME or HF_HUB_CACHE), or set MODEL_DIR to a model directory',
    );
    // a snapshot that lost its embedding table names what is missing
    rmSync(join(snapshot, 'embed_tokens.safetensors'));
    await expect(fetchModel({ ...s, HF_HUB_OFFLINE: true })).rejects.toThrow(/is not complete in the Hugging Face cache .* \(the embedding table the decoders need is missing\)/);
    expect(since(m)).toEqual([]);
  });

  it('fetches no embedding table for decoders fed input_ids (the engine\'s own contract reader decides), and serves them offline', async () => {
    const s = source({ MODEL: inputIds.id });
    const n = hub.requests.length;
    const snapshot = await fetchModel(s);
    expect(findEmbeddingFiles(snapshot)).toEqual([]);
    expect(since(n).some((r) => r.path.includes(checkpoint.repo.id))).toBe(false);
    // complete as it is: offline it is used, not reported as missing a table
    expect(await fetchModel({ ...s, HF_HUB_OFFLINE: true })).toBe(snapshot);
  });

  it('keeps an empty file of the repo as an empty blob, so the next start downloads nothing', async () => {
    const s = source({ MODEL: withEmptyFile.id });
    const snapshot = await fetchModel(s);
    expect(readFileSync(join(snapshot, 'added_tokens.txt')).length).toBe(0);
    const n = hub.requests.length;
    expect(await fetchModel(s)).toBe(snapshot);
    expect(since(n).map((r) => r.path.split('?')[0])).toEqual([`/api/models/${withEmptyFile.id}/revision/main`, `/api/models/${withEmptyFile.id}/tree/${withEmptyFile.commit}`]);
  });

  it('uses a cache written by Python huggingface_hub as it is', async () => {
    const s = source();
    const root = repoRoot(s);
    const commit = 'c0ffee'.padEnd(40, '0');
    // blobs named by sha256 (LFS) or git blob id, relative links, refs/main: huggingface_hub's snapshot_download layout
    for (const [path, data] of Object.entries(model.files)) {
      const blob = join(root, 'blobs', path.endsWith('.md') || path.endsWith('.json') ? createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex') : sha256(data));
      mkdirSync(dirname(blob), { recursive: true });
      writeFileSync(blob, data);
      const link = join(root, 'snapshots', commit, path);
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync(relative(dirname(link), blob), link);
    }
    mkdirSync(join(root, 'refs'));
    writeFileSync(join(root, 'refs', 'main'), commit);
    const n = hub.requests.length;
    expect(await fetchModel({ ...s, HF_HUB_OFFLINE: true })).toBe(join(root, 'snapshots', commit));
    expect(await fetchModel({ ...s, MODEL_REVISION: commit })).toBe(join(root, 'snapshots', commit));
    expect(since(n)).toEqual([]);
  });

  it('two downloads at once into one cache both succeed with one copy of each file', async () => {
    const s = source();
    const [a, b] = await Promise.all([fetchModel(s), fetchModel(s)]);
    expect(a).toBe(b);
    const blobs = tree(join(repoRoot(s), 'blobs'));
    expect(blobs.filter((f) => /\.(incomplete|tmp)$/.test(f))).toEqual([]);
    for (const path of tree(a)) expect(readFileSync(join(a, path)).equals(model.files[path]!)).toBe(true);
  });

  it('fetches only the embedding tensor from the base checkpoint when the repo ships no table', async () => {
    const s = source({ MODEL: bare.id });
    const { repo: base, table } = checkpoint;
    const shardName = 'model-00002-of-00002.safetensors';
    hub.faults.cutOnce.add(`${base.id}/${shardName}`);
    const n = hub.requests.length;
    const snapshot = await fetchModel(s);
    const loaded = readEmbeddingTable(join(snapshot, 'embed_tokens.safetensors'));
    expect(loaded).toMatchObject({ dtype: 'bfloat16', rows: 151936, cols: 16 });
    expect(Buffer.from(loaded.buffer).equals(table)).toBe(true);
    const file = readFileSync(join(snapshot, 'embed_tokens.safetensors'));
    const header = JSON.parse(file.subarray(8, 8 + Number(file.readBigUInt64LE(0))).toString()) as Record<string, unknown>;
    expect(header.__metadata__).toEqual({ source_repo: base.id, source_revision: base.commit, source_file: shardName, source_tensor: 'thinker.model.embed_tokens.weight' });
    // from the shard only ranges were read: its length, its header, the tensor (cut once, then resumed)
    const shard = since(n).filter((r) => r.server === 'cdn' && r.path.includes(sha256(base.files[shardName]!)));
    const start = 8 + Number(base.files[shardName]!.readBigUInt64LE(0)) + 64;
    const end = start + table.length - 1;
    const headerEnd = start - 64 - 1;
    expect(shard.map((r) => r.range)).toEqual([`bytes=0-7`, `bytes=8-${headerEnd}`, `bytes=${start}-${end}`, expect.stringMatching(new RegExp(`^bytes=\\d+-${end}$`))]);
    const resumedAt = Number(/=(\d+)-/.exec(shard[3]!.range!)![1]);
    expect(resumedAt).toBeGreaterThan(start);
    expect(since(n).some((r) => r.path.includes(sha256(base.files['model-00001-of-00002.safetensors']!)))).toBe(false);
    // fetched once: the next start finds it in the snapshot
    const m = hub.requests.length;
    await fetchModel(s);
    expect(since(m).filter((r) => r.path.includes(base.id))).toEqual([]);
  });

  it('refuses a base checkpoint whose table does not fit, before fetching it, in one line', async () => {
    const n = hub.requests.length;
    await expect(fetchModel(source({ MODEL: bare.id, EMBEDDING_MODEL: narrowBase.id }))).rejects.toThrow(
      `${narrowBase.id}@${narrowBase.commit.slice(0, 12)}/model.safetensors: thinker.model.embed_tokens.weight has rows of width 8; the decoders take 16; set EMBEDDING_MODEL to the model's base checkpoint`,
    );
    // only its header was read (a single model.safetensors, found without an index)
    expect(since(n).filter((r) => r.server === 'cdn' && r.path.includes(sha256(narrowBase.files['model.safetensors']!))).map((r) => r.range)).toEqual([
      'bytes=0-7',
      expect.stringMatching(/^bytes=8-\d+$/),
    ]);
    await expect(fetchModel(source({ MODEL: bare.id, EMBEDDING_MODEL: indexWithoutTable.id }))).rejects.toThrow(
      `${indexWithoutTable.id}@main: model.safetensors.index.json lists no thinker.model.embed_tokens.weight; set EMBEDDING_MODEL to the base checkpoint`,
    );
    await expect(fetchModel(source({ MODEL: bare.id, EMBEDDING_MODEL: 'acme/wrong-base' }))).rejects.toThrow(/acme\/wrong-base not found/);
  });
});
