#!/usr/bin/env node
// onnxruntime reads this when it initialises, so it is set before the engine module is loaded.
process.env.ORT_DISABLE_TELEMETRY ??= '1';

const { main } = await import('./cli/main.js');
process.exitCode = await main(process.argv.slice(2));
