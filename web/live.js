/* global window, navigator, location, WebSocket, AudioContext, AudioWorkletNode, URL, btoa, setTimeout, clearTimeout */
// Live transcription: the microphone, through the PCM worklet, over OpenAI's Realtime transcription protocol
// (GET /v1/realtime?intent=transcription). No DOM here: the page shows what the listener is told.

const WORKLET = 'pcm-worklet.js';
/** How long Stop waits for the last turn's transcript before closing anyway. */
const FINISH_TIMEOUT_MS = 30_000;
/** How long the server may take to open the session and take its settings. */
const SETUP_TIMEOUT_MS = 15_000;

/** An `error` event or a refused connection, in the API's words. */
export class LiveFailure extends Error {
  constructor(message, { code = null, type = null, param = null, closeCode = null } = {}) {
    super(message);
    this.code = code;
    this.type = type;
    this.param = param;
    this.closeCode = closeCode;
  }
}

/** Whether this page can do live transcription at all: microphones and worklets need a secure context. */
export function liveSupported() {
  return window.isSecureContext && !!navigator.mediaDevices?.getUserMedia && typeof AudioWorkletNode !== 'undefined';
}

/** ws: or wss: to this page's origin (and path: the page may be served under a prefix). */
function realtimeUrl() {
  const url = new URL('v1/realtime?intent=transcription', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

/** Base64 of bytes, in slices (String.fromCharCode takes only so many arguments). */
function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function failureOf(event) {
  const e = event.error ?? {};
  return new LiveFailure(typeof e.message === 'string' ? e.message : 'The server reported an error.', e);
}

/**
 * One live session: opens the socket and the microphone, streams 24 kHz PCM16 appends until stop(), then
 * commits the open turn, waits for every turn's transcript and closes. `on` is told:
 *   item(id, previousId)  a turn exists (speech started or committed), to be shown after previousId
 *   delta(id, text)       more of that turn's text (append-only)
 *   completed(id, text)   the turn's final text
 *   failed(id, message)   the turn could not be transcribed
 *   error(LiveFailure)    an `error` event, or the last transcript not arriving in time (the session goes on)
 *   ended(LiveFailure|null) the session is over: cleanly (null), or closed by the server or the network
 */
export class LiveSession {
  constructor(on) {
    this.on = on;
    this.socket = null;
    this.audio = null;
    /** turns not yet completed or failed, and those that are, by item id */
    this.open = new Set();
    this.done = new Set();
    /** a turn is under way on the server (speech started, not yet committed) */
    this.speaking = false;
    /** start() has resolved: from then on the listener hears ended() exactly once */
    this.started = false;
    this.stopping = false;
    this.ended = false;
    /** seconds of audio sent */
    this.seconds = 0;
    /** how the session ended (null: cleanly) */
    this.failure = null;
    this.whenEnded = new Promise((resolve) => (this.endedResolve = resolve));
    this.whenSettled = new Promise((resolve) => (this.settledResolve = resolve));
  }

  /**
   * Connects and starts streaming with the model, language ('' to detect) and prompt (or ''); the API key (or '')
   * goes as a subprotocol (browsers cannot set headers on a WebSocket). Rejects with a LiveFailure.
   */
  async start({ key, model, language, prompt }) {
    const protocols = ['realtime'];
    if (key) protocols.push(`openai-insecure-api-key.${key}`);
    let socket;
    try {
      socket = new WebSocket(realtimeUrl(), protocols);
    } catch (err) {
      // A key with characters a subprotocol cannot carry, say.
      throw new LiveFailure(`Cannot open the live connection: ${err.message}`);
    }
    this.socket = socket;
    // The session must be created and the settings taken before audio flows: a refused setting shows now.
    await this.setUp(socket, { model, language, prompt });
    socket.addEventListener('message', (e) => this.receive(e.data));
    socket.addEventListener('close', (e) => this.closed(e));
    try {
      await this.listen();
    } catch (err) {
      this.finish(new LiveFailure(`No microphone: ${err.message}`));
    }
    // The microphone failed, or the server closed while it was being opened.
    if (this.ended) throw this.failure;
    this.started = true;
  }

  setUp(socket, { model, language, prompt }) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new LiveFailure('The server did not start the live session in time.')), SETUP_TIMEOUT_MS);
      const done = () => {
        clearTimeout(timer);
        socket.removeEventListener('message', message);
        socket.removeEventListener('close', close);
      };
      const fail = (failure) => {
        done();
        socket.close();
        reject(failure);
      };
      const message = (e) => {
        let event;
        try {
          event = JSON.parse(e.data);
        } catch {
          return;
        }
        if (event.type === 'session.created') {
          const transcription = { model };
          if (language) transcription.language = language;
          if (prompt) transcription.prompt = prompt;
          socket.send(JSON.stringify({
            type: 'session.update',
            session: {
              type: 'transcription',
              audio: {
                input: {
                  format: { type: 'audio/pcm', rate: 24000 },
                  transcription,
                  // The server ends a turn at a pause; Stop commits the turn still open.
                  turn_detection: { type: 'server_vad' },
                },
              },
            },
          }));
        } else if (event.type === 'session.updated') {
          done();
          resolve();
        } else if (event.type === 'error') {
          fail(failureOf(event));
        }
      };
      // The browser says nothing about a refused upgrade (401, 1013…): the close code and reason are all there is.
      const close = (e) => fail(new LiveFailure(closeMessage(e), { closeCode: e.code }));
      socket.addEventListener('message', message);
      socket.addEventListener('close', close);
    });
  }

  async listen() {
    const audio = { stream: null, context: new AudioContext(), node: null };
    this.audio = audio;
    // The worklet first: what the microphone says before it is in place would be lost.
    await audio.context.audioWorklet.addModule(WORKLET);
    audio.node = new AudioWorkletNode(audio.context, 'pcm16-24k', { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
    audio.node.port.onmessage = (e) => {
      if (e.data instanceof ArrayBuffer) this.send(e.data);
    };
    // Connected to the output so that the browser runs it; it writes silence there.
    audio.node.connect(audio.context.destination);
    // The raw signal: the browser's noise suppression and gain control reshape speech the model is trained on.
    audio.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    if (this.audio !== audio) {
      // The session ended (and released the audio) while the microphone was being opened.
      for (const track of audio.stream.getTracks()) track.stop();
      return;
    }
    audio.context.createMediaStreamSource(audio.stream).connect(audio.node);
    if (audio.context.state === 'suspended') await audio.context.resume();
  }

  send(pcm) {
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    this.socket.send(JSON.stringify({ type: 'input_audio_buffer.append', audio: base64(pcm) }));
    this.seconds += pcm.byteLength / 2 / 24000;
  }

  receive(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    switch (event.type) {
      case 'input_audio_buffer.speech_started':
        this.speaking = true;
        this.track(event.item_id, null);
        break;
      case 'input_audio_buffer.committed':
        this.speaking = false;
        this.track(event.item_id, event.previous_item_id ?? null);
        break;
      case 'conversation.item.input_audio_transcription.delta':
        this.track(event.item_id, null);
        if (event.delta) this.on.delta(event.item_id, event.delta);
        break;
      case 'conversation.item.input_audio_transcription.completed':
        this.track(event.item_id, null);
        this.on.completed(event.item_id, event.transcript ?? '');
        this.settle(event.item_id);
        break;
      case 'conversation.item.input_audio_transcription.failed':
        this.track(event.item_id, null);
        this.on.failed(event.item_id, event.error?.message ?? 'The transcription failed.');
        this.settle(event.item_id);
        break;
      case 'input_audio_buffer.cleared':
        this.speaking = false;
        break;
      case 'error':
        // Stop's commit finds nothing to commit when the last turn ended by itself: expected, not shown.
        if (this.stopping && event.error?.code === 'input_audio_buffer_commit_empty') {
          this.speaking = false;
          this.maybeFinished();
          break;
        }
        this.on.error(failureOf(event));
        break;
      default:
        break;
    }
  }

  /** Notes a turn the first time any event names it. */
  track(id, previousId) {
    if (!id) return;
    this.on.item(id, previousId);
    if (!this.done.has(id)) this.open.add(id);
  }

  settle(id) {
    this.open.delete(id);
    this.done.add(id);
    this.maybeFinished();
  }

  maybeFinished() {
    if (this.stopping && !this.speaking && this.open.size === 0) this.settledResolve();
  }

  /**
   * Stops the microphone, sends the audio still in the worklet, commits the turn under way and waits (at most
   * FINISH_TIMEOUT_MS) until every turn has its transcript, then closes the socket.
   */
  async stop() {
    if (this.stopping || this.ended) return;
    this.stopping = true;
    await this.release(true);
    if (this.socket?.readyState === WebSocket.OPEN && this.speaking) {
      this.socket.send(JSON.stringify({ type: 'input_audio_buffer.commit' }));
    }
    this.maybeFinished();
    let timer;
    const late = new Promise((resolve) => (timer = setTimeout(() => resolve('late'), FINISH_TIMEOUT_MS)));
    const how = await Promise.race([this.whenSettled, late, this.whenEnded]);
    clearTimeout(timer);
    if (how === 'late') this.on.error(new LiveFailure('The last transcript did not arrive in time; the connection was closed without it.'));
    this.finish(null);
  }

  /** Stops the microphone and the audio graph; with `flush`, first sends what the worklet still holds. */
  async release(flush) {
    const audio = this.audio;
    this.audio = null;
    if (!audio) return;
    for (const track of audio.stream?.getTracks() ?? []) track.stop();
    if (flush && audio.node) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 1000);
        audio.node.port.onmessage = (e) => {
          if (e.data instanceof ArrayBuffer) this.send(e.data);
          else if (e.data === 'flushed') {
            clearTimeout(timer);
            resolve();
          }
        };
        audio.node.port.postMessage('flush');
      });
    }
    audio.node?.disconnect();
    await audio.context.close().catch(() => {});
  }

  closed(e) {
    if (this.ended) return;
    // Closed by the server or the network while still in use.
    this.finish(new LiveFailure(closeMessage(e), { closeCode: e.code }));
  }

  /** Ends the session once: audio released, socket closed, the listener told how it ended. */
  finish(failure) {
    if (this.ended) return;
    this.ended = true;
    this.failure = failure;
    void this.release(false);
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000, failure ? 'client error' : 'done');
    this.endedResolve('ended');
    if (this.started) this.on.ended(failure);
  }
}

function closeMessage(e) {
  if (e.reason) return `The server closed the live connection: ${e.reason} (code ${e.code}).`;
  if (e.code === 1006) return 'Could not open the live connection, or it broke (code 1006): the server may have refused the key or be unreachable.';
  return `The live connection closed (code ${e.code}).`;
}
