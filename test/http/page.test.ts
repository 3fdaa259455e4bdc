import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContextOptions, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SUPPORTED_LANGUAGES } from '../../src/pool/result.js';
import { launchChromium, watchContext, type PageLog } from '../support/browser.js';
import { documentedStatuses } from '../support/openapi.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { repoRoot, sharedPath } from '../support/shared.js';
import { ffmpeg, tempDir, type TempDir } from '../support/transcode.js';

const KEY = 'page-test-key';
/** Screenshots of each state, kept for a person to look at (test-output/ is not committed). */
const SCREENSHOTS = join(repoRoot, 'test-output', 'page');
const clipPath = (name: string) => sharedPath('fixtures', 'voices-in-the-wild', `${name}.wav`);

let server: TestServer;
/**
 * No key, a 300 kB upload limit, and a model that never stops: a clip under the limit decodes for about 30 s
 * unless cancelled (its token budget is 2000 per second of audio), so Cancel has something to stop.
 */
let limited: TestServer;
const UPLOAD_LIMIT = 300_000;
let browser: Browser;
let tmp: TempDir;

/** What the API itself answers for the same bytes, asked from Node: the page must show exactly this. */
function askApi(file: Uint8Array, fields: Record<string, string>, key = KEY, on: TestServer = server): Promise<Response> {
  const form = new FormData();
  form.append('file', new Blob([file]), 'upload');
  form.append('model', 'mega-asr');
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  return fetch(`${on.baseURL}/v1/audio/transcriptions`, { method: 'POST', body: form, headers: { authorization: `Bearer ${key}` } });
}

/** The API's error for a refused key, asked from Node. */
async function refusedKey(key: string): Promise<{ message: string; code: string }> {
  const res = await fetch(`${server.baseURL}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
  return ((await res.json()) as { error: { message: string; code: string } }).error;
}

interface Session {
  page: Page;
  log: PageLog;
}

async function openPage(key: string | null, options: BrowserContextOptions = {}, on: TestServer = server): Promise<Session> {
  const context = await browser.newContext({ acceptDownloads: true, ...options });
  const log = watchContext(context);
  const page = await context.newPage();
  await page.goto(`${on.baseURL}/`);
  if (key !== null) {
    await page.click('#key-details summary');
    await page.fill('#api-key', key);
  }
  return { page, log };
}

/** Waits until the page has finished (done, failed or cancelled) and says how. */
async function outcome(page: Page): Promise<{ state: string | null; error: string }> {
  await page.waitForSelector('#status:is([data-state="done"], [data-state="error"], [data-state="cancelled"])');
  return { state: await page.getAttribute('#status', 'data-state'), error: (await page.textContent('#error-message')) ?? '' };
}

const transcript = (page: Page) => page.textContent('#transcript').then((t) => t ?? '');

function expectOneOriginQuiet(log: PageLog, on: TestServer = server): void {
  const origins = log.requests.map((url) => new URL(url).origin);
  expect(new Set(origins)).toEqual(new Set([on.baseURL]));
  expect(log.errors).toEqual([]);
}

const transcriptionPosts = (log: PageLog) => log.requests.filter((url) => url.endsWith('/v1/audio/transcriptions')).length;

/** Strict SRT: numbered cues from 1, a `HH:MM:SS,mmm --> HH:MM:SS,mmm` line, text, a blank line. */
function parseSrt(srt: string): { start: string; end: string; text: string }[] {
  expect(srt.endsWith('\n\n')).toBe(true);
  return srt
    .trimEnd()
    .split('\n\n')
    .map((block, i) => {
      const [index, timing, ...lines] = block.split('\n');
      expect(index).toBe(String(i + 1));
      const m = /^(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})$/.exec(timing ?? '');
      if (!m) throw new Error(`not an SRT timing line: ${JSON.stringify(timing)}`);
      expect(lines.length).toBeGreaterThan(0);
      return { start: m[1]!, end: m[2]!, text: lines.join('\n') };
    });
}

async function screenshot(page: Page, name: string, fullPage = true): Promise<Buffer> {
  return page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage });
}

/** The text of every characterData change of the transcript before it happened: the stream's partial texts. */
const OBSERVE_TRANSCRIPT = `(() => {
  window.transcriptBefore = [];
  new MutationObserver((records) => {
    for (const r of records) if (r.type === 'characterData') window.transcriptBefore.push(r.oldValue);
  }).observe(document.getElementById('transcript'), { characterData: true, characterDataOldValue: true, subtree: true });
})()`;

/** What the controls look like: the page is idle (nothing in flight) when Cancel is hidden and the rest enabled. */
interface Controls {
  state: string;
  status: string;
  cancelShown: boolean;
  transcribeEnabled: boolean;
  pickEnabled: boolean;
  recordEnabled: boolean;
  /** the language and format selects */
  optionsEnabled: boolean;
  resultButtonsEnabled: boolean;
}

const CONTROLS = `(() => {
  const $ = (id) => document.getElementById(id);
  return {
    state: $('status').dataset.state,
    status: $('status-text').textContent,
    cancelShown: !$('cancel').hidden,
    transcribeEnabled: !$('transcribe').disabled,
    pickEnabled: !$('file').disabled,
    recordEnabled: !$('record').disabled,
    optionsEnabled: !$('language').disabled && !$('format').disabled,
    resultButtonsEnabled: ['copy', 'download-srt', 'download-vtt'].every((id) => !$(id).disabled),
  };
})()`;
const controls = (page: Page) => page.evaluate(CONTROLS) as Promise<Controls>;
const IDLE = { cancelShown: false, transcribeEnabled: true, pickEnabled: true, recordEnabled: true, optionsEnabled: true };
const BUSY = { cancelShown: true, transcribeEnabled: false, pickEnabled: false, recordEnabled: false, optionsEnabled: false, resultButtonsEnabled: false };

/** The controls after every change to the page, in order: a fast request's states pass too quickly to poll for. */
const OBSERVE_CONTROLS = `(() => {
  window.controlsSeen = [];
  new MutationObserver(() => window.controlsSeen.push(${CONTROLS})).observe(document.querySelector('main'), {
    attributes: true, attributeFilter: ['hidden', 'disabled', 'data-state'], childList: true, characterData: true, subtree: true,
  });
})()`;
const controlsSeen = (page: Page) => page.evaluate('window.controlsSeen') as Promise<Controls[]>;

/**
 * Makes getUserMedia wait, as a permission prompt does, until the test calls window.answerMicrophone().
 * (The page looks getUserMedia up when Record is pressed, so replacing it after load is enough.)
 */
const HOLD_MICROPHONE = `(() => {
  const ask = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints) => new Promise((resolve, reject) => {
    window.answerMicrophone = () => ask(constraints).then(resolve, reject);
  });
})()`;

/** Drags a small WAV file over the page and drops it; says whether the drop zone lit up as accepting it. */
const DROP_FILE = `(() => {
  const files = new DataTransfer();
  files.items.add(new File([new Uint8Array(4096)], 'dropped.wav', { type: 'audio/wav' }));
  const fire = (type) => document.getElementById('dropzone')
    .dispatchEvent(new DragEvent(type, { dataTransfer: files, bubbles: true, cancelable: true }));
  fire('dragenter');
  fire('dragover');
  const accepted = document.getElementById('dropzone').classList.contains('dragging');
  fire('drop');
  return accepted;
})()`;

/** The language field of a multipart transcription request, or null when it has none. */
function languageField(body: Buffer | null): string | null {
  if (body === null) throw new Error('the request body is not visible to the test');
  const m = /name="language"\r\n\r\n([^\r]*)\r\n/.exec(body.toString('latin1'));
  return m ? m[1]! : null;
}

/** Prometheus text exposition: the sum of a metric's samples whose labels contain `labels`. */
async function metric(on: TestServer, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${on.baseURL}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name && (m[2] ?? '').includes(labels)) sum += Number(m[3]);
  }
  return sum;
}

beforeAll(async () => {
  tmp = tempDir('mega-asr-page-');
  mkdirSync(SCREENSHOTS, { recursive: true });
  // Chromium's fake microphone plays a 16-bit PCM WAV, on a loop; 48 kHz is the rate it captures at.
  const microphone = tmp.path('microphone.wav');
  ffmpeg('-i', clipPath('recording'), '-ar', '48000', '-ac', '1', '-c:a', 'pcm_s16le', microphone);
  [server, limited, browser] = await Promise.all([
    startTestServer({ API_KEYS: KEY }),
    startTestServer({ MAX_UPLOAD_BYTES: String(UPLOAD_LIMIT), ASR_TOKENS_PER_SECOND: '2000', SHUTDOWN_GRACE_SECONDS: '0' }, 'never-stops'),
    launchChromium(['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream', `--use-file-for-fake-audio-capture=${microphone}`]),
  ]);
});

afterAll(async () => {
  await browser?.close();
  await Promise.all([server?.stop('test done'), limited?.stop('test done')]);
  tmp?.remove();
});

describe('the page at /', () => {
  it('is served without a key, with a Content-Security-Policy that allows only this origin', async () => {
    const page = await fetch(`${server.baseURL}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toMatch(/^default-src 'self';/);
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await page.text()).toContain('<script type="module" src="app.js">');
    expect(documentedStatuses('/', 'get')).toEqual(['200']);
    for (const [path, type] of [['/app.js', /javascript/], ['/style.css', /^text\/css/], ['/icon.svg', /^image\/svg\+xml/]] as const) {
      const res = await fetch(`${server.baseURL}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type'), path).toMatch(type);
    }
    // Only the page's own files are routes: other paths still get the API's 404, and /v1 still wants a key.
    const missing = await fetch(`${server.baseURL}/nothing-here.js`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('not_found');
    expect((await fetch(`${server.baseURL}/v1/models`)).status).toBe(401);
  });

  it('loads in Chromium asking nothing of other hosts, with the model languages and the five formats', async () => {
    const { page, log } = await openPage(null);
    expect(await page.title()).toMatch(/Mega-ASR/);
    expect(await page.locator('#language option').allTextContents()).toEqual(['Detect automatically', ...SUPPORTED_LANGUAGES]);
    expect(await page.locator('#format option').evaluateAll((options) => options.map((o) => (o as unknown as { value: string }).value))).toEqual([
      'json',
      'text',
      'srt',
      'vtt',
      'verbose_json',
    ]);
    expect(await page.getAttribute('#transcript', 'aria-live')).toBe('polite');
    await screenshot(page, '1-loaded');
    const paths = log.requests.map((url) => new URL(url).pathname);
    expect(paths).toEqual(expect.arrayContaining(['/', '/app.js', '/style.css', '/icon.svg']));
    expectOneOriginQuiet(log);
  });

  it('streams the transcript of an uploaded clip in, equal to the API answer, and downloads its vtt', async () => {
    const api = (await (await askApi(readFileSync(clipPath('recording')), {})).json()) as { text: string };
    expect(api.text).not.toBe('');
    const { page, log } = await openPage(KEY);
    await page.evaluate(OBSERVE_TRANSCRIPT);
    await page.setInputFiles('#file', clipPath('recording'));
    expect(await outcome(page)).toEqual({ state: 'done', error: '' });
    expect(await transcript(page)).toBe(api.text);
    // Streaming, seen from the page: the transcript held a proper, non-empty prefix of the text before the end.
    const before = (await page.evaluate('window.transcriptBefore')) as string[];
    expect(before.filter((t) => t !== '' && t !== api.text && api.text.startsWith(t)).length).toBeGreaterThan(0);
    expect(await page.innerText('#facts')).toMatch(/Streamed\s+([2-9]|\d\d+) text deltas/);
    await screenshot(page, '2-streamed');
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.baseURL });
    await page.click('#copy');
    expect(await page.evaluate('navigator.clipboard.readText()')).toBe(api.text);

    // vtt needs timings the stream lacks: the page posts the audio once more, and only once, as a request of
    // its own: busy, Cancel shown, the status saying what it waits for.
    const vtt = await (await askApi(readFileSync(clipPath('recording')), { response_format: 'vtt' })).text();
    await page.evaluate(OBSERVE_CONTROLS);
    for (let i = 0; i < 2; i++) {
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-vtt')]);
      expect(download.suggestedFilename()).toBe('recording.vtt');
      expect(readFileSync(await download.path(), 'utf8')).toBe(vtt);
    }
    expect(await controlsSeen(page)).toContainEqual({ state: 'uploading', status: 'Preparing .vtt…', ...BUSY });
    expect(await controls(page)).toEqual({ state: 'done', status: 'Done · .vtt ready', ...IDLE, resultButtonsEnabled: true });
    expect(await transcript(page)).toBe(api.text);
    expect(vtt).toMatch(/^WEBVTT\n\n00:00:/);
    expect(transcriptionPosts(log)).toBe(2);
    expectOneOriginQuiet(log);
  });

  it('shows srt when done and downloads it without asking again', async () => {
    const clip = readFileSync(clipPath('echo'));
    const srt = await (await askApi(clip, { response_format: 'srt', language: 'English' })).text();
    const json = (await (await askApi(clip, { language: 'English' })).json()) as { text: string };
    const { page, log } = await openPage(KEY);
    await page.selectOption('#format', 'srt');
    await page.selectOption('#language', 'English');
    const [request] = await Promise.all([
      page.waitForRequest((r) => r.url().endsWith('/v1/audio/transcriptions')),
      page.setInputFiles('#file', clipPath('echo')),
    ]);
    expect(request.headers()['authorization']).toBe(`Bearer ${KEY}`);
    expect(await outcome(page)).toEqual({ state: 'done', error: '' });
    expect(await transcript(page)).toBe(srt);
    await screenshot(page, '3-srt');

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-srt')]);
    expect(download.suggestedFilename()).toBe('echo.srt');
    const cues = parseSrt(readFileSync(await download.path(), 'utf8'));
    expect(cues.map((c) => c.text).join(' ')).toBe(json.text);
    expect(transcriptionPosts(log)).toBe(1);
    expectOneOriginQuiet(log);
  });

  it("records from Chromium's fake microphone and transcribes the recording", async () => {
    const { page, log } = await openPage(KEY);
    await page.click('#record');
    await page.waitForSelector('#status[data-state="recording"]');
    expect(await page.getAttribute('#record', 'aria-pressed')).toBe('true');
    await page.waitForTimeout(3000);
    await screenshot(page, '4-recording');
    await page.click('#record');
    expect(await outcome(page)).toEqual({ state: 'done', error: '' });
    expect((await transcript(page)).trim()).not.toBe('');
    expect(await page.textContent('#source-name')).toMatch(/^recording-\d{8}-\d{6}\.webm$/);
    expect(await page.innerText('#facts')).toMatch(/Audio\s+[3-9]\.\d s/);
    await screenshot(page, '5-recorded');
    expect(transcriptionPosts(log)).toBe(1);
    expectOneOriginQuiet(log);
  });

  it('while recording, Transcribe, the file picker, a drop and the downloads wait for Stop, which transcribes the recording', async () => {
    const { page, log } = await openPage(KEY);
    await page.setInputFiles('#file', clipPath('echo'));
    expect(await outcome(page)).toEqual({ state: 'done', error: '' });
    // Hold the microphone's answer, as a permission prompt would: asking already counts as recording.
    await page.evaluate(HOLD_MICROPHONE);
    await page.click('#record');
    await page.waitForFunction('typeof window.answerMicrophone === "function"');
    expect(await controls(page)).toMatchObject({ cancelShown: false, transcribeEnabled: false, pickEnabled: false, recordEnabled: true });
    await page.click('#record'); // a second press while asking starts nothing more
    expect(await page.getAttribute('#record', 'aria-pressed')).toBe('false');
    expect(await page.evaluate('document.activeElement.id')).toBe('record');
    await page.evaluate('window.answerMicrophone()');
    await page.waitForSelector('#status[data-state="recording"]');
    const recordingControls = {
      state: 'recording', status: 'Recording…', cancelShown: false, transcribeEnabled: false, pickEnabled: false,
      recordEnabled: true, optionsEnabled: true, resultButtonsEnabled: false,
    };
    expect(await controls(page)).toEqual(recordingControls);
    expect(await page.isEnabled('#copy')).toBe(true); // the earlier transcript can still be copied
    // A file dropped on the page now is refused (no dragging highlight, no upload) rather than replacing the recording.
    expect(await page.evaluate(DROP_FILE)).toBe(false);
    await page.waitForTimeout(3000); // a few seconds of speech, as in the recording test above
    expect(await controls(page)).toEqual(recordingControls);
    expect(await page.textContent('#source-name')).toBe('echo.wav');
    expect(transcriptionPosts(log)).toBe(1);

    await page.click('#record'); // Stop
    expect(await outcome(page)).toEqual({ state: 'done', error: '' });
    expect(await page.getAttribute('#record', 'aria-pressed')).toBe('false');
    expect(await page.textContent('#source-name')).toMatch(/^recording-\d{8}-\d{6}\.webm$/);
    expect((await transcript(page)).trim()).not.toBe('');
    expect(await controls(page)).toEqual({ state: 'done', status: 'Done', ...IDLE, resultButtonsEnabled: true });
    expect(transcriptionPosts(log)).toBe(2);
    expectOneOriginQuiet(log);
  });

  it('keeps the options fixed while a request runs and files each subtitle answer under the language it asked for', async () => {
    const clip = readFileSync(clipPath('echo'));
    const [detected, german] = await Promise.all([
      askApi(clip, { response_format: 'srt' }).then((res) => res.text()),
      askApi(clip, { response_format: 'srt', language: 'German' }).then((res) => res.text()),
    ]);
    const { page, log } = await openPage(KEY);
    const asked: (string | null)[] = [];
    let release = (): void => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    // The first upload is held until the controls have been looked at; every upload's language field is noted.
    await page.route('**/v1/audio/transcriptions', async (route) => {
      asked.push(languageField(route.request().postDataBuffer()));
      if (asked.length === 1) await released;
      await route.continue();
    });
    await page.selectOption('#format', 'srt');
    await page.setInputFiles('#file', clipPath('echo'));
    await expect.poll(() => asked.length).toBe(1);
    expect(await controls(page)).toEqual({ state: 'uploading', status: 'Uploading 351 KB and transcribing…', ...BUSY });
    // A script (autofill, an extension) can still set a disabled select: the answer on its way was asked
    // without a language and must be kept as such, not under the language the form shows when it arrives.
    await page.evaluate(`document.getElementById('language').value = 'German'`);
    release();
    expect(await outcome(page)).toEqual({ state: 'done', error: '' });
    expect(await transcript(page)).toBe(detected);

    // German was never asked for this audio: the .srt download asks for it, once.
    for (let i = 0; i < 2; i++) {
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-srt')]);
      expect(readFileSync(await download.path(), 'utf8')).toBe(german);
    }
    // Back to detection: the answer on screen is reused, nothing is asked again.
    await page.selectOption('#language', '');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-srt')]);
    expect(readFileSync(await download.path(), 'utf8')).toBe(detected);
    expect(asked).toEqual([null, 'German']);
    expect(transcriptionPosts(log)).toBe(2);
    expectOneOriginQuiet(log);
  });

  it('shows errors exactly as the API words them: a wrong key, then a picture instead of audio', async () => {
    const { page, log } = await openPage('not-the-key');
    const refused = await refusedKey('not-the-key');
    await page.setInputFiles('#file', clipPath('echo'));
    expect((await outcome(page)).state).toBe('error');
    expect(await page.textContent('#error-message')).toBe(refused.message);
    expect(await page.textContent('#error-detail')).toBe(`code ${refused.code} · HTTP 401`);
    expect(await page.getAttribute('#key-details', 'open')).not.toBeNull();
    await screenshot(page, '6-wrong-key');

    const png = tmp.path('picture.png');
    writeFileSync(png, await page.screenshot());
    const res = await askApi(readFileSync(png), {});
    const bad = (await res.json()) as { error: { message: string; code: string; param: string | null } };
    expect(res.status).toBe(400);
    await page.fill('#api-key', KEY);
    await page.setInputFiles('#file', png);
    expect((await outcome(page)).state).toBe('error');
    expect(await page.textContent('#error-message')).toBe(bad.error.message);
    const param = bad.error.param ? ` · param ${bad.error.param}` : '';
    expect(await page.textContent('#error-detail')).toBe(`code ${bad.error.code}${param} · HTTP 400`);
    await screenshot(page, '7-not-audio');
    // The browser logs failed fetches (401, 400) as console errors; nothing else may appear.
    expect(log.errors.every((e) => /status of (401|400)/.test(e))).toBe(true);
    expect(new Set(log.requests.map((url) => new URL(url).origin))).toEqual(new Set([server.baseURL]));
  });

  it('a subtitle re-post that fails shows the API words, says so in the status and leaves the transcript usable', async () => {
    const srt = await (await askApi(readFileSync(clipPath('mixed')), { response_format: 'srt' })).text();
    const { page, log } = await openPage(KEY);
    await page.setInputFiles('#file', clipPath('mixed'));
    expect(await outcome(page)).toEqual({ state: 'done', error: '' });
    const text = await transcript(page);

    await page.fill('#api-key', 'not-the-key');
    const refused = await refusedKey('not-the-key');
    await page.click('#download-srt');
    expect(await outcome(page)).toEqual({ state: 'error', error: refused.message });
    expect(await page.textContent('#error-detail')).toBe(`code ${refused.code} · HTTP 401`);
    expect(await controls(page)).toEqual({ state: 'error', status: 'Could not prepare .srt', ...IDLE, resultButtonsEnabled: true });
    expect(await transcript(page)).toBe(text);
    expect(await page.isHidden('#download-note')).toBe(true);
    await screenshot(page, '9-subtitles-refused');

    // Fixed key, same button: the re-post goes through and the error is gone.
    await page.fill('#api-key', KEY);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-srt')]);
    expect(readFileSync(await download.path(), 'utf8')).toBe(srt);
    expect(await page.isHidden('#error')).toBe(true);
    expect(await controls(page)).toEqual({ state: 'done', status: 'Done · .srt ready', ...IDLE, resultButtonsEnabled: true });
    expect(log.errors.every((e) => /status of 401/.test(e))).toBe(true);
  });

  it('says the server lists no model when GET /v1/models is empty or not a list, and asks again on the next try', async () => {
    const { page, log } = await openPage(KEY);
    // This service always lists its model: an empty list or a proxy's page can only be played to the browser.
    await page.route('**/v1/models', (route) => route.fulfill({ json: { object: 'list', data: [] } }));
    await page.setInputFiles('#file', clipPath('echo'));
    const noModel = { state: 'error', error: 'The server lists no model to transcribe with: GET /v1/models answered no model id.' };
    expect(await outcome(page)).toEqual(noModel);
    expect(await page.textContent('#error-detail')).toBe('');
    expect(await controls(page)).toEqual({ state: 'error', status: 'Failed', ...IDLE, resultButtonsEnabled: false });
    await screenshot(page, '10-no-model');

    await page.unroute('**/v1/models');
    await page.route('**/v1/models', (route) => route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>Sign in</title>' }));
    await page.click('#transcribe');
    expect(await outcome(page)).toEqual(noModel);

    await page.unroute('**/v1/models');
    await page.click('#transcribe');
    expect(await outcome(page)).toEqual({ state: 'done', error: '' });
    expect(transcriptionPosts(log)).toBe(1);
    expectOneOriginQuiet(log);
  });

  it('shows the size of a file too big for the server and its 413 file_too_large as the API words it', async () => {
    // Under the limit plus multipart slack the server refuses while the upload streams; far over it, from the
    // Content-Length header before reading the body. The page must show the API's answer either way.
    const farTooBig = tmp.path('far-too-big.wav');
    ffmpeg('-stream_loop', '3', '-i', clipPath('noise'), '-c:a', 'pcm_s16le', farTooBig);
    for (const [file, size] of [[clipPath('noise'), '407 KB'], [farTooBig, '1.6 MB']] as const) {
      const bytes = readFileSync(file);
      expect(bytes.length).toBeGreaterThan(UPLOAD_LIMIT);
      const res = await askApi(bytes, {}, KEY, limited);
      expect(res.status).toBe(413);
      const api = ((await res.json()) as { error: { message: string; code: string; param: string } }).error;
      expect(api.code).toBe('file_too_large');

      const { page, log } = await openPage(null, {}, limited);
      await page.evaluate(OBSERVE_CONTROLS);
      await page.setInputFiles('#file', file);
      expect(await outcome(page)).toEqual({ state: 'error', error: api.message });
      expect(await page.textContent('#error-detail')).toBe(`code file_too_large · param ${api.param} · HTTP 413`);
      expect(await page.textContent('#source-size')).toBe(size);
      expect(await controlsSeen(page)).toContainEqual({ state: 'uploading', status: `Uploading ${size} and decoding…`, ...BUSY });
      expect(await controls(page)).toEqual({ state: 'error', status: 'Failed', ...IDLE, resultButtonsEnabled: false });
      await screenshot(page, `11-too-large-${size.replace(' ', '')}`);
      expect(log.errors.every((e) => /status of 413/.test(e))).toBe(true);
      await page.context().close();
    }
  });

  it('Cancel stops a running transcription on the server and returns the page to idle', async () => {
    const { page, log } = await openPage(null, {}, limited);
    const cancelledBefore = await metric(limited, 'asr_transcriptions_total', 'outcome="cancelled"');
    await page.setInputFiles('#file', clipPath('recording'));
    expect(await page.textContent('#source-size')).toBe('234 KB');
    // Text streaming in means the model is decoding; uncancelled, it would go on for about 30 s.
    await page.locator('#transcript', { hasText: /\w/ }).waitFor();
    expect(await controls(page)).toEqual({ state: 'transcribing', status: 'Transcribing…', ...BUSY });
    expect(await metric(limited, 'asr_busy_workers')).toBe(1);
    await screenshot(page, '12-cancellable');

    const clicked = Date.now();
    await page.click('#cancel');
    expect(await outcome(page)).toEqual({ state: 'cancelled', error: '' });
    expect(await controls(page)).toEqual({ state: 'cancelled', status: 'Cancelled', ...IDLE, resultButtonsEnabled: false });
    expect(await page.isHidden('#error')).toBe(true);
    // Cancel vanished under the keyboard user: focus moved to Transcribe instead of falling to <body>.
    expect(await page.evaluate('document.activeElement.id')).toBe('transcribe');
    // The abort reached the server: the work was counted as cancelled and the worker is free again.
    await expect.poll(() => metric(limited, 'asr_transcriptions_total', 'outcome="cancelled"'), { timeout: 10_000 }).toBe(cancelledBefore + 1);
    await expect.poll(() => metric(limited, 'asr_busy_workers'), { timeout: 10_000 }).toBe(0);
    expect(Date.now() - clicked).toBeLessThan(10_000);
    await screenshot(page, '13-cancelled');
    expectOneOriginQuiet(log, limited);
  });

  it('fits a phone screen (390x844, dark mode): no sideways scrolling, touch targets at least 44 px tall', async () => {
    const { page, log } = await openPage(KEY, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: 'dark' });
    await page.setInputFiles('#file', clipPath('mixed'));
    expect(await outcome(page)).toEqual({ state: 'done', error: '' });
    expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    for (const target of await page.locator('button:visible, select, input:not([type="file"]), summary').all()) {
      const box = await target.boundingBox();
      expect(box?.height, await target.evaluate((e) => (e as unknown as { id: string }).id)).toBeGreaterThanOrEqual(44);
      expect((box?.x ?? 0) + (box?.width ?? 0)).toBeLessThanOrEqual(390);
    }
    await screenshot(page, '14-phone');
    expectOneOriginQuiet(log);
  });
});
