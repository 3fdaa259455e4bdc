import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InferenceSession, Tensor } from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { readDecoderContract } from '../../src/asr/contract.js';
import { float16Table } from '../../src/asr/half.js';
import { AsrEngine } from '../../src/asr/engine.js';
import { leanDecoderGraph, rewriteGraph, type LeanGraph } from '../../src/asr/lean-graph.js';
import { GRAPH_NODE, readModel, readNode } from '../../src/asr/onnx-model.js';
import { FIXTURE_FILES } from '../../tools/fixture/model-dir.js';
import { TOY_DIMS, writeFullSizeModel } from '../../tools/full-size/model-dir.js';
import { GraphBuilder } from '../../tools/onnx-graph.js';
import { symmetric } from '../../tools/random.js';
import { fixtureModel } from '../support/fixture-models.js';
import { asFloat32, feedsFor, relativeRms } from '../support/onnx-feeds.js';

const scratch = mkdtempSync(join(tmpdir(), 'lean-graph-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => join(scratch, `cache-${dirs++}`);

/** Every file under dir with its bytes and modification time. */
function snapshot(dir: string): string {
  const hash = createHash('sha256');
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true }).sort((a, b) => join(a.parentPath, a.name).localeCompare(join(b.parentPath, b.name)))) {
    const path = join(entry.parentPath, entry.name);
    hash.update(path).update(String(statSync(path).mtimeMs));
    if (entry.isFile()) hash.update(readFileSync(path));
  }
  return hash.digest('hex');
}

const VOCAB = 1000;
const HIDDEN = 8;

/**
 * A decoder whose logits are real numbers (fp16, every position): the greedy id depends on every input value,
 * so an argmax of the wrong position or row shows. Optionally without its logits output.
 */
function writeRealLogitsDecoder(dir: string, role: 'prefill' | 'step', withLogits = true): string {
  const g = new GraphBuilder(`real_${role}`);
  const random = symmetric(7);
  const x = g.input('inputs_embeds', 'float32', ['batch', 'sequence', HIDDEN]);
  g.input('attention_mask', 'int64', ['batch', 'total']);
  g.input('position_ids', 'int64', ['batch', 'sequence']);
  const kv = g.op('Cast', [g.op('Transpose', [g.op('Reshape', [x, g.i64([0, 0, 2, 4])])], { perm: [0, 2, 1, 3] })], { to: 10 });
  for (const part of ['key', 'value']) {
    const present = role === 'step' ? g.op('Concat', [g.input(`past_key_values.0.${part}`, 'float16', ['batch', 2, 'past', 4]), kv], { axis: 2 }) : kv;
    g.output(`present.0.${part}`, 'float16', ['batch', 2, 'total', 4], present);
  }
  if (withLogits) {
    const weights = g.f32(Float32Array.from({ length: HIDDEN * VOCAB }, random), [HIDDEN, VOCAB]);
    // through a Cast and an Identity, both of which the lm_head's walk must pass
    g.output('logits', 'float16', ['batch', 'sequence', VOCAB], g.op('Identity', [g.op('Cast', [g.op('MatMul', [x, weights])], { to: 10 })]));
  }
  const { model, externalData } = g.build(`real_${role}.onnx.data`);
  const file = join(dir, `real_${role}.onnx`);
  writeFileSync(file, model);
  writeFileSync(join(dir, `real_${role}.onnx.data`), externalData);
  return file;
}

/** argmax of each row's last position, as the engine computes it from logits [B, S, V] */
function lastArgmax(logits: Tensor): number[] {
  const [batch, seq, vocab] = logits.dims as [number, number, number];
  const values = logits.type === 'float16' ? Float32Array.from(logits.data as Uint16Array, (h) => float16Table()[h]!) : (logits.data as Float32Array);
  return Array.from({ length: batch }, (_, b) => {
    const offset = (b * seq + seq - 1) * vocab;
    let best = 0;
    for (let i = 1; i < vocab; i++) if (values[offset + i]! > values[offset + best]!) best = i;
    return best;
  });
}

async function open(lean: LeanGraph): Promise<InferenceSession> {
  return InferenceSession.create(lean.file, { logSeverityLevel: 3, ...lean.sessionOptions });
}

/** Runs the original and the lean graph on the same feeds and returns (argmax of the logits, greedy_ids). */
async function compare(file: string, role: 'prefill' | 'step', batch: number, cacheDir: string) {
  const lean = await leanDecoderGraph(file, role, { cacheDir });
  expect(lean.reason).toBeUndefined();
  expect(lean.rewritten).toBe(true);
  const [before, after] = await Promise.all([InferenceSession.create(file, { logSeverityLevel: 3 }), open(lean)]);
  try {
    expect(after.outputNames).toContain('greedy_ids');
    expect(after.outputNames.some((n) => /logit/.test(n))).toBe(false);
    const contract = readDecoderContract(
      {
        file: lean.file,
        inputs: after.inputMetadata.map((m) => ({ name: m.name, type: m.isTensor ? m.type : '?', shape: m.isTensor ? m.shape : [] })),
        outputs: after.outputMetadata.map((m) => ({ name: m.name, type: m.isTensor ? m.type : '?', shape: m.isTensor ? m.shape : [] })),
      },
      role,
    );
    expect(contract.greedyIds).toEqual({ name: 'greedy_ids' });
    const results: { expected: number[]; got: number[] }[] = [];
    for (const [seq, past] of role === 'prefill' ? [[5, 0], [1, 0]] : [[1, 4], [1, 9]]) {
      const feeds = feedsFor(before, batch, seq!, past!, 100 * seq! + past!);
      const logits = (await before.run(feeds)).logits as Tensor;
      const ids = (await after.run(feeds)).greedy_ids as Tensor;
      expect(ids.type).toBe('int64');
      expect(ids.dims).toEqual([batch]);
      results.push({ expected: lastArgmax(logits), got: Array.from(ids.data as BigInt64Array, Number) });
    }
    return results;
  } finally {
    await Promise.all([before.release(), after.release()]);
  }
}

describe('lean decoder graphs', () => {
  it('return exactly the argmax of the last position of fp16 logits, per row, on a graph with real-valued logits', async () => {
    const dir = mkdtempSync(join(scratch, 'real-'));
    for (const role of ['prefill', 'step'] as const) {
      const file = writeRealLogitsDecoder(dir, role);
      const before = snapshot(dir);
      const results = await compare(file, role, 3, freshDir());
      for (const { expected, got } of results) expect(got).toEqual(expected);
      // Rows see different inputs, so their ids differ: a broadcast of one row's id would fail above.
      expect(new Set(results.flatMap((r) => r.expected)).size).toBeGreaterThan(2);
      expect(snapshot(dir)).toBe(before);
    }
    // The prefill's logits cover every position: the lean prefill projects only the last one (lm_head moved
    // behind the Gather), so the original full-width MatMul is gone.
    const lean = await leanDecoderGraph(join(dir, 'real_prefill.onnx'), 'prefill', { cacheDir: freshDir() });
    const nodes = readModel(readFileSync(lean.file)).graph.filter((f) => f.n === GRAPH_NODE).map(readNode);
    const matmuls = nodes.filter((n) => n.opType === 'MatMul');
    expect(matmuls).toHaveLength(1);
    expect(nodes.find((n) => n.outputs[0] === matmuls[0]!.inputs[0])).toMatchObject({ opType: 'Gather', inputs: ['inputs_embeds', expect.any(String)] });
  });

  // input-ids scatters one clip's audio rows inside its prefill graph, so that variant runs one row.
  it.each([
    ['default', 2],
    ['fp16-kv', 2],
    ['input-ids', 1],
  ] as const)(
    'on the generated %s model (batch %i): prefill and step ids equal the logits argmax; the model dir is untouched',
    async (variant, batch) => {
      const model = fixtureModel(variant);
      const before = snapshot(model);
      for (const role of ['prefill', 'step'] as const) {
        const results = await compare(join(model, 'onnx', `decoder_${role}_int4.onnx`), role, batch, freshDir());
        for (const { expected, got } of results) expect(got).toEqual(expected);
      }
      expect(snapshot(model)).toBe(before);
    },
  );

  it('load from a Hugging Face cache snapshot, whose files are links to content-named blobs', async () => {
    // onnxruntime follows the data file's link and refuses a path that leaves the folder it is given.
    const hub = mkdtempSync(join(scratch, 'hub-'));
    const source = join(fixtureModel('default'), 'onnx');
    mkdirSync(join(hub, 'blobs'));
    mkdirSync(join(hub, 'snapshots', 'rev', 'onnx'), { recursive: true });
    readdirSync(source).forEach((name, i) => {
      copyFileSync(join(source, name), join(hub, 'blobs', `blob${i}`));
      symlinkSync(join('..', '..', '..', 'blobs', `blob${i}`), join(hub, 'snapshots', 'rev', 'onnx', name));
    });
    const before = snapshot(hub);
    for (const role of ['prefill', 'step'] as const) {
      const results = await compare(join(hub, 'snapshots', 'rev', 'onnx', `decoder_${role}_int4.onnx`), role, 2, freshDir());
      for (const { expected, got } of results) expect(got).toEqual(expected);
    }
    expect(snapshot(hub)).toBe(before);
  });

  it('keeps the original, with the reason, when a graph cannot be rewritten', async () => {
    const dir = mkdtempSync(join(scratch, 'bad-'));
    const noLogits = writeRealLogitsDecoder(dir, 'step', false);
    const cacheDir = freshDir();
    const kept = await leanDecoderGraph(noLogits, 'step', { cacheDir });
    expect(kept).toMatchObject({ file: noLogits, rewritten: false, sessionOptions: {} });
    expect(kept.reason).toMatch(/logits output/);

    const garbage = join(dir, 'garbage.onnx');
    writeFileSync(garbage, 'not a model at all');
    expect((await leanDecoderGraph(garbage, 'step', { cacheDir })).reason).toMatch(/not an ONNX model/);
    expect((await leanDecoderGraph(join(dir, 'missing.onnx'), 'step', { cacheDir })).reason).toMatch(/cannot read it/);

    // A second rewrite of a lean graph finds greedy_ids already there.
    const lean = await leanDecoderGraph(writeRealLogitsDecoder(dir, 'step'), 'step', { cacheDir });
    expect((await leanDecoderGraph(lean.file, 'step', { cacheDir })).reason).toMatch(/already returns greedy_ids/);

    // A cache directory that cannot be created (its parent is a file).
    const blocked = await leanDecoderGraph(join(dir, 'real_step.onnx'), 'step', { cacheDir: join(garbage, 'cache') });
    expect(blocked).toMatchObject({ file: join(dir, 'real_step.onnx'), rewritten: false });
    expect(blocked.reason).toMatch(/cache directory .* is not usable/);
    expect(readdirSync(cacheDir).filter((n) => !n.endsWith('.lean.onnx'))).toEqual([]);
  });

  it('keeps the original when the cache directory is not private: open to others, or a link', async () => {
    const file = writeRealLogitsDecoder(mkdtempSync(join(scratch, 'private-')), 'step');
    // The default directory in the shared tmpdir, created first by someone else with mode 0777.
    const env = { TMPDIR: process.env.TMPDIR, XDG_CACHE_HOME: process.env.XDG_CACHE_HOME };
    const sharedTmp = mkdtempSync(join(scratch, 'tmp-'));
    process.env.TMPDIR = sharedTmp;
    delete process.env.XDG_CACHE_HOME;
    try {
      const planted = join(sharedTmp, `mega-asr-graphs-${process.getuid!()}`);
      mkdirSync(planted);
      chmodSync(planted, 0o777);
      const kept = await leanDecoderGraph(file, 'step');
      expect(kept).toMatchObject({ file, rewritten: false, sessionOptions: {} });
      expect(kept.reason).toBe(`cache directory ${planted} is not usable: its mode is 0777: other users could place a graph there (chmod 700 it, or remove it)`);
      expect(readdirSync(planted)).toEqual([]);
      // group access is refused too; the owner alone is fine
      chmodSync(planted, 0o750);
      expect((await leanDecoderGraph(file, 'step')).reason).toMatch(/its mode is 0750/);
      chmodSync(planted, 0o700);
      const lean = await leanDecoderGraph(file, 'step');
      expect(lean).toMatchObject({ rewritten: true });
      expect(lean.file.startsWith(`${planted}/`)).toBe(true);
    } finally {
      for (const [name, value] of Object.entries(env)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }

    const target = mkdtempSync(join(scratch, 'target-'));
    const link = join(scratch, `link-${dirs++}`);
    symlinkSync(target, link);
    const linked = await leanDecoderGraph(file, 'step', { cacheDir: link });
    expect(linked).toMatchObject({ file, rewritten: false });
    expect(linked.reason).toMatch(/is not usable: it is a symbolic link/);
    expect(readdirSync(target)).toEqual([]);
  });

  it('concurrent calls leave one complete graph that is then reused', async () => {
    const file = join(fixtureModel('default'), 'onnx', 'decoder_step_int4.onnx');
    const cacheDir = freshDir();
    const leans = await Promise.all(Array.from({ length: 8 }, () => leanDecoderGraph(file, 'step', { cacheDir })));
    expect(new Set(leans.map((l) => l.file)).size).toBe(1);
    expect(readdirSync(cacheDir)).toEqual([leans[0]!.file.split('/').pop()]);
    const written = statSync(leans[0]!.file).mtimeMs;
    const again = await leanDecoderGraph(file, 'step', { cacheDir });
    expect(again.file).toBe(leans[0]!.file);
    expect(statSync(again.file).mtimeMs).toBe(written);
    const session = await open(again);
    expect(session.outputNames).toContain('greedy_ids');
    await session.release();
  });
});

describe('int8 activations for 4-bit matmuls', () => {
  // The full-size stand-in's topology at toy widths: every Linear a 4-bit MatMulNBits, as in the real export.
  const model = mkdtempSync(join(scratch, 'toy-full-size-'));
  writeFullSizeModel(model, { batch: 'dynamic', kv: 'float16', seed: 11, dims: TOY_DIMS });
  const file = (role: keyof typeof FIXTURE_FILES) => join(model, FIXTURE_FILES[role]);
  const levels = (graph: string) =>
    readModel(readFileSync(graph))
      .graph.filter((f) => f.n === GRAPH_NODE)
      .map(readNode)
      .filter((n) => n.opType === 'MatMulNBits')
      .map((n) => n.intAttributes.get('accuracy_level') ?? 0);

  it('sets accuracy_level 4 on every 4-bit MatMulNBits, alone or with the greedy rewrite, leaving the model dir untouched', async () => {
    const before = snapshot(model);
    const exported = levels(file('step'));
    // 2 layers x 7 Linears and the lm_head, none with int8 activations as written
    expect(exported).toEqual(Array.from({ length: 15 }, () => 0));
    const int8 = await rewriteGraph(file('step'), { int8Matmuls: true }, { cacheDir: freshDir() });
    expect(int8).toMatchObject({ rewritten: true, greedy: false, int8Matmuls: 15 });
    expect(levels(int8.file)).toEqual(Array.from({ length: 15 }, () => 4));
    // The greedy prefill re-creates the lm_head for the last position: that copy takes int8 activations too.
    const both = await rewriteGraph(file('prefill'), { greedy: 'prefill', int8Matmuls: true }, { cacheDir: freshDir() });
    expect(both).toMatchObject({ rewritten: true, greedy: true, int8Matmuls: 15 });
    expect(levels(both.file)).toEqual(Array.from({ length: 15 }, () => 4));
    const encoder = await rewriteGraph(file('encoder'), { int8Matmuls: true }, { cacheDir: freshDir() });
    // 2 layers x 6 Linears, conv_out and the two-layer projection
    expect(encoder.int8Matmuls).toBe(2 * 6 + 3);
    // Already int8: nothing left to do, so the graph is kept as it is.
    const again = await rewriteGraph(int8.file, { int8Matmuls: true }, { cacheDir: freshDir() });
    expect(again).toMatchObject({ file: int8.file, rewritten: false, int8Matmuls: 0 });
    expect(again.reason).toMatch(/no 4-bit matmul/);
    // A graph of plain MatMuls (the small fixture) has none either.
    const plain = await rewriteGraph(join(fixtureModel('default'), FIXTURE_FILES.step), { int8Matmuls: true }, { cacheDir: freshDir() });
    expect(plain.rewritten).toBe(false);
    expect(snapshot(model)).toBe(before);
  });

  it('computes what the fp32-activation graph computes, within int8 rounding: encoder rows and decoder logits', async () => {
    for (const role of ['encoder', 'prefill'] as const) {
      const int8 = await rewriteGraph(file(role), { int8Matmuls: true }, { cacheDir: freshDir() });
      const [exact, fast] = await Promise.all([InferenceSession.create(file(role), { logSeverityLevel: 3 }), open(int8)]);
      try {
        const feeds =
          role === 'encoder'
            ? { [exact.inputNames[0]!]: new Tensor('float32', Float32Array.from({ length: 128 * 200 }, (_, i) => Math.sin(i / 7)), [1, 128, 200]) }
            : feedsFor(exact, 2, 6, 0, 5);
        const output = exact.outputNames[0]!;
        const [a, b] = [asFloat32((await fast.run(feeds))[output] as Tensor), asFloat32((await exact.run(feeds))[output] as Tensor)];
        expect(a.length).toBe(b.length);
        const error = relativeRms(a, b);
        // int8 activations with a scale per block of 32 round each input by at most 1/254 of its block's range
        expect(error).toBeGreaterThan(0);
        expect(error).toBeLessThan(0.05);
      } finally {
        await Promise.all([exact.release(), fast.release()]);
      }
    }
  });

  it('the engine loads them on the CPU by default (all three graphs), and the exported ones when told not to', async () => {
    const saved = process.env.XDG_CACHE_HOME;
    const cache = mkdtempSync(join(scratch, 'xdg-'));
    process.env.XDG_CACHE_HOME = cache;
    const graphs = join(cache, 'mega-asr', 'graphs');
    try {
      const engine = await AsrEngine.load({ modelDir: model, device: 'cpu', intraOpThreads: 1 });
      await engine.warmUp();
      await engine.release();
      const written = readdirSync(graphs).sort();
      expect(written.map((f) => f.split('.')[0])).toEqual(['audio_encoder_int4', 'decoder_prefill_int4', 'decoder_step_int4']);
      for (const f of written) expect(new Set(levels(join(graphs, f)))).toEqual(new Set([4]));
      rmSync(graphs, { recursive: true });
      const exported = await AsrEngine.load({ modelDir: model, device: 'cpu', intraOpThreads: 1, cpuInt8Matmuls: false, leanGraphs: false });
      await exported.warmUp();
      await exported.release();
      expect(() => readdirSync(graphs)).toThrow(/ENOENT/);
    } finally {
      if (saved === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved;
    }
  });
});
