/* global document, window, localStorage, navigator, fetch, FormData, Blob, URL, MediaRecorder,
   TextDecoderStream, AbortController, DOMException, setInterval, clearInterval, setTimeout, performance */
// The transcription page: plain browser JavaScript, no build step, talking only to this origin's /v1 API.
import { LiveFailure, LiveSession, liveSupported } from './live.js';

/** The model's 30 languages (src/asr/languages.ts; the page test checks the two agree). */
const LANGUAGES = [
  'Chinese', 'English', 'Cantonese', 'Arabic', 'German', 'French', 'Spanish', 'Portuguese',
  'Indonesian', 'Italian', 'Korean', 'Russian', 'Thai', 'Vietnamese', 'Japanese', 'Turkish',
  'Hindi', 'Malay', 'Dutch', 'Swedish', 'Danish', 'Finnish', 'Polish', 'Czech', 'Filipino',
  'Persian', 'Greek', 'Romanian', 'Hungarian', 'Macedonian',
];
const STREAMED_FORMATS = new Set(['json', 'text']);
const KEY_STORAGE = 'mega-asr.api-key';

const $ = (id) => document.getElementById(id);
const ui = {
  dropzone: $('dropzone'), file: $('file'), record: $('record'), recordLabel: $('record-label'), recordNote: $('record-note'),
  live: $('live'), liveLabel: $('live-label'),
  source: $('source'), sourceName: $('source-name'), sourceSize: $('source-size'), sourceLength: $('source-length'),
  player: $('player'),
  language: $('language'), format: $('format'), prompt: $('prompt'), keyDetails: $('key-details'), apiKey: $('api-key'),
  transcribe: $('transcribe'), cancel: $('cancel'),
  status: $('status'), statusText: $('status-text'), elapsed: $('elapsed'),
  error: $('error'), errorMessage: $('error-message'), errorDetail: $('error-detail'),
  transcript: $('transcript'), facts: $('facts'),
  copy: $('copy'), downloadSrt: $('download-srt'), downloadVtt: $('download-vtt'), downloadNote: $('download-note'),
};

/** An error the API answered, kept exactly as it worded it. */
class ApiFailure extends Error {
  constructor(body, status) {
    const e = body && typeof body === 'object' && body.error && typeof body.error === 'object' ? body.error : {};
    super(typeof e.message === 'string' ? e.message : `HTTP ${status}`);
    this.code = e.code ?? null;
    this.type = e.type ?? null;
    this.param = e.param ?? null;
    this.status = status;
  }
}

const state = {
  /** { blob, name, seconds } of the audio to transcribe */
  source: null,
  /** objectURL of the player's audio, revoked when the source changes */
  playerUrl: null,
  /** response bodies by `${format}|${language}` for the current source, so srt/vtt downloads reuse them */
  bodies: new Map(),
  /** the served model id by API key (GET /v1/models) */
  models: new Map(),
  /** AbortController of the request in flight */
  inFlight: null,
  /** a finished transcript of the current source is on screen (Copy and the downloads apply to it) */
  transcribed: false,
  /** the MediaRecorder while recording */
  recorder: null,
  /** getUserMedia has not answered yet (a permission prompt can stay open a long time) */
  askingMicrophone: false,
  /** the LiveSession from the press of "Transcribe live" until it has ended (connecting and stopping included) */
  live: null,
  /** a live session's transcript is on screen (Copy applies to it; the downloads, which need a source, do not) */
  liveTranscribed: false,
};

// ---------- small view helpers ----------

function formatSeconds(s) {
  if (!Number.isFinite(s)) return '';
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')} min`;
}

function formatBytes(n) {
  if (n < 1024 * 1024) return `${Math.max(1, Math.round(n / 1024))} KB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MB`;
}

let timer = null;
function setState(name, text) {
  ui.status.dataset.state = name;
  ui.statusText.textContent = text;
}

function startClock() {
  const started = performance.now();
  clearInterval(timer);
  const tick = () => { ui.elapsed.textContent = formatSeconds((performance.now() - started) / 1000); };
  tick();
  timer = setInterval(tick, 100);
  return () => { clearInterval(timer); tick(); return (performance.now() - started) / 1000; };
}

function showError(err) {
  ui.error.hidden = false;
  if (err instanceof ApiFailure) {
    ui.errorMessage.textContent = err.message;
    const where = err.status ? `HTTP ${err.status}` : 'sent in the event stream';
    ui.errorDetail.textContent = [err.code && `code ${err.code}`, err.param && `param ${err.param}`, where].filter(Boolean).join(' · ');
    // A refused key: open the key field so the fix is one step away.
    if (err.status === 401) ui.keyDetails.open = true;
  } else if (err instanceof LiveFailure) {
    ui.errorMessage.textContent = err.message;
    const where = err.closeCode !== null ? `close code ${err.closeCode}` : 'sent as an error event';
    ui.errorDetail.textContent = [err.code && `code ${err.code}`, err.param && `param ${err.param}`, where].filter(Boolean).join(' · ');
  } else {
    ui.errorMessage.textContent = err instanceof TypeError ? `Could not reach the server: ${err.message}` : String(err.message ?? err);
    ui.errorDetail.textContent = '';
  }
}

function clearError() {
  ui.error.hidden = true;
  ui.errorMessage.textContent = '';
  ui.errorDetail.textContent = '';
}

function showFacts(facts) {
  ui.facts.replaceChildren();
  for (const [term, value] of facts) {
    if (value === undefined || value === '') continue;
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    dd.textContent = value;
    ui.facts.append(dt, dd);
  }
  ui.facts.hidden = ui.facts.childElementCount === 0;
}

const recording = () => state.recorder !== null || state.askingMicrophone;
/**
 * A request may start only when none runs, no recording is under way (its end replaces the source) and no
 * live session holds the microphone and the transcript.
 */
const canStartRequest = () => state.inFlight === null && !recording() && state.live === null;

/**
 * The controls follow from the state, never from who calls: a recording that stops by itself while a request
 * runs cannot hide that request's Cancel. While a request runs, Cancel is shown and whatever could start another
 * request or change this one (options included) is disabled; while recording, nothing can start a request (the
 * recording replaces the source when Stop is pressed, and is transcribed then).
 */
function syncControls() {
  const busy = state.inFlight !== null;
  ui.transcribe.disabled = !state.source || !canStartRequest();
  ui.cancel.hidden = !busy;
  // Record stays enabled while the microphone is asked for (toggleRecording ignores a second press): disabling
  // the button under a keyboard user's focus would drop that focus to <body>.
  const live = state.live !== null;
  ui.record.disabled = (busy && !recording()) || live;
  // The same for the live button, which is its own Stop.
  ui.live.disabled = busy || recording();
  ui.file.disabled = busy || recording() || live;
  // A live session's settings are sent once, as it starts.
  ui.language.disabled = busy || live;
  ui.prompt.disabled = busy || live;
  ui.format.disabled = busy;
  ui.transcript.setAttribute('aria-busy', String(busy));
  // A failed or cancelled subtitle request leaves the transcript, and what can be done with it, in place.
  const ready = !busy && !live && state.transcribed;
  ui.copy.disabled = !(ready || (!live && state.liveTranscribed));
  ui.downloadSrt.disabled = !ready || recording();
  ui.downloadVtt.disabled = !ready || recording();
}

/**
 * One request at a time, whatever it is for: busy while it runs (Cancel shown, the rest disabled), the clock
 * running, and its end in the status: `work`'s own on success, Cancelled, or `failedText` with the API's words.
 */
async function runRequest(statusText, failedText, work) {
  const controller = new AbortController();
  state.inFlight = controller;
  clearError();
  setState('uploading', statusText);
  syncControls();
  const stopClock = startClock();
  try {
    await work(controller.signal, stopClock);
  } catch (err) {
    stopClock();
    if (err instanceof DOMException && err.name === 'AbortError') {
      setState('cancelled', 'Cancelled');
    } else {
      setState('error', failedText);
      showError(err);
    }
  } finally {
    state.inFlight = null;
    // Cancel disappears with the request: keep keyboard focus on the page rather than losing it to <body>.
    const focusWasOnCancel = document.activeElement === ui.cancel;
    syncControls();
    if (focusWasOnCancel) ui.transcribe.focus();
  }
}

// ---------- the API ----------

function authHeaders(key) {
  return key ? { authorization: `Bearer ${key}` } : {};
}

async function failure(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON (a proxy's page, say): the status is all there is
  }
  return new ApiFailure(body, res.status);
}

/** The first model id in a GET /v1/models body, or null when it lists none (or is not such a list). */
function firstModelId(text) {
  try {
    const id = JSON.parse(text)?.data?.[0]?.id;
    return typeof id === 'string' && id !== '' ? id : null;
  } catch {
    return null;
  }
}

/**
 * The served model id, asked of the API once per key (SERVED_MODEL_ID is configurable). No guessed default
 * when the list is empty: a guess fails later as model_not_found and hides that the server (or a proxy in
 * front of it) is not answering as this one does.
 */
async function modelId(key, signal) {
  if (!state.models.has(key)) {
    const res = await fetch('v1/models', { headers: authHeaders(key), signal });
    if (!res.ok) throw await failure(res);
    const id = firstModelId(await res.text());
    if (id === null) throw new Error('The server lists no model to transcribe with: GET /v1/models answered no model id.');
    state.models.set(key, id);
  }
  return state.models.get(key);
}

/**
 * What a request asks for, read from the form once, as it starts: its answer is filed under what was asked,
 * not under whatever the form says when the answer arrives.
 */
function askFor(format) {
  return { format, language: ui.language.value, prompt: ui.prompt.value.trim(), key: ui.apiKey.value.trim() };
}

/** The key under which an answer is kept for the current source. */
const answerKey = (asked) => `${asked.format}|${asked.language}|${asked.prompt}`;

async function postTranscription(asked, stream, signal) {
  const form = new FormData();
  form.append('file', state.source.blob, state.source.name);
  form.append('model', await modelId(asked.key, signal));
  form.append('response_format', asked.format);
  if (asked.language) form.append('language', asked.language);
  if (asked.prompt) form.append('prompt', asked.prompt);
  if (stream) form.append('stream', 'true');
  const res = await fetch('v1/audio/transcriptions', { method: 'POST', headers: authHeaders(asked.key), body: form, signal });
  if (!res.ok) throw await failure(res);
  return res;
}

/** Server-Sent Events from a fetch body: `{ event, data }` per message, until `data: [DONE]` or the end. */
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length === 0) continue;
      if (data.join('\n') === '[DONE]') return;
      yield { event, data: data.join('\n') };
    }
  }
}

// ---------- transcribing ----------

async function transcribe() {
  if (!state.source || !canStartRequest()) return;
  const asked = askFor(ui.format.value);
  const stream = STREAMED_FORMATS.has(asked.format);
  state.transcribed = false;
  state.liveTranscribed = false;
  ui.downloadNote.hidden = true;
  ui.transcript.textContent = '';
  ui.transcript.classList.toggle('mono', !stream);
  showFacts([['Audio', formatSeconds(state.source.seconds)]]);
  const uploading = `Uploading ${formatBytes(state.source.blob.size)} and ${stream ? 'decoding' : 'transcribing'}…`;
  await runRequest(uploading, 'Failed', async (signal, stopClock) => {
    const res = await postTranscription(asked, stream, signal);
    const facts = stream ? await showStream(res) : await showBody(res, asked);
    const took = stopClock();
    state.transcribed = true;
    setState('done', 'Done');
    showFacts([['Audio', formatSeconds(state.source.seconds)], ['Took', formatSeconds(took)], ...facts]);
  });
}

/** json/text with stream=true: deltas are appended as they arrive; the done event's text is the final word. */
async function showStream(res) {
  setState('transcribing', 'Transcribing…');
  const live = document.createTextNode('');
  ui.transcript.replaceChildren(live);
  let done = null;
  let deltas = 0;
  for await (const { event, data } of serverSentEvents(res.body)) {
    const payload = JSON.parse(data);
    if (event === 'error' || payload.error) throw new ApiFailure(payload, null);
    if (payload.type === 'transcript.text.delta') {
      live.appendData(payload.delta);
      deltas += 1;
    } else if (payload.type === 'transcript.text.done') {
      done = payload;
    }
  }
  if (!done) throw new Error('The event stream ended before the transcript was complete.');
  if (live.data !== done.text) live.data = done.text;
  const u = done.usage;
  return [
    ['Streamed', `${deltas} text ${deltas === 1 ? 'delta' : 'deltas'}`],
    ['Tokens', u ? `${u.input_tokens} in (${u.input_token_details?.audio_tokens ?? '?'} audio), ${u.output_tokens} out` : undefined],
  ];
}

/** srt, vtt, verbose_json: shown when the whole answer is there. */
async function showBody(res, asked) {
  setState('transcribing', 'Receiving…');
  const body = await res.text();
  state.bodies.set(answerKey(asked), body);
  if (asked.format !== 'verbose_json') {
    ui.transcript.textContent = body;
    return [];
  }
  const json = JSON.parse(body);
  ui.transcript.textContent = JSON.stringify(json, null, 2);
  return [
    ['Duration', formatSeconds(json.duration)],
    ['Language', json.language],
    ['Segments', String(json.segments?.length ?? 0)],
    ['Billed', json.usage ? `${json.usage.seconds} s` : undefined],
  ];
}

// ---------- copy and download ----------

async function copyTranscript() {
  const text = ui.transcript.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No Clipboard API outside a secure context (plain http to another host): select the text instead.
    window.getSelection().selectAllChildren(ui.transcript);
    document.execCommand('copy');
  }
  flash(ui.copy, 'Copied');
}

function flash(button, text) {
  const before = button.textContent;
  button.textContent = text;
  setTimeout(() => { button.textContent = before; }, 1500);
}

function saveAs(body, format) {
  const type = format === 'vtt' ? 'text/vtt' : 'application/x-subrip';
  const url = URL.createObjectURL(new Blob([body], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = `${state.source.name.replace(/\.[^.]*$/, '') || 'transcript'}.${format}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * Subtitles need segment timings, which the text stream does not carry: the same audio is posted once more
 * with that response_format (once per format and language; the answer is kept for the next click). That
 * re-post is a request like any other: busy, cancellable, its failure shown.
 */
async function download(format) {
  const asked = askFor(format);
  const key = answerKey(asked);
  if (!state.bodies.has(key)) {
    if (!canStartRequest()) return;
    ui.downloadNote.hidden = false;
    ui.downloadNote.textContent = `Asking the server for .${format} timings (the audio is sent once more)…`;
    await runRequest(`Preparing .${format}…`, `Could not prepare .${format}`, async (signal, stopClock) => {
      const res = await postTranscription(asked, false, signal);
      state.bodies.set(key, await res.text());
      stopClock();
      setState('done', `Done · .${format} ready`);
    });
    ui.downloadNote.hidden = true;
    if (!state.bodies.has(key)) return;
  }
  saveAs(state.bodies.get(key), format);
}

// ---------- the audio source ----------

/**
 * The picked File (or the recorded Blob) is the page's only copy of the audio: the player's object URL and each
 * request's FormData refer to it, and the browser reads a picked file from disk as it uploads.
 */
function setSource(blob, name, seconds) {
  state.source = { blob, name, seconds };
  state.bodies.clear();
  if (state.playerUrl) URL.revokeObjectURL(state.playerUrl);
  state.playerUrl = URL.createObjectURL(blob);
  ui.player.src = state.playerUrl;
  ui.source.hidden = false;
  ui.sourceName.textContent = name;
  // The size is in plain sight: the server's upload limit is not known here, and a big file takes a while to send.
  ui.sourceSize.textContent = formatBytes(blob.size);
  ui.sourceLength.textContent = formatSeconds(seconds);
  syncControls();
}

// A picked file's length comes from the player once it has read the header (recordings know theirs).
ui.player.addEventListener('loadedmetadata', () => {
  if (!state.source || Number.isFinite(state.source.seconds) || !Number.isFinite(ui.player.duration)) return;
  state.source.seconds = ui.player.duration;
  ui.sourceLength.textContent = formatSeconds(ui.player.duration);
});

function takeFile(file) {
  if (!file || !canStartRequest()) return;
  setSource(file, file.name, NaN);
  void transcribe();
}

ui.file.addEventListener('change', () => {
  takeFile(ui.file.files[0]);
  ui.file.value = ''; // the same file can be picked again
});

// Dropping anywhere on the page counts; the browser must not open the file instead. While a request runs or
// the microphone records, a drop is refused (and the pointer says so), as the disabled file input is.
for (const type of ['dragenter', 'dragover']) {
  document.addEventListener(type, (e) => {
    e.preventDefault();
    const accepted = canStartRequest();
    if (e.dataTransfer) e.dataTransfer.dropEffect = accepted ? 'copy' : 'none';
    ui.dropzone.classList.toggle('dragging', accepted);
  });
}
document.addEventListener('dragleave', (e) => {
  if (e.relatedTarget === null) ui.dropzone.classList.remove('dragging');
});
document.addEventListener('drop', (e) => {
  e.preventDefault();
  ui.dropzone.classList.remove('dragging');
  takeFile(e.dataTransfer?.files[0]);
});

// ---------- recording ----------

const RECORDING_TYPES = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/mp4'];

function recordingNote(text) {
  ui.recordNote.hidden = !text;
  ui.recordNote.textContent = text;
}

async function toggleRecording() {
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  if (state.inFlight || state.askingMicrophone) return;
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === 'undefined') {
    recordingNote('This browser cannot record here: microphones need HTTPS (or localhost) and MediaRecorder.');
    return;
  }
  // Asking counts as recording: a request started while the prompt is open would run beside the microphone.
  state.askingMicrophone = true;
  syncControls();
  let stream = null;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    recordingNote(`No microphone: ${err.message}`);
  }
  state.askingMicrophone = false;
  if (!stream) {
    syncControls();
    return;
  }
  recordingNote('');
  const mimeType = RECORDING_TYPES.find((t) => MediaRecorder.isTypeSupported(t));
  const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : {});
  const chunks = [];
  const stopClock = startClock();
  recorder.addEventListener('dataavailable', (e) => { if (e.data.size > 0) chunks.push(e.data); });
  recorder.addEventListener('stop', () => {
    const seconds = stopClock();
    for (const track of stream.getTracks()) track.stop();
    state.recorder = null;
    ui.record.setAttribute('aria-pressed', 'false');
    ui.record.classList.remove('recording');
    ui.recordLabel.textContent = 'Record from the microphone';
    const type = recorder.mimeType || chunks[0]?.type || 'audio/webm';
    const extension = type.includes('mp4') ? 'm4a' : type.includes('ogg') ? 'ogg' : 'webm';
    const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
    setSource(new Blob(chunks, { type }), `recording-${stamp}.${extension}`, seconds);
    void transcribe();
  });
  state.recorder = recorder;
  recorder.start(250);
  syncControls();
  ui.record.setAttribute('aria-pressed', 'true');
  ui.record.classList.add('recording');
  ui.recordLabel.textContent = 'Stop recording';
  setState('recording', 'Recording…');
}

// ---------- live transcription ----------

function showLiveButton(on) {
  ui.live.setAttribute('aria-pressed', String(on));
  ui.live.classList.toggle('recording', on);
  ui.liveLabel.textContent = on ? 'Stop live transcription' : 'Transcribe live';
}

/**
 * The transcript as turns: one paragraph per turn, placed after the turn the server says came before it
 * (turns may finish out of order), its text growing by the deltas and replaced by the final transcript.
 */
function liveView(counts) {
  const turns = new Map();
  const turn = (id, previousId) => {
    let t = turns.get(id);
    if (!t) {
      const p = document.createElement('p');
      p.className = 'turn';
      p.dataset.state = 'partial';
      p.dataset.itemId = id;
      const text = document.createTextNode('');
      p.append(text);
      t = { p, text };
      turns.set(id, t);
      ui.transcript.append(p);
    }
    const previous = previousId ? turns.get(previousId) : undefined;
    if (previous && previous.p.nextSibling !== t.p) previous.p.after(t.p);
    return t;
  };
  return {
    item: (id, previousId) => void turn(id, previousId),
    delta: (id, text) => {
      turn(id, null).text.appendData(text);
      counts.deltas += 1;
    },
    completed: (id, transcript) => {
      const t = turn(id, null);
      // The final text equals the deltas joined; should it not, the server's final word is what stays.
      if (t.text.data !== transcript) t.text.data = transcript;
      t.p.dataset.state = 'final';
      counts.turns += 1;
    },
    failed: (id, message) => {
      const t = turn(id, null);
      t.p.dataset.state = 'failed';
      t.text.data = `${t.text.data}${t.text.data ? ' ' : ''}[not transcribed: ${message}]`;
    },
    error: (failure) => showError(failure),
    turns,
  };
}

async function toggleLive() {
  if (state.live) {
    // A second press while connecting starts nothing more; once streaming, it is Stop.
    if (state.live.started && !state.live.stopping) {
      setState('transcribing', 'Finishing the last turn…');
      await state.live.stop();
    }
    return;
  }
  if (!canStartRequest()) return;
  if (!liveSupported()) {
    recordingNote('Live transcription needs a microphone and AudioWorklet, which browsers allow only on HTTPS (or localhost).');
    return;
  }
  const asked = askFor('live');
  const counts = { deltas: 0, turns: 0 };
  const view = liveView(counts);
  let stopClock = () => 0;
  const session = new LiveSession({
    ...view,
    ended: (failure) => {
      const seconds = stopClock();
      state.live = null;
      const focusWasOnLive = document.activeElement === ui.live;
      showLiveButton(false);
      state.liveTranscribed = view.turns.size > 0;
      if (failure) {
        setState('error', 'Live transcription stopped');
        showError(failure);
      } else {
        setState('done', 'Done');
      }
      showFacts([
        ['Live for', formatSeconds(seconds)],
        ['Audio sent', formatSeconds(session.seconds)],
        ['Turns', String(counts.turns)],
        ['Streamed', `${counts.deltas} text ${counts.deltas === 1 ? 'delta' : 'deltas'}`],
      ]);
      syncControls();
      if (focusWasOnLive) ui.live.focus();
    },
  });
  state.live = session;
  state.transcribed = false;
  state.liveTranscribed = false;
  recordingNote('');
  clearError();
  ui.transcript.replaceChildren();
  ui.transcript.classList.remove('mono');
  showFacts([]);
  showLiveButton(true);
  setState('uploading', 'Connecting…');
  syncControls();
  try {
    // Asking for the model id first also checks the key, with the API's own words when it is refused.
    const model = await modelId(asked.key);
    await session.start({ key: asked.key, model, language: asked.language, prompt: asked.prompt });
  } catch (err) {
    state.live = null;
    showLiveButton(false);
    setState('error', 'Live transcription failed');
    showError(err);
    syncControls();
    return;
  }
  stopClock = startClock();
  setState('live', 'Listening: text appears as you speak');
}

// ---------- wiring ----------

for (const name of LANGUAGES) ui.language.add(new window.Option(name, name));
ui.apiKey.value = localStorage.getItem(KEY_STORAGE) ?? '';
ui.apiKey.addEventListener('input', () => {
  const key = ui.apiKey.value.trim();
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
});
ui.record.addEventListener('click', () => void toggleRecording());
ui.live.addEventListener('click', () => void toggleLive());
ui.transcribe.addEventListener('click', () => void transcribe());
ui.cancel.addEventListener('click', () => state.inFlight?.abort());
ui.copy.addEventListener('click', () => void copyTranscript());
ui.downloadSrt.addEventListener('click', () => void download('srt'));
ui.downloadVtt.addEventListener('click', () => void download('vtt'));
