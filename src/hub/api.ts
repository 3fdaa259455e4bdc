import { HubApiError, listFiles, modelInfo } from '@huggingface/hub';
import { HubError, HubUnavailableError } from './errors.js';

/** An API call (model info, file list, a header read) that takes longer has failed; downloads have a watchdog instead. */
const API_TIMEOUT_MS = 30_000;

/** A file of a repo at one commit, as the tree API lists it. */
export interface RepoFile {
  path: string;
  size: number;
  /** git blob id */
  oid: string;
  /** Git LFS pointer: oid is the content's sha256 */
  lfs?: { oid: string; size: number };
}

interface ErrorHeaders {
  code: string | null;
  message: string | null;
  /** whether the hub itself answered (not the CDN a download was redirected to) */
  fromHub: boolean;
}

/**
 * The hub's HTTP API at HF_ENDPOINT. Listing and commit resolution go through @huggingface/hub; this class adds
 * the token (any format, to the hub's own origin only), remembers the hub's X-Error-Code so failures become one
 * line that says what to do, and reads byte ranges (checking the server honoured them).
 */
export class HubClient {
  private readonly origin: string;
  private lastError: ErrorHeaders = { code: null, message: null, fromHub: true };

  /** `signal` (a server's shutdown) stops every call this client makes, API calls and downloads alike. */
  constructor(
    readonly endpoint: string,
    readonly token: string | undefined,
    private readonly signal?: AbortSignal,
  ) {
    this.origin = new URL(endpoint).origin;
  }

  /** For API calls (the library's and ours): bounded by API_TIMEOUT_MS; no answer in time is "unavailable". */
  readonly fetch = (input: string | URL | Request, init: RequestInit = {}): Promise<Response> =>
    this.request(input, init, AbortSignal.timeout(API_TIMEOUT_MS)).catch((err: unknown) => {
      throw this.signal?.aborted || init.signal?.aborted || (err as Error).name === 'AbortError' ? err : this.unreachable(err);
    });

  /**
   * For file downloads, which may take an hour: no overall limit (the downloader's watchdog stops a stalled
   * transfer) and errors as they are, since the downloader retries them and words its own message.
   */
  readonly fetchFile = (input: string | URL | Request, init: RequestInit = {}): Promise<Response> => this.request(input, init);

  /** fetch with the token for the hub itself (redirects to a CDN drop it, as fetch does across origins). */
  private async request(input: string | URL | Request, init: RequestInit, timeout?: AbortSignal): Promise<Response> {
    const url = new URL(input instanceof Request ? input.url : input);
    const headers = new Headers(init.headers);
    if (this.token && url.origin === this.origin) headers.set('Authorization', `Bearer ${this.token}`);
    const signals = [init.signal, this.signal, timeout].filter((s): s is AbortSignal => !!s);
    const res = await fetch(input, { ...init, headers, ...(signals.length ? { signal: AbortSignal.any(signals) } : {}) });
    if (!res.ok) {
      const fromHub = new URL(res.url || url).origin === this.origin;
      this.lastError = { code: res.headers.get('x-error-code'), message: res.headers.get('x-error-message'), fromHub };
    }
    return res;
  }

  resolveUrl(repo: string, commit: string, path: string): string {
    return `${this.endpoint}/${repo}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`;
  }

  /** The commit a branch, tag or commit hash names. */
  async commitOf(repo: string, revision: string): Promise<string> {
    try {
      const info = await modelInfo({ name: repo, revision, hubUrl: this.endpoint, additionalFields: ['sha'], fetch: this.fetch });
      if (!info.sha) throw new HubError(`${this.endpoint}: no commit reported for ${repo}@${revision}`);
      return info.sha;
    } catch (err) {
      throw this.explain(err, repo, revision);
    }
  }

  /** Every file of the repo at `commit`, with sizes and LFS hashes. */
  async listFiles(repo: string, commit: string): Promise<RepoFile[]> {
    const files: RepoFile[] = [];
    try {
      for await (const entry of listFiles({ repo: { type: 'model', name: repo }, revision: commit, recursive: true, hubUrl: this.endpoint, fetch: this.fetch })) {
        if (entry.type !== 'file') continue;
        files.push({ path: entry.path, size: entry.size, oid: entry.oid ?? '', ...(entry.lfs ? { lfs: { oid: entry.lfs.oid, size: entry.lfs.size } } : {}) });
      }
    } catch (err) {
      throw this.explain(err, repo, commit);
    }
    return files;
  }

  /** A small file's bytes (JSON indexes); undefined when the repo has no such file. */
  async readSmallFile(repo: string, commit: string, path: string): Promise<Buffer | undefined> {
    const res = await this.fetch(this.resolveUrl(repo, commit, path));
    if (res.status === 404) return undefined;
    if (!res.ok) throw this.explainStatus(res.status, repo, commit, path);
    return this.body(res);
  }

  /**
   * Bytes [start, end) of a file. Hand-written: the library's WebBlob accepts a 200 to a Range request, which
   * for a 4 GB checkpoint shard would read all of it; here anything but the asked-for 206 is refused.
   */
  async readRange(url: string, start: number, end: number, explain: (status: number) => Error): Promise<Buffer> {
    const res = await this.fetch(url, { headers: { Range: `bytes=${start}-${end - 1}` } });
    if (!res.ok) throw explain(res.status);
    const contentRange = res.headers.get('content-range') ?? '';
    if (res.status !== 206 || !contentRange.startsWith(`bytes ${start}-`)) {
      await res.body?.cancel();
      throw new HubError(`${url}: the server ignored the byte range request (status ${res.status}); cannot read part of the file`);
    }
    const bytes = await this.body(res);
    if (bytes.length !== end - start) throw new HubError(`${url}: expected ${end - start} bytes at ${start}, got ${bytes.length}`);
    return bytes;
  }

  /** A small body, read within the API call's time limit: a timeout or a dropped connection is "unavailable". */
  private async body(res: Response): Promise<Buffer> {
    try {
      return Buffer.from(await res.arrayBuffer());
    } catch (err) {
      throw this.signal?.aborted || (err as Error).name === 'AbortError' ? err : this.unreachable(err);
    }
  }

  private unreachable(err: unknown): HubUnavailableError {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = (err as Error).name === 'TimeoutError' ? `no answer within ${API_TIMEOUT_MS / 1000} s` : (cause?.code ?? cause?.message ?? (err as Error).message);
    return new HubUnavailableError(
      `cannot reach ${this.endpoint} (${why}): check the network or HF_ENDPOINT; ` +
        'with the model already in the cache set HF_HUB_OFFLINE=1, or point MODEL_DIR at a model directory',
    );
  }

  private explain(err: unknown, repo: string, revision: string): Error {
    if (err instanceof HubError) return err;
    if (err instanceof HubApiError) return this.explainStatus(err.statusCode, repo, revision);
    // the library's own fetch of a page that timed out
    if ((err as Error).name === 'TimeoutError') return this.unreachable(err);
    return err as Error;
  }

  /** One line per failure the hub reports, naming the repo/revision and what to do. */
  explainStatus(status: number, repo: string, revision: string | undefined, path?: string): HubError {
    const { code, message, fromHub } = this.lastError;
    const at = `${repo}${revision ? `@${revision}` : ''}${path ? ` (${path})` : ''}`;
    const page = `${this.endpoint}/${repo}`;
    const detail = message ? ` (${message})` : '';
    if (code === 'GatedRepo') {
      return new HubError(
        this.token
          ? `${repo}: gated, and HF_TOKEN has no access: accept the conditions on ${page} with the token's account`
          : `${repo}: gated: accept the conditions on ${page}, then set HF_TOKEN to an access token of that account`,
      );
    }
    if (code === 'RevisionNotFound') {
      return new HubError(`${repo} has no revision "${revision}": set MODEL_REVISION (or --revision) to a branch, tag or commit that exists, e.g. main`);
    }
    if (code === 'EntryNotFound' && fromHub) return new HubError(`${at}: no such file in the repo`);
    if (status >= 500 || status === 429) {
      return new HubUnavailableError(`${at}: ${fromHub ? this.endpoint : 'the download server'} answered ${status}${detail}; try again later`);
    }
    if (!fromHub) return new HubError(`${at}: the download server ${this.endpoint} redirected to answered ${status}${detail}; run again`);
    // an invalid or expired token is refused as such, whatever the repo (a stale saved login included)
    if (status === 401 && this.token && code !== 'RepoNotFound') {
      return new HubError(`${this.endpoint} refused HF_TOKEN${detail}: set a valid access token (HF_TOKEN, or log in again), or unset it for a public model`);
    }
    if (code === 'RepoNotFound' || status === 404 || status === 401) {
      return new HubError(
        this.token
          ? `${repo} not found on ${this.endpoint}, or HF_TOKEN has no access to it${detail}: check MODEL (or --model)`
          : `${repo} not found on ${this.endpoint}, or it is private${detail}: check MODEL (or --model), or set HF_TOKEN`,
      );
    }
    if (status === 403) return new HubError(`${at}: ${this.endpoint} refused access${detail}: check that HF_TOKEN may read ${repo}`);
    return new HubError(`${at}: ${this.endpoint} answered ${status}${detail}`);
  }
}
