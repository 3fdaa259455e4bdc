import { InferenceSession, Tensor } from 'onnxruntime-node';
import type { FloatType } from '../contract.js';
import { hostBytes, int64 } from '../decoder-io.js';
import { GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_NODE, GRAPH_OUTPUT, int64Initializer, node, standaloneModel, valueInfo } from '../onnx-model.js';
import { bytesField } from '../onnx-proto.js';

/*
 * The device-side work of the webgpu backend that is not the model: small graphs built at load time and run on the
 * same WebGPU device, with every output left there (gpu-buffer tensors). A cache is only ever moved by these, so
 * its bytes never cross to the host: rows are selected and trimmed (Gather, Slice), left-padded and appended (Pad,
 * Concat), and each step's embeddings and attention mask are made from a few ids and offsets (Gather from the
 * table uploaded once, Range >= start).
 */

const OPSET = 17;
/** Slice to the end of an axis: onnxruntime clamps the end to the axis length */
const TO_THE_END = 2 ** 31 - 1;

export interface DeviceOpsOptions {
  /** tensors per cache (a key and a value per layer) */
  kvCount: number;
  kvType: FloatType;
  /** the step graph's inputs_embeds type, when it takes embeddings rather than ids */
  embedsType?: FloatType;
  /** session options for the WebGPU provider (the engine's, so every session shares its device) */
  session: InferenceSession.SessionOptions;
}

const io = (field: number, name: string, type: string, shape: (number | string)[]) => bytesField(field, valueInfo(name, type, shape));
const op = (type: string, out: string, inputs: string[], attributes: Record<string, number> = {}) =>
  bytesField(GRAPH_NODE, node(type, out, inputs, [out], attributes));
const kvShape = (batch: number | string, width: string) => [batch, 'heads', width, 'head_dim'];

/** rows kept (Gather on the batch axis), then their first `start` columns dropped (Slice on the width axis) */
function selectGraph(o: DeviceOpsOptions): Uint8Array {
  const g: Uint8Array[] = [
    io(GRAPH_INPUT, 'rows', 'int64', ['kept']),
    io(GRAPH_INPUT, 'start', 'int64', [1]),
    bytesField(GRAPH_INITIALIZER, int64Initializer('end', [TO_THE_END], [1])),
    bytesField(GRAPH_INITIALIZER, int64Initializer('width_axis', [2], [1])),
  ];
  for (let i = 0; i < o.kvCount; i++) {
    g.push(
      io(GRAPH_INPUT, `kv${i}`, o.kvType, kvShape('batch', 'width')),
      op('Gather', `kept${i}`, [`kv${i}`, 'rows'], { axis: 0 }),
      op('Slice', `out${i}`, [`kept${i}`, 'start', 'end', 'width_axis']),
      io(GRAPH_OUTPUT, `out${i}`, o.kvType, kvShape('kept', 'new_width')),
    );
  }
  return standaloneModel('select', g, OPSET);
}

/** the batch and one more row, each left-padded with zeros as its pads say, the row appended after the batch */
function appendGraph(o: DeviceOpsOptions): Uint8Array {
  const g: Uint8Array[] = [io(GRAPH_INPUT, 'batch_pads', 'int64', [8]), io(GRAPH_INPUT, 'row_pads', 'int64', [8])];
  for (let i = 0; i < o.kvCount; i++) {
    g.push(
      io(GRAPH_INPUT, `batch${i}`, o.kvType, kvShape('batch', 'width')),
      io(GRAPH_INPUT, `row${i}`, o.kvType, kvShape(1, 'row_width')),
      op('Pad', `batch_padded${i}`, [`batch${i}`, 'batch_pads']),
      op('Pad', `row_padded${i}`, [`row${i}`, 'row_pads']),
      op('Concat', `out${i}`, [`batch_padded${i}`, `row_padded${i}`], { axis: 0 }),
      io(GRAPH_OUTPUT, `out${i}`, o.kvType, kvShape('rows', 'new_width')),
    );
  }
  return standaloneModel('append', g, OPSET);
}

/**
 * A step's inputs besides the cache: the attention mask [B, columns] (1 from each row's first column of its own on)
 * and, for a graph that takes embeddings, the rows of the table for the ids fed.
 */
function stepInputsGraph(o: DeviceOpsOptions): Uint8Array {
  const g: Uint8Array[] = [
    io(GRAPH_INPUT, 'starts', 'int64', ['batch', 1]),
    io(GRAPH_INPUT, 'columns', 'int64', []),
    bytesField(GRAPH_INITIALIZER, int64Initializer('zero', [0], [])),
    bytesField(GRAPH_INITIALIZER, int64Initializer('one', [1], [])),
    op('Range', 'column', ['zero', 'columns', 'one']),
    op('GreaterOrEqual', 'attended', ['column', 'starts']),
    op('Cast', 'mask', ['attended'], { to: 7 }),
    io(GRAPH_OUTPUT, 'mask', 'int64', ['batch', 'columns']),
  ];
  if (o.embedsType) {
    g.push(
      io(GRAPH_INPUT, 'ids', 'int64', ['batch', 1]),
      io(GRAPH_INPUT, 'table', o.embedsType, ['vocab', 'hidden']),
      op('Gather', 'embeds', ['table', 'ids'], { axis: 0 }),
      io(GRAPH_OUTPUT, 'embeds', o.embedsType, ['batch', 1, 'hidden']),
    );
  }
  return standaloneModel('step_inputs', g, OPSET);
}

/** a host tensor copied to the device once (the embedding table) */
function uploadGraph(type: string): Uint8Array {
  return standaloneModel('upload', [io(GRAPH_INPUT, 'host', type, ['rows', 'cols']), op('Identity', 'device', ['host']), io(GRAPH_OUTPUT, 'device', type, ['rows', 'cols'])], OPSET);
}

/** Pad's pads for a [B, heads, width, headDim] tensor: `left` zero columns before the width axis */
const leftPads = (left: number) => int64([0, 0, left, 0, 0, 0, 0, 0], [8]);

export class DeviceOps {
  private readonly uploadSessions: InferenceSession[] = [];

  private constructor(
    private readonly o: DeviceOpsOptions,
    private readonly selectSession: InferenceSession,
    private readonly appendSession: InferenceSession,
    private readonly inputsSession: InferenceSession,
  ) {}

  static async create(o: DeviceOpsOptions): Promise<DeviceOps> {
    const options: InferenceSession.SessionOptions = { ...o.session, preferredOutputLocation: 'gpu-buffer' };
    const opened: InferenceSession[] = [];
    try {
      for (const graph of [selectGraph(o), appendGraph(o), stepInputsGraph(o)]) opened.push(await InferenceSession.create(graph, options));
    } catch (err) {
      await Promise.all(opened.map((s) => s.release()));
      throw err;
    }
    return new DeviceOps(o, opened[0]!, opened[1]!, opened[2]!);
  }

  /**
   * A host tensor [rows, cols] as a device tensor (one copy; the table, at load). The session that made it stays
   * open until release(): disposing a device tensor after its session is gone crashes onnxruntime 1.30.
   */
  async upload(host: Tensor): Promise<Tensor> {
    const session = await InferenceSession.create(uploadGraph(host.type), { ...this.o.session, preferredOutputLocation: 'gpu-buffer' });
    this.uploadSessions.push(session);
    return (await session.run({ host })).device!;
  }

  /** Rows `rows` of a batch cache, in that order, without their first `start` columns. New tensors; the input stays. */
  async select(kv: readonly Tensor[], rows: readonly number[], start: number): Promise<Tensor[]> {
    const feeds: Record<string, Tensor> = { rows: int64(rows, [rows.length]), start: int64([start], [1]) };
    kv.forEach((t, i) => (feeds[`kv${i}`] = t));
    const out = await this.selectSession.run(feeds);
    return kv.map((_, i) => out[`out${i}`]!);
  }

  /** The batch left-padded by `batchPad` columns, then `row` left-padded by `rowPad` appended as its last row. */
  async append(batch: readonly Tensor[], batchPad: number, row: readonly Tensor[], rowPad: number): Promise<Tensor[]> {
    const feeds: Record<string, Tensor> = { batch_pads: leftPads(batchPad), row_pads: leftPads(rowPad) };
    batch.forEach((t, i) => (feeds[`batch${i}`] = t));
    row.forEach((t, i) => (feeds[`row${i}`] = t));
    const out = await this.appendSession.run(feeds);
    return batch.map((_, i) => out[`out${i}`]!);
  }

  /**
   * The mask for a step over `columns` columns (the cache plus the token fed), row r attending from starts[r] on,
   * and the embeddings of `ids` from the device table when the step takes embeddings; `sent`: the bytes its feeds
   * took from the host (the table is on the device already).
   */
  async stepInputs(
    starts: readonly number[],
    columns: number,
    embed?: { ids: readonly number[]; table: Tensor },
  ): Promise<{ mask: Tensor; embeds?: Tensor; sent: number }> {
    const feeds: Record<string, Tensor> = { starts: int64(starts, [starts.length, 1]), columns: int64([columns], []) };
    if (embed) {
      feeds.ids = int64(embed.ids, [embed.ids.length, 1]);
      feeds.table = embed.table;
    }
    const out = await this.inputsSession.run(feeds);
    return { mask: out.mask!, ...(out.embeds ? { embeds: out.embeds } : {}), sent: hostBytes(Object.values(feeds)) };
  }

  /** Closes the graphs' sessions: every tensor they made must have been disposed before. */
  async release(): Promise<void> {
    await Promise.all([this.selectSession, this.appendSession, this.inputsSession, ...this.uploadSessions].map((s) => s.release()));
  }
}
