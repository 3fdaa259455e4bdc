import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import type { ModelSource } from '../../src/hub/ensure-model.js';

/**
 * A Hugging Face hub on 127.0.0.1 with the real API's shapes, as far as @huggingface/hub and our downloader use
 * them: model info (sha, siblings with LFS metadata), the tree API, `resolve` answering LFS
 * files with a 302 to a CDN on another origin (X-Repo-Commit, ETag, X-Linked-Size, X-Linked-Etag) and small
 * files with a 307 to /api/resolve-cache/..., byte ranges (206 + Content-Range), X-Error-Code on errors, and
 * switches for faults.
 */
export interface FakeRepo {
  id: string;
  commit: string;
  files: Record<string, Buffer>;
  /** requests without the hub's token get 401 GatedRepo */
  gated?: boolean;
}

export interface FakeRequest {
  server: 'hub' | 'cdn';
  path: string;
  range: string | undefined;
  authorization: string | undefined;
}

export interface Faults {
  /** `repo/path`s whose next transfer over 1 KiB stops after half of its bytes (the connection is destroyed), once each */
  cutOnce: Set<string>;
  /** like cutOnce, but the connection stays open and silent (a stalled transfer), once each */
  stallOnce: Set<string>;
  /** `repo/path`s whose next Range request the CDN answers 403, as S3 does when a signed link has expired, once each */
  forbidRangeOnce: Set<string>;
  /** `repo/path`s served with one byte changed */
  corrupt: Set<string>;
  /** answers 200 with the whole file to a Range request, as a server without range support does */
  ignoreRange: Set<string>;
  /** the API (model info, tree) answers 503, as during an outage */
  apiDown?: boolean;
  /** slows every transfer to this rate */
  bytesPerSecond?: number;
}

export interface FakeHub {
  url: string;
  token: string;
  requests: FakeRequest[];
  faults: Faults;
  close(): Promise<void>;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitBlobId = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
/** As on the hub: weights are LFS files, small text is kept in git. */
const isLfs = (path: string, b: Buffer) => /\.(onnx|data|safetensors|npy)$/.test(path) || b.length >= 1024 * 1024;

export function fakeCommit(seed: string): string {
  return createHash('sha1').update(seed).digest('hex');
}

/** Every file under `dir`, keyed by its repo path. */
function repoFilesFromDir(dir: string, omit: (path: string) => boolean = () => false): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else {
        const path = relative(dir, full).split('\\').join('/');
        if (!omit(path)) files[path] = readFileSync(full);
      }
    }
  };
  walk(dir);
  return files;
}

export interface TensorSpec {
  name: string;
  dtype: 'F32' | 'BF16' | 'F16';
  shape: number[];
  data: Buffer;
}

/** A safetensors file as torch writes one: u64 header length, JSON header (padded), then the tensors' bytes. */
export function safetensorsFile(tensors: TensorSpec[]): Buffer {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, Buffer.from(json), ...tensors.map((t) => t.data)]);
}

function entry(path: string, data: Buffer) {
  const lfs = isLfs(path, data) ? { oid: sha256(data), size: data.length, pointerSize: 134 } : undefined;
  return { type: 'file', oid: gitBlobId(data), size: data.length, path, ...(lfs ? { lfs } : {}) };
}

export async function startFakeHub(repos: FakeRepo[]): Promise<FakeHub> {
  const token = 'hf_fake_token_for_tests';
  const requests: FakeRequest[] = [];
  const faults: Faults = { cutOnce: new Set(), stallOnce: new Set(), forbidRangeOnce: new Set(), corrupt: new Set(), ignoreRange: new Set() };
  const byId = new Map(repos.map((r) => [r.id, r]));

  const record = (server: FakeRequest['server'], req: IncomingMessage) =>
    requests.push({ server, path: req.url ?? '', range: req.headers.range, authorization: req.headers.authorization });

  const error = (res: ServerResponse, status: number, code: string, message: string) => {
    res.writeHead(status, { 'Content-Type': 'application/json', 'X-Error-Code': code, 'X-Error-Message': message });
    res.end(JSON.stringify({ error: message }));
  };

  /** The file's bytes, honouring Range, with the fault switches applied. */
  const sendFile = async (req: IncomingMessage, res: ServerResponse, repo: FakeRepo, path: string, headers: Record<string, string>) => {
    let data = repo.files[path]!;
    const key = `${repo.id}/${path}`;
    if (faults.corrupt.has(key)) {
      data = Buffer.from(data);
      data[data.length >> 1] = data[data.length >> 1]! ^ 0xff;
    }
    let start = 0;
    let end = data.length - 1;
    const range = faults.ignoreRange.has(key) ? null : /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
      if (start >= data.length) {
        res.writeHead(416, { 'Content-Range': `bytes */${data.length}` });
        return res.end();
      }
    }
    const body = data.subarray(start, end + 1);
    res.writeHead(range ? 206 : 200, {
      ...headers,
      'Accept-Ranges': 'bytes',
      'Content-Length': String(body.length),
      'Content-Type': 'application/octet-stream',
      ...(range ? { 'Content-Range': `bytes ${start}-${end}/${data.length}` } : {}),
    });
    const cut = body.length > 1024 && faults.cutOnce.delete(key);
    const stall = body.length > 1024 && !cut && faults.stallOnce.delete(key);
    const stopAt = cut || stall ? body.length >> 1 : body.length;
    const chunk = 64 * 1024;
    for (let at = 0; at < stopAt; at += chunk) {
      const piece = body.subarray(at, Math.min(at + chunk, stopAt));
      if (!res.write(piece)) await new Promise((r) => res.once('drain', r));
      if (faults.bytesPerSecond) await new Promise((r) => setTimeout(r, (piece.length / faults.bytesPerSecond!) * 1000));
      if (res.destroyed) return;
    }
    // a stalled transfer: nothing more is sent and the connection stays open until the client gives up
    if (stall) return;
    if (cut) {
      // let the bytes reach the client before the connection drops, as when a network path dies mid-transfer
      await new Promise((r) => setTimeout(r, 50));
      return void res.socket?.destroy();
    }
    res.end();
  };

  const cdn = createServer((req, res) => {
    record('cdn', req);
    const url = new URL(req.url ?? '/', 'http://cdn');
    const oid = /^\/repos\/([0-9a-f]{64})$/.exec(url.pathname)?.[1];
    const repo = byId.get(url.searchParams.get('repo') ?? '');
    const path = url.searchParams.get('path') ?? '';
    if (!oid || !repo?.files[path] || sha256(repo.files[path]) !== oid) return error(res, 404, 'EntryNotFound', 'no such object');
    if (req.headers.range && faults.forbidRangeOnce.delete(`${repo.id}/${path}`)) {
      res.writeHead(403, { 'Content-Type': 'application/xml' });
      return res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
    }
    void sendFile(req, res, repo, path, { ETag: `"${oid}"` });
  });

  const hub = createServer((req, res) => {
    record('hub', req);
    const url = new URL(req.url ?? '/', 'http://hub');
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)$/.exec(url.pathname);
    const cached = /^\/api\/resolve-cache\/models\/([^/]+\/[^/]+)\/([^/]+)\/(.+)$/.exec(url.pathname);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const route = api ?? (cached ? [cached[0], cached[1], 'resolve-cache', cached[2], cached[3]] : resolve ? [resolve[0], resolve[1], 'resolve', resolve[2], resolve[3]] : null);
    if (!route) return error(res, 404, 'NotFound', 'not found');
    const [, id, kind, rawRev, rawPath] = route;
    if (faults.apiDown && (kind === 'revision' || kind === 'tree')) return error(res, 503, 'ServiceUnavailable', 'The hub is down for maintenance');
    const repo = byId.get(id!);
    const authorized = req.headers.authorization === `Bearer ${token}`;
    // as the real hub does, a token it does not know is refused whatever the repo
    if (req.headers.authorization && !authorized) return error(res, 401, 'Unauthorized', 'Invalid credentials in Authorization header');
    if (!repo) return req.headers.authorization ? error(res, 404, 'RepoNotFound', 'Repository not found') : error(res, 401, 'RepoNotFound', 'Repository not found');
    // As on the real hub, a gated repo's metadata and file list are public; its files are not.
    if (repo.gated && !authorized && (kind === 'resolve' || kind === 'resolve-cache')) {
      return error(res, 401, 'GatedRepo', `Access to model ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
    }
    const revision = decodeURIComponent(rawRev!);
    // `main` and the commit itself are the only revisions a repo here has
    if (revision !== 'main' && revision !== repo.commit) return error(res, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
    const json = (body: unknown) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const paths = Object.keys(repo.files).sort();
    switch (kind) {
      case 'revision':
        return json({
          _id: fakeCommit(repo.id).slice(0, 24),
          id: repo.id,
          sha: repo.commit,
          private: false,
          gated: repo.gated ? 'manual' : false,
          disabled: false,
          downloads: 0,
          likes: 0,
          lastModified: '2026-11-30T00:00:00.000Z',
          pipeline_tag: 'automatic-speech-recognition',
          siblings: paths.map((p) => {
            const e = entry(p, repo.files[p]!);
            return { rfilename: p, size: e.size, blobId: e.oid, ...(e.lfs ? { lfs: { sha256: e.lfs.oid, size: e.lfs.size, pointerSize: e.lfs.pointerSize } } : {}) };
          }),
        });
      case 'tree': {
        // as @huggingface/hub's listFiles asks for it: the whole repo (recursive=true), folders listed too
        const dirs = new Set(paths.flatMap((p) => p.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'))));
        return json([...[...dirs].map((d) => ({ type: 'directory', oid: fakeCommit(d), size: 0, path: d })), ...paths.map((p) => entry(p, repo.files[p]!))]);
      }
      default: {
        const path = decodeURIComponent(rawPath!);
        const data = repo.files[path];
        if (!data) return error(res, 404, 'EntryNotFound', `${path} does not exist on "${revision}"`);
        const e = entry(path, data);
        const common = { 'X-Repo-Commit': repo.commit, 'Access-Control-Expose-Headers': 'X-Repo-Commit, X-Linked-Size, X-Linked-Etag, ETag' };
        if (kind === 'resolve-cache') return void sendFile(req, res, repo, path, { ...common, ETag: `"${e.oid}"` });
        if (e.lfs) {
          res.writeHead(302, {
            ...common,
            Location: `${cdnUrl}/repos/${e.lfs.oid}?${new URLSearchParams({ repo: repo.id, path, 'X-Amz-Signature': 'fake' })}`,
            ETag: `"${e.lfs.oid}"`,
            'X-Linked-Etag': `"${e.lfs.oid}"`,
            'X-Linked-Size': String(e.lfs.size),
            'Content-Length': '0',
          });
          return res.end();
        }
        res.writeHead(307, { ...common, Location: `/api/resolve-cache/models/${repo.id}/${repo.commit}/${rawPath}`, ETag: `"${e.oid}"`, 'Content-Length': '0' });
        return res.end();
      }
    }
  });

  const listen = (s: Server) => new Promise<string>((r) => s.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(s.address() as AddressInfo).port}`)));
  const cdnUrl = await listen(cdn);
  const url = await listen(hub);
  const close = (s: Server) => new Promise<void>((r) => {
    s.closeAllConnections();
    s.close(() => r());
  });
  return { url, token, requests, faults, close: async () => void (await Promise.all([close(hub), close(cdn)])) };
}

/** The settings that fetch `model` from this hub into the Hugging Face cache folder `cache`. */
export function hubSource(hub: FakeHub, model: string, cache: string): ModelSource {
  return {
    MODEL: model,
    MODEL_REVISION: 'main',
    EMBEDDING_MODEL: 'Qwen/Qwen3-ASR-1.7B',
    EMBEDDING_REVISION: 'main',
    HF_ENDPOINT: hub.url,
    HF_HUB_OFFLINE: false,
    HF_HUB_CACHE: cache,
  };
}

/** The generated model as a hub repo (optionally without its embedding table) plus the extras a real repo has. */
export function fixtureRepo(modelDir: string, o: { id?: string; withTable?: boolean; gated?: boolean } = {}): FakeRepo {
  const files = repoFilesFromDir(modelDir, (p) => p === 'fixture.json' || (!o.withTable && p.endsWith('.safetensors')));
  files['README.md'] = Buffer.from('---\nlicense: apache-2.0\n---\n# generated model\n');
  // files a real export ships that the engine does not run
  files['onnx/decoder_prefill_fp16.onnx'] = files['onnx/decoder_prefill_int4.onnx']!;
  files['onnx/decoder_prefill_fp16.onnx.data'] = Buffer.alloc(4096, 7);
  const id = o.id ?? 'Reza2kn/mega-asr-onnx';
  return { id, commit: fakeCommit(id), files, ...(o.gated ? { gated: true } : {}) };
}

/** A base checkpoint in two shards; the embedding table sits in the second, after another tensor. */
export function checkpointRepo(modelDir: string, id = 'Qwen/Qwen3-ASR-1.7B'): { repo: FakeRepo; table: Buffer } {
  const file = readFileSync(join(modelDir, 'embed_tokens.safetensors'));
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString()) as Record<string, { shape: number[]; data_offsets: [number, number] }>;
  const t = header['thinker.model.embed_tokens.weight']!;
  const table = file.subarray(8 + headerLength + t.data_offsets[0], 8 + headerLength + t.data_offsets[1]);
  const filler = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
  const shard1 = safetensorsFile([
    { name: 'thinker.audio_tower.conv1.weight', dtype: 'F32', shape: [64, 8], data: filler(64 * 8 * 4, 1) },
    { name: 'thinker.lm_head.weight', dtype: 'BF16', shape: [32, 16], data: filler(32 * 16 * 2, 2) },
  ]);
  const shard2 = safetensorsFile([
    { name: 'thinker.model.norm.weight', dtype: 'F32', shape: [16], data: filler(64, 3) },
    { name: 'thinker.model.embed_tokens.weight', dtype: 'BF16', shape: t.shape, data: Buffer.from(table) },
    { name: 'thinker.model.layers.0.mlp.down_proj.weight', dtype: 'BF16', shape: [16, 64], data: filler(2048, 4) },
  ]);
  const names = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'] as const;
  const index = {
    metadata: { total_size: shard1.length + shard2.length },
    weight_map: {
      'thinker.audio_tower.conv1.weight': names[0],
      'thinker.lm_head.weight': names[0],
      'thinker.model.norm.weight': names[1],
      'thinker.model.embed_tokens.weight': names[1],
      'thinker.model.layers.0.mlp.down_proj.weight': names[1],
    },
  };
  return {
    repo: {
      id,
      commit: fakeCommit(id),
      files: { [names[0]]: shard1, [names[1]]: shard2, 'model.safetensors.index.json': Buffer.from(JSON.stringify(index, null, 2)), 'config.json': Buffer.from('{}') },
    },
    table: Buffer.from(table),
  };
}
