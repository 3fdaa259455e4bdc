import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { bfloat16BitsToFloat32, float16Table, float32ToFloat16Bits } from './half.js';
import { ModelLoadError } from './errors.js';

export type EmbeddingDtype = 'float32' | 'float16' | 'bfloat16';

/**
 * The token embedding table in its stored precision, in a SharedArrayBuffer: loaded once per process and
 * handed to worker threads by reference (structured clone shares a SharedArrayBuffer, never copies it).
 */
export interface SharedEmbeddingTable {
  source: string;
  dtype: EmbeddingDtype;
  rows: number;
  cols: number;
  buffer: SharedArrayBuffer;
}

const BYTES: Record<EmbeddingDtype, number> = { float32: 4, float16: 2, bfloat16: 2 };

interface TensorLocation {
  dtype: EmbeddingDtype;
  shape: number[];
  dataOffset: number;
}

function readBytes(fd: number, position: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  const got = readSync(fd, out, 0, length, position);
  if (got !== length) throw new Error(`unexpected end of file (wanted ${length} bytes at ${position})`);
  return out;
}

const NPY_DTYPES: Record<string, EmbeddingDtype> = { '<f4': 'float32', '<f2': 'float16' };

function locateNpy(fd: number): TensorLocation {
  const head = readBytes(fd, 0, 12);
  if (head.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error('not a .npy file');
  const major = head[6]!;
  const headerLength = major === 1 ? head.readUInt16LE(8) : head.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = readBytes(fd, headerStart, headerLength).toString('latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1] ?? '';
  const dtype = NPY_DTYPES[descr];
  if (!dtype) throw new Error(`unsupported .npy dtype ${descr} (expected <f4 or <f2)`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error('Fortran-ordered .npy is not supported');
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  return { dtype, shape, dataOffset: headerStart + headerLength };
}

const SAFETENSORS_DTYPES: Record<string, EmbeddingDtype> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** Picks the embedding tensor: one named like embed_tokens, else the only 2-D float tensor of a plausible shape. */
function locateSafetensors(fd: number): TensorLocation {
  const headerLength = Number(readBytes(fd, 0, 8).readBigUInt64LE(0));
  if (headerLength > 100 * 1024 * 1024) throw new Error('safetensors header is implausibly large');
  const header = JSON.parse(readBytes(fd, 8, headerLength).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const tensors = Object.entries(header).filter(([name]) => name !== '__metadata__');
  const candidates = tensors.filter(([, t]) => t.shape.length === 2 && SAFETENSORS_DTYPES[t.dtype]);
  const named = candidates.filter(([name]) => /embed_tokens|embed|wte|word_embeddings/i.test(name));
  const chosen = named.length === 1 ? named[0] : candidates.length === 1 ? candidates[0] : undefined;
  if (!chosen) {
    throw new Error(
      `cannot tell which tensor is the embedding table (2-D float tensors: ${candidates.map(([n]) => n).join(', ') || 'none'})`,
    );
  }
  const [, t] = chosen;
  return { dtype: SAFETENSORS_DTYPES[t.dtype]!, shape: t.shape, dataOffset: 8 + headerLength + t.data_offsets[0] };
}

/** Reads the table into shared memory in its stored precision. */
export function readEmbeddingTable(path: string): SharedEmbeddingTable {
  const fd = openSync(path, 'r');
  try {
    let location: TensorLocation;
    try {
      location = path.endsWith('.npy') ? locateNpy(fd) : locateSafetensors(fd);
    } catch (err) {
      throw new ModelLoadError(`${path}: ${(err as Error).message}`);
    }
    const [rows, cols] = location.shape;
    if (location.shape.length !== 2 || !rows || !cols) {
      throw new ModelLoadError(`${path}: expected a 2-D embedding table [vocab, hidden], found shape [${location.shape.join(', ')}]`);
    }
    const byteLength = rows * cols * BYTES[location.dtype];
    const available = statSync(path).size - location.dataOffset;
    if (available < byteLength) {
      throw new ModelLoadError(`${path}: table [${rows}, ${cols}] needs ${byteLength} bytes, file holds ${available}`);
    }
    const buffer = new SharedArrayBuffer(byteLength);
    const view = new Uint8Array(buffer);
    for (let done = 0; done < byteLength; ) {
      done += readSync(fd, view, done, Math.min(byteLength - done, 1 << 26), location.dataOffset + done);
    }
    return { source: path, dtype: location.dtype, rows, cols, buffer };
  } finally {
    closeSync(fd);
  }
}

const perProcess = new Map<string, SharedEmbeddingTable>();

/** One copy per process, whoever asks. */
export function loadEmbeddingTableOnce(path: string): SharedEmbeddingTable {
  let table = perProcess.get(path);
  if (!table) {
    table = readEmbeddingTable(path);
    perProcess.set(path, table);
  }
  return table;
}

/** `.npy` / `.safetensors` files in the model directory and its onnx/ folder, embedding-like names first. */
export function findEmbeddingFiles(modelDir: string): string[] {
  const found: string[] = [];
  for (const dir of [modelDir, join(modelDir, 'onnx')]) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) if (/\.(npy|safetensors)$/.test(name)) found.push(join(dir, name));
  }
  const score = (p: string) => (/embed/i.test(p) ? 0 : 1);
  return found.sort((a, b) => score(a) - score(b) || a.localeCompare(b));
}

/** Row lookup into the element type a decoder's inputs_embeds wants. */
export class EmbeddingLookup {
  private readonly f32?: Float32Array;
  private readonly u16?: Uint16Array;

  constructor(readonly table: SharedEmbeddingTable) {
    if (table.dtype === 'float32') this.f32 = new Float32Array(table.buffer);
    else this.u16 = new Uint16Array(table.buffer);
  }

  get hiddenSize(): number {
    return this.table.cols;
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.table.rows) {
      throw new RangeError(`token id ${id} is outside the embedding table (${this.table.rows} rows)`);
    }
  }

  /** Writes row `id` as float32 values at `target[offset..offset+cols)`. */
  rowToFloat32(id: number, target: Float32Array, offset: number): void {
    this.checkId(id);
    const { cols, dtype } = this.table;
    const start = id * cols;
    if (this.f32) {
      target.set(this.f32.subarray(start, start + cols), offset);
      return;
    }
    const bits = this.u16!;
    if (dtype === 'float16') {
      const lut = float16Table();
      for (let c = 0; c < cols; c++) target[offset + c] = lut[bits[start + c]!]!;
    } else {
      for (let c = 0; c < cols; c++) target[offset + c] = bfloat16BitsToFloat32(bits[start + c]!);
    }
  }

  /** Writes row `id` as float16 bit patterns. */
  rowToFloat16(id: number, target: Uint16Array, offset: number): void {
    this.checkId(id);
    const { cols, dtype } = this.table;
    const start = id * cols;
    if (dtype === 'float16') {
      target.set(this.u16!.subarray(start, start + cols), offset);
      return;
    }
    for (let c = 0; c < cols; c++) {
      const value = this.f32 ? this.f32[start + c]! : bfloat16BitsToFloat32(this.u16![start + c]!);
      target[offset + c] = float32ToFloat16Bits(value);
    }
  }
}
