/**
 * Load test: the real service under concurrent OpenAI-style uploads.
 *
 *   ORT_DISABLE_TELEMETRY=1 npm run bench:load -- [--connections 4] [--seconds 20] [--clip noise] [--workers 1]
 *
 * Without MODEL_DIR it serves a generated model (measures the HTTP + pool + pipeline overhead around a trivial
 * network); with MODEL_DIR=/path/to/mega-asr-onnx (and ASR_DEVICE=cuda on a GPU host) it measures the real model.
 */
process.env.ORT_DISABLE_TELEMETRY ??= '1';

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { loadConfig } from '../src/config.js';
import { startServer } from '../src/server.js';
import { fixtureModel } from '../test/support/fixture-models.js';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '20' },
    clip: { type: 'string', default: 'noise' },
    workers: { type: 'string', default: '1' },
  },
});

const clipPath = join(process.env.SHARED_DIR ?? join(import.meta.dirname, '..', '..', 'shared'), 'fixtures', 'voices-in-the-wild', `${values.clip}.wav`);
const audio = readFileSync(clipPath);
const audioSeconds = (audio.length - 44) / 2 / 24000;

const modelDir = process.env.MODEL_DIR ?? fixtureModel('default');
const config = loadConfig({
  ...process.env,
  MODEL_DIR: modelDir,
  HOST: '127.0.0.1',
  PORT: '0',
  LOG_LEVEL: 'warn',
  WORKERS: values.workers,
  MAX_QUEUE: String(Number(values.connections) * 2),
});
const server = await startServer(config);
await server.ready;
const { port } = server.app.server.address() as { port: number };

const boundary = 'megaasrbench';
const body = Buffer.concat([
  Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nmega-asr\r\n`),
  Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${values.clip}.wav"\r\nContent-Type: application/octet-stream\r\n\r\n`),
  audio,
  Buffer.from(`\r\n--${boundary}--\r\n`),
]);

const result = await autocannon({
  url: `http://127.0.0.1:${port}/v1/audio/transcriptions`,
  method: 'POST',
  headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
  body,
  connections: Number(values.connections),
  duration: Number(values.seconds),
});
await server.stop('bench done');

const ok = result['2xx'];
console.log(`\nload: ${values.clip}.wav (${audioSeconds.toFixed(2)} s of audio), ${values.connections} connections, ${values.workers} worker(s), ${values.seconds} s`);
console.log(`model: ${process.env.MODEL_DIR ? modelDir : 'generated fixture (pipeline and service overhead only)'}, device: ${config.ASR_DEVICE}`);
console.log('');
console.log('| metric | value |');
console.log('|---|---:|');
console.log(`| requests ok / non-2xx / errors | ${ok} / ${result.non2xx} / ${result.errors} |`);
console.log(`| requests per second | ${(ok / result.duration).toFixed(1)} |`);
console.log(`| audio seconds per second | ${((ok * audioSeconds) / result.duration).toFixed(1)} |`);
console.log(`| latency p50 / p90 / p99 (ms) | ${result.latency.p50} / ${result.latency.p90} / ${result.latency.p99} |`);
process.exit(0);
