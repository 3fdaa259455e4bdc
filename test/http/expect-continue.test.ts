import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/server.js';
import { encodeWav } from '../support/wav-writer.js';

const run = promisify(execFile);

let server: TestServer;
let port: number;
let dir: string;
/** over 1 MiB, so curl sends `Expect: 100-continue`; silent, so the model has nothing to decode */
let bigWav: string;

beforeAll(async () => {
  // One queue place.
  server = await startTestServer({ MAX_BATCH: '1', MAX_QUEUE: '0', SHUTDOWN_GRACE_SECONDS: '5' });
  port = Number(new URL(server.baseURL).port);
  dir = mkdtempSync(join(tmpdir(), 'expect-continue-'));
  bigWav = join(dir, 'silence.wav');
  writeFileSync(bigWav, encodeWav({ channels: [new Float32Array(16000 * 40)], sampleRate: 16000, format: 'pcm16' }));
  expect(statSync(bigWav).size).toBeGreaterThan(1024 * 1024);
});
afterAll(async () => {
  await server.stop('test done');
  rmSync(dir, { recursive: true, force: true });
});

/** Takes the only queue place, as a running transcription does; `release()` gives it back. */
function occupy(): { release(): void } {
  const admission = server.pool.admit();
  if ('refused' in admission) throw new Error(`the place is not free: ${admission.refused}`);
  return admission;
}

const BOUNDARY = 'expectcontinue';
const BODY = Buffer.concat([
  Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nmega-asr\r\n--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n`),
  Buffer.from(encodeWav({ channels: [new Float32Array(8000)], sampleRate: 16000, format: 'pcm16' })),
  Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
]);

/**
 * Sends the headers with `Expect: 100-continue` and waits for the server's first answer, sending no body byte;
 * the body goes only after a `100 Continue`. Resolves with everything received once the connection closes.
 */
function expectContinue(path = '/v1/audio/transcriptions'): Promise<{ first: string; all: string; bodySent: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let all = '';
    let first: string | undefined;
    let bodySent = false;
    socket.setEncoding('latin1');
    socket.on('error', reject);
    socket.on('data', (d: string) => {
      all += d;
      if (first !== undefined || !all.includes('\r\n\r\n')) return;
      first = all.slice(0, all.indexOf('\r\n\r\n'));
      if (first.startsWith('HTTP/1.1 100 ')) {
        bodySent = true;
        socket.write(BODY);
      }
    });
    socket.on('close', () => resolve({ first: first ?? '', all, bodySent }));
    socket.write(
      `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\n` +
        `Content-Length: ${BODY.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
    );
  });
}

const finalResponse = (all: string) => all.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');

async function curlUpload(): Promise<{ status: number; uploaded: number; seconds: number; body: string }> {
  const out = join(dir, 'response.json');
  const { stdout } = await run('curl', [
    '-sS',
    '-o',
    out,
    '-w',
    '%{http_code} %{size_upload} %{time_total}',
    '-F',
    'model=mega-asr',
    '-F',
    `file=@${bigWav}`,
    `${server.baseURL}/v1/audio/transcriptions`,
  ]);
  const [status, uploaded, seconds] = stdout.trim().split(' ').map(Number);
  return { status: status!, uploaded: uploaded!, seconds: seconds!, body: readFileSync(out, 'utf8') };
}

describe('Expect: 100-continue', () => {
  it('an admitted request gets 100 Continue, then sends its body and is answered', async () => {
    const r = await expectContinue();
    expect(r.first).toBe('HTTP/1.1 100 Continue');
    expect(r.bodySent).toBe(true);
    expect(finalResponse(r.all)).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('another route sends 100 Continue once routed, then answers', async () => {
    const r = await expectContinue('/v1/audio/translations');
    expect(r.first).toBe('HTTP/1.1 100 Continue');
    expect(finalResponse(r.all)).toMatch(/^HTTP\/1\.1 400 [^]*"code":"unsupported_task"/);
  });

  it('curl uploads a file over 1 MiB after its 100 Continue', async () => {
    const r = await curlUpload();
    expect(r.status).toBe(200);
    expect(r.uploaded).toBeGreaterThan(statSync(bigWav).size);
  });

  it('a full server answers 429 with Retry-After and the error body before any byte of the body is sent', async () => {
    const busy = occupy();
    const r = await expectContinue();
    expect(r.bodySent).toBe(false);
    expect(r.first).toMatch(/^HTTP\/1\.1 429 /);
    expect(r.first.toLowerCase()).toMatch(/\r\nretry-after: \d+\r\n/);
    const body = JSON.parse(r.all.slice(r.all.indexOf('\r\n\r\n') + 4)) as { error: { code: string; type: string } };
    expect(body.error).toMatchObject({ code: 'queue_full', type: 'rate_limit_exceeded' });

    // curl waits for the answer to its Expect: the 429 comes at once and not a byte of the 1.3 MB file is sent
    const c = await curlUpload();
    expect(c.status).toBe(429);
    expect(c.uploaded).toBe(0);
    expect(c.seconds).toBeLessThan(1); // curl gives up waiting for 100 after 1 s and sends anyway
    expect(JSON.parse(c.body)).toMatchObject({ error: { code: 'queue_full' } });
    busy.release();
  });

  it('a draining server answers 503 with Retry-After before the body', async () => {
    // the drain waits up to SHUTDOWN_GRACE_SECONDS for the held place
    const busy = occupy();
    const stopped = server.stop('test drain');
    const r = await expectContinue();
    expect(r.bodySent).toBe(false);
    expect(r.first).toMatch(/^HTTP\/1\.1 503 /);
    expect(r.first.toLowerCase()).toMatch(/\r\nretry-after: \d+\r\n/);
    const body = JSON.parse(r.all.slice(r.all.indexOf('\r\n\r\n') + 4)) as { error: { code: string } };
    expect(body.error.code).toBe('service_unavailable');
    busy.release();
    await stopped;
  });
});
