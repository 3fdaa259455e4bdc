/**
 * npm run fixture-model -- <dir> [--variant NAME]
 *   Writes a small generated stand-in for the Mega-ASR ONNX model directory (see tools/fixture/graphs.ts).
 * npm run fixture-model -- <dir> --full-size [--batch dynamic|1] [--kv float16|float32] [--stop-after N | --scripted-text] [--seed S]
 *   Writes the full-size stand-in: Qwen3-ASR-1.7B's shapes with random 4-bit weights (see tools/full-size/);
 *   --scripted-text makes it say a fixed script as far as its audio allows (tools/full-size/script.ts).
 */
import { parseArgs } from 'node:util';
import { FIXTURE_VARIANTS, writeFixtureModel, type FixtureVariantName } from './fixture/model-dir.js';
import { writeFullSizeModel } from './full-size/model-dir.js';

const USAGE = `usage: npm run fixture-model -- <dir> [--variant ${Object.keys(FIXTURE_VARIANTS).join('|')}]
       npm run fixture-model -- <dir> --full-size [--batch dynamic|1] [--kv float16|float32] [--stop-after N | --scripted-text] [--seed S]`;

function fail(message: string): never {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

const { positionals, values } = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        variant: { type: 'string' },
        'full-size': { type: 'boolean', default: false },
        batch: { type: 'string', default: 'dynamic' },
        kv: { type: 'string', default: 'float16' },
        'stop-after': { type: 'string' },
        'scripted-text': { type: 'boolean', default: false },
        seed: { type: 'string', default: '1' },
      },
    });
  } catch (err) {
    return fail((err as Error).message);
  }
})();
const [dir, ...extra] = positionals;
if (!dir || extra.length > 0) fail('expected one directory');

const integer = (name: string, text: string) => {
  if (!/^\d+$/.test(text)) fail(`--${name} must be a whole number; got ${text}`);
  return Number(text);
};

if (values['full-size']) {
  if (values.variant !== undefined) fail('--variant is for the small fixture; --full-size has its own options');
  if (values.batch !== 'dynamic' && values.batch !== '1') fail(`--batch must be dynamic or 1; got ${values.batch}`);
  if (values.kv !== 'float16' && values.kv !== 'float32') fail(`--kv must be float16 or float32; got ${values.kv}`);
  if (values['scripted-text'] && values['stop-after'] !== undefined) fail('--stop-after and --scripted-text exclude each other: the script decides when to stop');
  const report = writeFullSizeModel(dir, {
    batch: values.batch === '1' ? 1 : 'dynamic',
    kv: values.kv,
    seed: integer('seed', values.seed),
    ...(values['stop-after'] !== undefined ? { stopAfter: integer('stop-after', values['stop-after']) } : {}),
    ...(values['scripted-text'] ? { scriptedText: true } : {}),
  });
  const total = Object.values(report.files).reduce((a, b) => a + b, 0);
  for (const [file, bytes] of Object.entries(report.files)) console.log(`${(bytes / 2 ** 20).toFixed(1).padStart(9)} MiB  ${file}`);
  console.log(`wrote the full-size stand-in to ${dir} in ${report.seconds.toFixed(1)} s (${(total / 2 ** 30).toFixed(2)} GiB listed; the step's .data is a hard link to the prefill's)`);
} else {
  if (values['scripted-text'] || values['stop-after'] !== undefined) fail('--scripted-text and --stop-after are for --full-size');
  const variant = (values.variant ?? 'default') as FixtureVariantName;
  if (!(variant in FIXTURE_VARIANTS)) fail(`unknown variant ${variant}`);
  writeFixtureModel(dir, variant);
  console.log(`wrote fixture model (${variant}) to ${dir}`);
}
