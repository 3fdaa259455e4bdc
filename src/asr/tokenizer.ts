/**
 * Qwen2/Qwen3 byte-level BPE tokenizer, written to reproduce Hugging Face `tokenizers`
 * for this vocabulary: added-token split, NFC, the Qwen2 pre-split regex, GPT-2 byte
 * mapping, rank-ordered BPE merges, and a ByteLevel decoder.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

export interface TokenizerData {
  /** Byte-level token string -> id. */
  vocab: Record<string, number>;
  /** Merges in rank order, either `["a", "b"]` pairs or `"a b"` strings. */
  merges: ReadonlyArray<readonly string[] | string>;
  addedTokens: readonly AddedToken[];
}

export interface DecodeOptions {
  /** Drop added tokens marked special (default true). */
  skipSpecialTokens?: boolean;
}

export interface StreamDecoder {
  /** Text completed by this id; an unfinished UTF-8 character is held back. */
  push(id: number): string;
  /** Whatever is still held back; a truncated character becomes U+FFFD. */
  flush(): string;
}

/**
 * Unicode White_Space, which is what `\s` means in the Rust regex engines HF uses.
 * JS `\s` differs: it adds U+FEFF and lacks U+0085.
 */
const WS = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/**
 * The Qwen2 split pattern. `(?i:'s|...)` becomes explicit classes (JS in Node 20 has no
 * scoped flags); U+017F long s case-folds to `s` under the Rust engines' `(?i)`.
 */
const PRE_SPLIT = new RegExp(
  `(?:'[sS\\u017f]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])` +
    `|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+` +
    `|\\p{N}` +
    `| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*` +
    `|[${WS}]*[\\r\\n]+` +
    `|[${WS}]+(?![^${WS}])` +
    `|[${WS}]+`,
  'gu',
);

/** GPT-2 `bytes_to_unicode`: byte value -> the character standing for it in the vocab. */
const BYTE_TO_CHAR: readonly string[] = (() => {
  const table: string[] = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    table[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
  return table;
})();

/** Inverse of BYTE_TO_CHAR by char code (all codes are below 0x144); -1 where unmapped. */
const CHAR_TO_BYTE: Int16Array = (() => {
  const inv = new Int16Array(0x200).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => {
    inv[ch.charCodeAt(0)] = b;
  });
  return inv;
})();

/** Pair keys pack two ids into one number; ids must stay below this. */
const PAIR_BASE = 2 ** 22;
/** Words longer than this (in UTF-16 units) are not cached: rare, and costly to keep. */
const CACHE_MAX_WORD = 128;
const CACHE_MAX_ENTRIES = 50_000;

const utf8 = new TextEncoder();

export class Tokenizer {
  private readonly vocab = new Map<string, number>();
  private readonly idToToken: (string | undefined)[] = [];
  /** Pair key -> merge rank. */
  private readonly mergeRank = new Map<number, number>();
  /** Merge rank -> id of the merged token. */
  private readonly mergeResult: Int32Array;
  /** Single byte -> id of its one-character token. */
  private readonly byteId = new Int32Array(256);
  private readonly added = new Map<string, AddedToken>();
  private readonly addedById = new Map<number, AddedToken>();
  private readonly addedPattern: RegExp | null;
  private readonly tokenBytesCache: (Uint8Array | undefined)[] = [];
  private readonly wordCache = new Map<string, readonly number[]>();
  private readonly maxId: number;

  constructor(data: TokenizerData) {
    let maxId = -1;
    for (const [token, id] of Object.entries(data.vocab)) {
      if (!Number.isInteger(id) || id < 0 || id >= PAIR_BASE) throw new Error(`tokenizer: bad id ${id} for ${JSON.stringify(token)}`);
      this.vocab.set(token, id);
      this.idToToken[id] = token;
      if (id > maxId) maxId = id;
    }

    for (let b = 0; b < 256; b++) {
      const id = this.vocab.get(BYTE_TO_CHAR[b]!);
      if (id === undefined) throw new Error(`tokenizer: vocab lacks the byte-level token for byte ${b}`);
      this.byteId[b] = id;
    }

    this.mergeResult = new Int32Array(data.merges.length);
    data.merges.forEach((merge, rank) => {
      const parts = typeof merge === 'string' ? merge.split(' ') : merge;
      const [a, b] = parts;
      if (parts.length !== 2 || a === undefined || b === undefined) throw new Error(`tokenizer: bad merge ${JSON.stringify(merge)}`);
      const ia = this.vocab.get(a);
      const ib = this.vocab.get(b);
      const merged = this.vocab.get(a + b);
      if (ia === undefined || ib === undefined || merged === undefined) {
        throw new Error(`tokenizer: merge ${JSON.stringify(merge)} uses a token missing from the vocab`);
      }
      // A repeated pair keeps its last rank, as in HF.
      this.mergeRank.set(ia * PAIR_BASE + ib, rank);
      this.mergeResult[rank] = merged;
    });

    for (const t of data.addedTokens) {
      if (!Number.isInteger(t.id) || t.id < 0) throw new Error(`tokenizer: bad added token id ${t.id}`);
      const tok: AddedToken = { id: t.id, content: t.content, special: t.special };
      this.added.set(tok.content, tok);
      this.addedById.set(tok.id, tok);
      if (tok.id > maxId) maxId = tok.id;
    }
    this.maxId = maxId;

    // Longest first, so the regex's leftmost-first alternation is leftmost-longest like HF.
    const contents = [...this.added.keys()].filter((c) => c.length > 0).sort((x, y) => y.length - x.length);
    this.addedPattern = contents.length
      ? new RegExp(contents.map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'gu')
      : null;
  }

  /**
   * Loads `tokenizer.json` from `dir`, or else `vocab.json` + `merges.txt`; added tokens
   * come from the tokenizer.json and/or `tokenizer_config.json`'s `added_tokens_decoder`.
   */
  /** Whether `dir` holds a tokenizer fromModelDir can load (tokenizer.json, or vocab.json + merges.txt). */
  static existsIn(dir: string): boolean {
    return existsSync(join(dir, 'tokenizer.json')) || (existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt')));
  }

  static fromModelDir(dir: string): Tokenizer {
    const tokenizerJson = join(dir, 'tokenizer.json');
    const vocabJson = join(dir, 'vocab.json');
    const mergesTxt = join(dir, 'merges.txt');
    const configJson = join(dir, 'tokenizer_config.json');
    const configAdded = existsSync(configJson) ? readConfigAddedTokens(configJson) : [];

    if (existsSync(tokenizerJson)) {
      const data = parseTokenizerJson(tokenizerJson);
      const ids = new Set(data.addedTokens.map((t) => t.id));
      const extra = configAdded.filter((t) => !ids.has(t.id));
      return new Tokenizer({ ...data, addedTokens: [...data.addedTokens, ...extra] });
    }
    if (existsSync(vocabJson) && existsSync(mergesTxt)) {
      const vocab = JSON.parse(readFileSync(vocabJson, 'utf8')) as Record<string, number>;
      return new Tokenizer({ vocab, merges: parseMergesTxt(readFileSync(mergesTxt, 'utf8')), addedTokens: configAdded });
    }
    throw new Error(
      `no tokenizer in ${dir}: looked for tokenizer.json, or vocab.json + merges.txt (with tokenizer_config.json for added tokens)`,
    );
  }

  /** Largest id (vocab or added) + 1. */
  get vocabSize(): number {
    return this.maxId + 1;
  }

  /** Token ids for `text`; no special tokens are added. */
  encode(text: string): number[] {
    const ids: number[] = [];
    if (this.addedPattern === null) {
      this.appendOrdinary(text, ids);
      return ids;
    }
    let last = 0;
    for (const m of text.matchAll(this.addedPattern)) {
      if (m.index > last) this.appendOrdinary(text.slice(last, m.index), ids);
      ids.push(this.added.get(m[0])!.id);
      last = m.index + m[0].length;
    }
    if (last < text.length) this.appendOrdinary(text.slice(last), ids);
    return ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const skip = opts.skipSpecialTokens ?? true;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (const id of ids) {
      const bytes = this.bytesOf(id, skip);
      if (bytes) {
        parts.push(bytes);
        total += bytes.length;
      }
    }
    const all = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      all.set(p, off);
      off += p.length;
    }
    return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(all);
  }

  /** Incremental decode: the pieces it returns concatenate to `decode(allIds, opts)`. */
  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    const skip = opts.skipSpecialTokens ?? true;
    // A streaming TextDecoder holds an incomplete UTF-8 sequence until the next bytes.
    const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
    return {
      push: (id: number): string => {
        const bytes = this.bytesOf(id, skip);
        return bytes ? decoder.decode(bytes, { stream: true }) : '';
      },
      flush: (): string => decoder.decode(),
    };
  }

  /** Id of an added token or vocab token, by its content. */
  tokenId(content: string): number {
    const id = this.added.get(content)?.id ?? this.vocab.get(content);
    if (id === undefined) throw new Error(`tokenizer: no token ${JSON.stringify(content)}`);
    return id;
  }

  isSpecial(id: number): boolean {
    return this.addedById.get(id)?.special === true;
  }

  /** UTF-8 bytes id stands for, or undefined when skipped or unknown (HF drops unknown ids). */
  private bytesOf(id: number, skipSpecial: boolean): Uint8Array | undefined {
    const cached = this.tokenBytesCache[id];
    if (cached) return skipSpecial && this.isSpecial(id) ? undefined : cached;
    const added = this.addedById.get(id);
    let bytes: Uint8Array;
    if (added) {
      if (skipSpecial && added.special) return undefined;
      bytes = utf8.encode(added.content);
    } else {
      const token = this.idToToken[id];
      if (token === undefined) return undefined;
      bytes = tokenToBytes(token);
    }
    this.tokenBytesCache[id] = bytes;
    return bytes;
  }

  /**
   * Token ids for `text` read as plain text: added-token strings such as `<|im_end|>` are tokenized as
   * characters, so caller-supplied text cannot inject control tokens into a prompt.
   */
  encodeOrdinary(text: string): number[] {
    const ids: number[] = [];
    this.appendOrdinary(text, ids);
    return ids;
  }

  private appendOrdinary(text: string, out: number[]): void {
    for (const m of text.normalize('NFC').matchAll(PRE_SPLIT)) {
      const word = m[0];
      let ids = this.wordCache.get(word);
      if (ids === undefined) {
        ids = this.bpe(utf8.encode(word));
        if (word.length <= CACHE_MAX_WORD) {
          if (this.wordCache.size >= CACHE_MAX_ENTRIES) this.wordCache.clear();
          this.wordCache.set(word, ids);
        }
      }
      for (const id of ids) out.push(id);
    }
  }

  /**
   * HF's `Word::merge_all`: a heap of candidate pairs ordered by (rank, position) over a
   * linked list of symbols; stale candidates are recognised by their pair's rank changing.
   */
  private bpe(bytes: Uint8Array): number[] {
    const n = bytes.length;
    if (n === 1) return [this.byteId[bytes[0]!]!];
    const sym = new Int32Array(n);
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      sym[i] = this.byteId[bytes[i]!]!;
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const rankAt = (i: number, j: number): number | undefined => this.mergeRank.get(sym[i]! * PAIR_BASE + sym[j]!);
    // Heap keys rank * n + pos: lowest rank first, then leftmost, as HF orders merges.
    const heap = new MinHeap();
    for (let i = 0; i + 1 < n; i++) {
      const r = rankAt(i, i + 1);
      if (r !== undefined) heap.push(r * n + i);
    }
    while (heap.size > 0) {
      const key = heap.pop();
      const pos = key % n;
      const rank = (key - pos) / n;
      const right = next[pos]!;
      if (!alive[pos] || right < 0 || rankAt(pos, right) !== rank) continue;
      sym[pos] = this.mergeResult[rank]!;
      alive[right] = 0;
      const after = next[right]!;
      next[pos] = after;
      if (after >= 0) prev[after] = pos;
      const before = prev[pos]!;
      if (before >= 0) {
        const r = rankAt(before, pos);
        if (r !== undefined) heap.push(r * n + before);
      }
      if (after >= 0) {
        const r = rankAt(pos, after);
        if (r !== undefined) heap.push(r * n + pos);
      }
    }
    const ids: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) ids.push(sym[i]!);
    return ids;
  }
}

/** ByteLevel decoding of one vocab token; like HF, a token with an unmapped char keeps its own UTF-8. */
function tokenToBytes(token: string): Uint8Array {
  const bytes = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const b = CHAR_TO_BYTE[token.charCodeAt(i)] ?? -1;
    if (b < 0) return utf8.encode(token);
    bytes[i] = b;
  }
  return bytes;
}

class MinHeap {
  private readonly a: number[] = [];

  get size(): number {
    return this.a.length;
  }

  push(v: number): void {
    const a = this.a;
    let i = a.length;
    a.push(v);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= v) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = v;
  }

  pop(): number {
    const a = this.a;
    const top = a[0]!;
    const last = a.pop()!;
    const n = a.length;
    if (n > 0) {
      let i = 0;
      while (true) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && a[r]! < a[l]! ? r : l;
        if (a[c]! >= last) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; merges?: TokenizerData['merges'] };
  added_tokens?: { id: number; content: string; special?: boolean }[];
}

function parseTokenizerJson(path: string): TokenizerData {
  const json = JSON.parse(readFileSync(path, 'utf8')) as TokenizerJson;
  const model = json.model;
  if (!model || (model.type !== undefined && model.type !== 'BPE') || !model.vocab || !model.merges) {
    throw new Error(`${path}: expected a BPE model with vocab and merges`);
  }
  return {
    vocab: model.vocab,
    merges: model.merges,
    addedTokens: (json.added_tokens ?? []).map((t) => ({ id: t.id, content: t.content, special: t.special === true })),
  };
}

function readConfigAddedTokens(path: string): AddedToken[] {
  const json = JSON.parse(readFileSync(path, 'utf8')) as {
    added_tokens_decoder?: Record<string, { content: string; special?: boolean }>;
  };
  return Object.entries(json.added_tokens_decoder ?? {}).map(([id, t]) => ({
    id: Number(id),
    content: t.content,
    special: t.special === true,
  }));
}

/** merges.txt: optional `#version` first line, then one `a b` merge per line. */
function parseMergesTxt(text: string): string[] {
  const lines = text.split('\n');
  const merges: string[] = [];
  lines.forEach((raw, i) => {
    // Byte-level tokens never hold a raw \r (it maps to U+010D), so one here is a CRLF ending.
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line === '' || (i === 0 && line.startsWith('#version'))) return;
    merges.push(line);
  });
  return merges;
}
