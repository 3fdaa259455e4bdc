import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page, WebSocket as PageSocket } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { readWavHeader } from '../../src/audio/wav.js';
import { launchChromium, watchContext, type PageLog } from '../support/browser.js';
import { startTestServer, type TestServer } from '../support/server.js';
import { repoRoot, sharedPath } from '../support/shared.js';
import { ffmpeg, tempDir, type TempDir } from '../support/transcode.js';

/**
 * The page's live mode end to end: Chromium's fake microphone plays a real clip once, the page streams it through
 * its AudioWorklet over /v1/realtime to the real server (generated model, Silero turn detection), and shows the
 * text as it comes. The generated model's words are not the clip's: what is checked is when text appears, that it
 * only grows, and that each turn's final text is its partial text.
 */

const KEY = 'page-live-key';
const CLIP = 'obstructed';
/** where the last word of CLIP ends (its last 1.4 s are quiet) */
const SPEECH_ENDS_S = 7.4;
const SCREENSHOTS = join(repoRoot, 'test-output', 'page');

let server: TestServer;
let browser: Browser;
let tmp: TempDir;
let clipSeconds: number;

interface Snapshot {
  /** performance.now() in the page */
  t: number;
  turns: { id: string; state: string; text: string }[];
}

/** Every state of the transcript's turns, timed, from before the live session starts. */
const OBSERVE_TURNS = `(() => {
  window.turnsSeen = [];
  const snap = () => window.turnsSeen.push({
    t: performance.now(),
    turns: [...document.querySelectorAll('#transcript .turn')].map((p) => ({ id: p.dataset.itemId, state: p.dataset.state, text: p.textContent })),
  });
  new MutationObserver(snap).observe(document.getElementById('transcript'), {
    childList: true, characterData: true, subtree: true, attributes: true, attributeFilter: ['data-state'],
  });
})()`;

/** What the page sent and received over its realtime socket, parsed. */
function recordSocket(page: Page): { url: Promise<string>; sent: Record<string, unknown>[]; received: Record<string, unknown>[] } {
  const sent: Record<string, unknown>[] = [];
  const received: Record<string, unknown>[] = [];
  const url = new Promise<string>((resolve) => {
    page.on('websocket', (ws: PageSocket) => {
      resolve(ws.url());
      ws.on('framesent', (f) => sent.push(JSON.parse(String(f.payload)) as Record<string, unknown>));
      ws.on('framereceived', (f) => received.push(JSON.parse(String(f.payload)) as Record<string, unknown>));
    });
  });
  return { url, sent, received };
}

/** A gauge or counter of the server's /metrics (the sum of its samples). */
async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`)).reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
}

async function openPage(key: string | null): Promise<{ page: Page; log: PageLog }> {
  const context = await browser.newContext();
  const log = watchContext(context);
  const page = await context.newPage();
  await page.goto(`${server.baseURL}/`);
  if (key !== null) {
    await page.click('#key-details summary');
    await page.fill('#api-key', key);
  }
  return { page, log };
}

beforeAll(async () => {
  tmp = tempDir('mega-asr-page-live-');
  mkdirSync(SCREENSHOTS, { recursive: true });
  // Chromium's fake microphone reads 16-bit PCM WAV; %noloop plays it once, then silence. The clip is cut where
  // its speech ends (it has two sentences parted by a pause), so that its last turn can only end after it.
  const microphone = tmp.path('microphone.wav');
  ffmpeg('-i', sharedPath('fixtures', 'voices-in-the-wild', `${CLIP}.wav`), '-t', String(SPEECH_ENDS_S), '-ar', '48000', '-ac', '1', '-c:a', 'pcm_s16le', microphone);
  const header = readWavHeader(readFileSync(microphone))!;
  clipSeconds = header.frames! / header.sampleRate;
  [server, browser] = await Promise.all([
    startTestServer({ API_KEYS: KEY, MAX_REALTIME_SESSIONS: '1' }),
    launchChromium(['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream', `--use-file-for-fake-audio-capture=${microphone}%noloop`]),
  ]);
});

afterAll(async () => {
  await browser?.close();
  await server?.stop('test done');
  tmp?.remove();
});

describe('the page in live mode', () => {
  it('loads its live module and worklet from this origin as JavaScript, under the page\'s policy', async () => {
    for (const path of ['/live.js', '/pcm-worklet.js']) {
      const res = await fetch(`${server.baseURL}${path}`);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type'), path).toMatch(/^(text|application)\/javascript/);
      expect(res.headers.get('content-security-policy'), path).toMatch(/^default-src 'self';/);
    }
  });

  it('shows partial text while the clip plays, then each turn\'s final text, which is its partial text grown', async () => {
    expect(clipSeconds).toBeGreaterThan(5);
    const { page, log } = await openPage(KEY);
    await page.selectOption('#language', 'English');
    await page.fill('#prompt', 'A kitchen, a radio');
    await page.evaluate(OBSERVE_TURNS);
    const socket = recordSocket(page);
    const clickedAt = (await page.evaluate('performance.now()')) as number;
    await page.click('#live');
    await page.waitForSelector('#status[data-state="live"]');
    // The microphone started between the click and now: the clip ends after clickedAt + its length, and by liveAt + its length.
    const liveAt = (await page.evaluate('performance.now()')) as number;
    expect(await page.getAttribute('#live', 'aria-pressed')).toBe('true');
    expect(await page.textContent('#live-label')).toBe('Stop live transcription');
    // While live, nothing else may take the microphone or the transcript.
    for (const id of ['#record', '#transcribe', '#file', '#language', '#prompt']) expect(await page.isDisabled(id), id).toBe(true);

    // Text while the clip is still playing: the microphone cannot have finished it before click + its length.
    await page.locator('#transcript .turn', { hasText: /\S/ }).first().waitFor({ timeout: clipSeconds * 1000 });
    const firstText = (await page.evaluate('performance.now()')) as number;
    expect(firstText - clickedAt).toBeLessThan(clipSeconds * 1000);
    await page.screenshot({ path: join(SCREENSHOTS, 'live-1-partial.png'), fullPage: true });

    // The clip ends, a second of silence follows: server turn detection ends the last turn and its transcript arrives.
    await page.waitForTimeout(Math.max(0, liveAt + (clipSeconds + 1) * 1000 - ((await page.evaluate('performance.now()')) as number)));
    await page.locator('#transcript .turn[data-state="partial"]').first().waitFor({ state: 'detached', timeout: 30_000 });
    await page.click('#live'); // Stop
    await page.waitForSelector('#status:is([data-state="done"], [data-state="error"])');
    expect(await page.textContent('#status-text')).toBe('Done');
    expect(await page.isHidden('#error')).toBe(true);
    expect(await page.getAttribute('#live', 'aria-pressed')).toBe('false');
    await page.screenshot({ path: join(SCREENSHOTS, 'live-2-done.png'), fullPage: true });

    // The socket: this origin's realtime path, the page's settings, then 100 ms appends of 24 kHz PCM16.
    expect(await socket.url).toBe(`${server.baseURL.replace('http:', 'ws:')}/v1/realtime?intent=transcription`);
    expect(socket.sent[0]).toMatchObject({
      type: 'session.update',
      session: { type: 'transcription', audio: { input: { format: { type: 'audio/pcm', rate: 24000 }, transcription: { language: 'English', prompt: 'A kitchen, a radio' }, turn_detection: { type: 'server_vad' } } } },
    });
    const appends = socket.sent.filter((e) => e.type === 'input_audio_buffer.append').map((e) => Buffer.from(e.audio as string, 'base64').length);
    expect(appends.slice(0, -1).every((n) => n === 4800)).toBe(true);
    const secondsSent = appends.reduce((a, b) => a + b, 0) / 2 / 24000;
    expect(secondsSent).toBeGreaterThan(clipSeconds);
    expect(socket.received.filter((e) => e.type === 'error')).toEqual([]);

    // Each turn's text only grew (no retraction), showed partial text before it was final, and its final text
    // is exactly the deltas joined, which the page had shown already: completion changed nothing.
    const seen = (await page.evaluate('window.turnsSeen')) as Snapshot[];
    const completed = socket.received.filter((e) => e.type === 'conversation.item.input_audio_transcription.completed');
    expect(completed.length).toBeGreaterThan(0);
    const final = await page.locator('#transcript .turn').evaluateAll((ps) => ps.map((p) => ({ id: (p as unknown as { dataset: { itemId: string } }).dataset.itemId, text: p.textContent })));
    expect(final.map((t) => t.id)).toEqual(completed.map((e) => e.item_id));
    let partialBeforeFinal = 0;
    for (const [i, turn] of final.entries()) {
      const deltas = socket.received.filter((e) => e.type === 'conversation.item.input_audio_transcription.delta' && e.item_id === turn.id);
      expect(turn.text).toBe(deltas.map((e) => e.delta).join(''));
      expect(turn.text).toBe(completed[i]!.transcript);
      const states = seen.flatMap((s) => s.turns.filter((x) => x.id === turn.id).map((x) => ({ ...x, t: s.t })));
      for (let k = 1; k < states.length; k++) expect(states[k]!.text.startsWith(states[k - 1]!.text)).toBe(true);
      const firstFinal = states.find((x) => x.state === 'final')!;
      expect(firstFinal.text).toBe(turn.text);
      if (states.some((x) => x.state === 'partial' && x.text !== '' && x.t < firstFinal.t)) partialBeforeFinal += 1;
    }
    expect(partialBeforeFinal).toBeGreaterThan(0);
    // The last turn became final after the clip had played.
    const lastFinal = seen.find((s) => s.turns.length === final.length && s.turns.every((x) => x.state === 'final'))!;
    expect(lastFinal.t).toBeGreaterThan(firstText);
    expect(lastFinal.t - liveAt).toBeGreaterThan(clipSeconds * 1000);
    expect(await page.innerText('#facts')).toMatch(new RegExp(`Turns\\s+${final.length}`));
    // Copy takes the live transcript; the subtitle downloads, which need a file, stay off.
    expect(await page.isEnabled('#copy')).toBe(true);
    expect(await page.isDisabled('#download-srt')).toBe(true);
    expect(log.errors).toEqual([]);
    expect(new Set(log.requests.map((u) => new URL(u).origin))).toEqual(new Set([server.baseURL]));
  }, 60_000);

  it('Stop while the speaker talks commits the turn under way and waits for its transcript before closing', async () => {
    const { page, log } = await openPage(KEY);
    const socket = recordSocket(page);
    await page.click('#live');
    // The clip's second sentence (3.9-7.4 s) has started: its turn is on the page, open; a second into it, Stop.
    await page.locator('#transcript .turn').nth(1).and(page.locator('[data-state="partial"]')).waitFor({ timeout: clipSeconds * 1000 });
    await page.waitForTimeout(1000);
    await page.click('#live');
    await page.waitForSelector('#status:is([data-state="done"], [data-state="error"])');
    expect(await page.textContent('#status-text')).toBe('Done');
    expect(await page.isHidden('#error')).toBe(true);
    const types = socket.sent.map((e) => e.type);
    expect(types.at(-1)).toBe('input_audio_buffer.commit');
    expect(types.filter((t) => t === 'input_audio_buffer.commit')).toHaveLength(1);
    // Every turn the server named got its transcript before the page closed, and the page shows them.
    const completed = socket.received.filter((e) => e.type === 'conversation.item.input_audio_transcription.completed');
    const named = new Set(socket.received.flatMap((e) => (typeof e.item_id === 'string' ? [e.item_id] : [])));
    expect(completed.map((e) => e.item_id).sort()).toEqual([...named].sort());
    expect(await page.locator('#transcript .turn').allTextContents()).toEqual(completed.map((e) => e.transcript));
    expect(await page.locator('#transcript .turn[data-state="final"]').count()).toBe(completed.length);
    expect(socket.received.filter((e) => e.type === 'error')).toEqual([]);
    expect(log.errors).toEqual([]);
  }, 30_000);

  it('shows a refusal in the API\'s words when the server holds no more live sessions', async () => {
    // The one session MAX_REALTIME_SESSIONS allows, held from here.
    const held = new WebSocket(`${server.baseURL.replace('http:', 'ws:')}/v1/realtime?intent=transcription`, { headers: { authorization: `Bearer ${KEY}` } });
    await new Promise((resolve, reject) => held.once('message', resolve).once('error', reject));
    try {
      const { page } = await openPage(KEY);
      const socket = recordSocket(page);
      await page.click('#live');
      await page.waitForSelector('#status[data-state="error"]');
      const refusal = socket.received.find((e) => e.type === 'error') as { error: { message: string; code: string } };
      expect(await page.textContent('#status-text')).toBe('Live transcription failed');
      expect(await page.textContent('#error-message')).toBe(refusal.error.message);
      expect(await page.textContent('#error-detail')).toContain(`code ${refusal.error.code}`);
      expect(await page.getAttribute('#live', 'aria-pressed')).toBe('false');
      expect(await page.isEnabled('#live')).toBe(true);
      expect(await page.isEnabled('#record')).toBe(true);
      await page.screenshot({ path: join(SCREENSHOTS, 'live-3-refused.png'), fullPage: true });
    } finally {
      held.close();
    }
  }, 30_000);

  it('a microphone refused closes the session it opened and says so, and the page is idle again', async () => {
    const { page } = await openPage(KEY);
    const socket = recordSocket(page);
    // As a user refusing the permission prompt (the page looks getUserMedia up when it needs it).
    await page.evaluate(`navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'))`);
    await page.click('#live');
    await page.waitForSelector('#status[data-state="error"]');
    expect(await page.textContent('#status-text')).toBe('Live transcription failed');
    expect(await page.textContent('#error-message')).toBe('No microphone: Permission denied');
    expect(await page.getAttribute('#live', 'aria-pressed')).toBe('false');
    expect(await page.isEnabled('#record')).toBe(true);
    // The session had been set up; it is closed, not left open on the server, and no audio was sent.
    expect(socket.sent.map((e) => e.type)).toEqual(['session.update']);
    await expect.poll(() => metric('realtime_sessions'), { timeout: 5000 }).toBe(0);
  }, 30_000);

  // Last: it stops the server.
  it('shows the server going away mid-session and returns to idle, the turns so far kept', async () => {
    const { page } = await openPage(KEY);
    await page.click('#live');
    await page.locator('#transcript .turn', { hasText: /\S/ }).first().waitFor({ timeout: clipSeconds * 1000 });
    await server.stop('test: shutting down');
    await page.waitForSelector('#status[data-state="error"]');
    expect(await page.textContent('#status-text')).toBe('Live transcription stopped');
    // A drain closes with 1001 and a reason, no error event: the reason is what the page has to show.
    expect(await page.textContent('#error-message')).toMatch(/^The server closed the live connection: .+ \(code 1001\)\.$/);
    expect(await page.textContent('#error-detail')).toBe('close code 1001');
    expect(await page.locator('#transcript .turn').count()).toBeGreaterThan(0);
    expect(await page.getAttribute('#live', 'aria-pressed')).toBe('false');
    expect(await page.isEnabled('#live')).toBe(true);
    expect(await page.isEnabled('#file')).toBe(true);
    await page.screenshot({ path: join(SCREENSHOTS, 'live-4-server-gone.png'), fullPage: true });
  }, 30_000);
});
