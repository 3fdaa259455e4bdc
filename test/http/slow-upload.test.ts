import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import OpenAI, { toFile } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_SENTENCES } from '../../tools/fixture/model-dir.js';
import { documentedStatuses } from '../support/openapi.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { sharedPath } from '../support/shared.js';
import { encodeWav } from '../support/wav-writer.js';

// Small limits, so a cut takes seconds: no byte for 2 s, or under 500 B/s once 2 s have passed.
const WORKERS = 1;
const MAX_QUEUE = 2;
const ATTACKERS = WORKERS + MAX_QUEUE + 20;
// Fewer upload slots than slow clients, so some of those are refused too and the normal request has to wait.
const MAX_UPLOADS = 16;
const LIMITS = { UPLOAD_IDLE_SECONDS: '2', UPLOAD_RATE_GRACE_SECONDS: '2', UPLOAD_MIN_BYTES_PER_SECOND: '500', HEADERS_TIMEOUT_SECONDS: '2' };

let server: TestServer;
let port: number;

beforeAll(async () => {
  // MAX_BATCH=1: the service admits WORKERS + MAX_QUEUE requests at once, the count of places.
  server = await startTestServer({ ...LIMITS, WORKERS: String(WORKERS), MAX_BATCH: '1', MAX_QUEUE: String(MAX_QUEUE), MAX_UPLOADS: String(MAX_UPLOADS) });
  port = Number(new URL(server.baseURL).port);
});
afterAll(() => server.stop('test done'));

const BOUNDARY = 'slowuploadboundary';
const uploadHead = (contentLength: number) =>
  `POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${contentLength}\r\n\r\n`;
const FIRST_PART = `--${BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nmega-asr\r\n--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n`;

interface RawClient {
  socket: Socket;
  /** everything the server sent, once it closed the connection */
  closed: Promise<{ text: string; at: number }>;
}

function rawClient(): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve({ socket, closed }));
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (text += d));
    socket.on('error', () => {}); // a reset after the answer is part of being cut
    socket.once('error', reject);
    const closed = new Promise<{ text: string; at: number }>((done) => socket.once('close', () => done({ text, at: Date.now() })));
  });
}

/** Writes one byte every `everyMs` until the socket closes. */
function trickle(socket: Socket, everyMs: number): void {
  const timer = setInterval(() => (socket.writable ? socket.write('x') : clearInterval(timer)), everyMs);
  socket.once('close', () => clearInterval(timer));
}

function parseResponse(text: string) {
  const [head = '', body = ''] = text.split('\r\n\r\n');
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), head: head.toLowerCase(), body: JSON.parse(body) as { error: { code: string; type: string; message: string } } };
}

async function uploadMetrics() {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  const cut: Record<string, number> = {};
  for (const m of text.matchAll(/^http_upload_timeouts_total\{reason="(\w+)"\} (\d+)/gm)) cut[m[1]!] = Number(m[2]);
  return { cut, inProgress: Number(/^http_uploads_in_progress (\d+)/m.exec(text)?.[1]) };
}

const until = async (check: () => boolean, ms: number) => {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return check();
};

describe('slow uploads', () => {
  it('a stalled upload gets 408 with an OpenAI error body, the connection closes and its upload slot is given back at once', async () => {
    const before = (await uploadMetrics()).cut;
    const c = await rawClient();
    const started = Date.now();
    c.socket.write(uploadHead(100_000) + FIRST_PART + 'RIFF');
    await new Promise((r) => setTimeout(r, 500));
    expect((await uploadMetrics()).inProgress).toBe(1);
    // the upload holds no queue place
    expect(server.pool.stats.admitted).toBe(0);
    const { text, at } = await c.closed;
    const res = parseResponse(text);
    expect(res.status).toBe(408);
    expect(res.head).toContain('connection: close');
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'request_timeout', param: null });
    expect(res.body.error.message).toMatch(/stopped arriving/);
    expect(documentedStatuses('/v1/audio/transcriptions', 'post')).toContain('408');
    expect(at - started).toBeGreaterThanOrEqual(2000);
    expect(at - started).toBeLessThan(6000); // checked twice a second; slack for a busy CI machine
    const after = await uploadMetrics();
    expect(after.inProgress).toBe(0);
    expect(after.cut.idle).toBe((before.idle ?? 0) + 1);
  });

  it('an upload crawling below the minimum rate is cut once the grace has passed, and counted as slow', async () => {
    const before = (await uploadMetrics()).cut;
    const c = await rawClient();
    const started = Date.now();
    c.socket.write(uploadHead(100_000) + FIRST_PART);
    trickle(c.socket, 250); // never idle, 4 B/s
    const { text, at } = await c.closed;
    const res = parseResponse(text);
    expect(res.status).toBe(408);
    expect(res.body.error.code).toBe('request_timeout');
    expect(res.body.error.message).toMatch(/too slowly/);
    expect(at - started).toBeGreaterThanOrEqual(2000);
    expect(at - started).toBeLessThan(6000);
    const after = await uploadMetrics();
    expect(after.inProgress).toBe(0);
    expect(after.cut.slow).toBe((before.slow ?? 0) + 1);
  });

  it('a slow but steady upload above the minimum rate is not cut', async () => {
    const wav = Buffer.from(encodeWav({ channels: [new Float32Array(4000).fill(0.01)], sampleRate: 16000, format: 'pcm16' }));
    const body = Buffer.concat([Buffer.from(FIRST_PART, 'latin1'), wav, Buffer.from(`\r\n--${BOUNDARY}--\r\n`, 'latin1')]);
    const c = await rawClient();
    c.socket.write(uploadHead(body.length));
    // ~8.2 KB in ~4 s at 2 KB/s (four times the minimum), 500 B every 250 ms: past the grace and the idle limit
    for (let sent = 0; sent < body.length; sent += 500) {
      c.socket.write(body.subarray(sent, sent + 500));
      await new Promise((r) => setTimeout(r, 250));
    }
    c.socket.end();
    const { text } = await c.closed;
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(text).toContain('"text":');
  });

  it('headers that never finish, or never start, are cut by headersTimeout with a 408', async () => {
    const [partial, silent] = await Promise.all([rawClient(), rawClient()]);
    const started = Date.now();
    partial.socket.write('POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form');
    for (const c of [partial, silent]) {
      const { text, at } = await c.closed;
      const res = parseResponse(text);
      expect(res.status).toBe(408);
      expect(res.body.error.code).toBe('request_timeout');
      // the timeout is checked every second
      expect(at - started).toBeGreaterThanOrEqual(2000);
      expect(at - started).toBeLessThan(7000);
    }
  });

  it(`while WORKERS + MAX_QUEUE + 20 clients trickle a byte a second or send no body, the OpenAI SDK's request succeeds within 60 s`, async () => {
    const attackers = await Promise.all(Array.from({ length: ATTACKERS }, () => rawClient()));
    attackers.forEach((c, i) => {
      c.socket.write(uploadHead(1_000_000));
      if (i % 2 === 0) trickle(c.socket, 1000);
    });
    // every upload slot is taken by a body that will never finish, and no queue place
    expect(await until(() => attackers.filter((c) => c.socket.bytesRead > 0).length >= ATTACKERS - MAX_UPLOADS, 2000)).toBe(true);
    expect((await uploadMetrics()).inProgress).toBe(MAX_UPLOADS);
    expect(server.pool.stats.admitted).toBe(0);

    // The SDK with its defaults: 2 retries, honouring Retry-After (up to 60 s).
    const client = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'any-key' });
    const started = Date.now();
    // a buffer, not a file stream: the SDK can send it again
    const file = await toFile(readFileSync(sharedPath('fixtures', 'voices-in-the-wild', 'echo.wav')), 'echo.wav');
    const t = await client.audio.transcriptions.create({ file, model: 'mega-asr' });
    const seconds = (Date.now() - started) / 1000;
    expect(FIXTURE_SENTENCES).toContain(t.text);
    expect(seconds).toBeLessThan(60);
    console.log(`normal request answered after ${seconds.toFixed(1)} s among ${attackers.length} slow clients`);

    // every slow client was cut (408) or refused before its body (429, then cut while Node discarded its body):
    // none holds a connection any more
    const ends = await Promise.all(attackers.map((c) => c.closed));
    const statuses = ends.map((e) => /^HTTP\/1\.1 (\d{3})/.exec(e.text)?.[1] ?? 'closed');
    expect(statuses.filter((s) => s === '408')).toHaveLength(MAX_UPLOADS);
    expect(statuses.filter((s) => s === '429')).toHaveLength(ATTACKERS - MAX_UPLOADS);
    expect((await uploadMetrics()).inProgress).toBe(0);
  }, 70_000);
});
