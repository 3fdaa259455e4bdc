/**
 * npm run fixture-model -- <dir> [--variant NAME]
 * Writes a generated stand-in for the Mega-ASR ONNX model directory (see tools/fixture/graphs.ts).
 */
import { parseArgs } from 'node:util';
import { FIXTURE_VARIANTS, writeFixtureModel, type FixtureVariantName } from './fixture/model-dir.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { variant: { type: 'string', default: 'default' } },
});
const [dir] = positionals;
const variant = values.variant as FixtureVariantName;
if (!dir || !(variant in FIXTURE_VARIANTS)) {
  console.error(`usage: npm run fixture-model -- <dir> [--variant ${Object.keys(FIXTURE_VARIANTS).join('|')}]`);
  process.exit(2);
}
writeFixtureModel(dir, variant);
console.log(`wrote fixture model (${variant}) to ${dir}`);
