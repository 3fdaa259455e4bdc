/**
 * Does onnxruntime-node's WebGPU (or CUDA) provider load here, and does it compute? Runs a tiny graph
 * (MatMul + Add + Relu, built in memory) on that provider and on cpu and compares the outputs.
 *
 *   node --import tsx bench/device/probe.ts [webgpu|cuda]      (bundled as probe.mjs by bench/device/pack.sh)
 *
 * Prints one line starting with the provider's name. Exit 0 when it works, 3 when WebGPU found no adapter, 4 for
 * any other failure (provider not loadable, session or run error, wrong result), so a shell script can stop early
 * with that line.
 */
process.env.ORT_DISABLE_TELEMETRY ??= '1';

const { InferenceSession, Tensor } = await import('onnxruntime-node');
const { GraphBuilder } = await import('../../tools/onnx-graph.js');

const N = 16; // 16x16 float32 weights = 1 KiB: small enough to stay inside the model bytes

function probeModel(): Uint8Array {
  const g = new GraphBuilder('webgpu_probe');
  const x = g.input('x', 'float32', [1, N]);
  const w = g.f32(Array.from({ length: N * N }, (_, i) => ((i * 7) % 13) / 13 - 0.5), [N, N]);
  const b = g.f32(Array.from({ length: N }, (_, i) => i / N - 0.25));
  g.output('y', 'float32', [1, N], g.op('Relu', [g.op('Add', [g.op('MatMul', [x, w]), b])]));
  return g.build('unused.data').model;
}

type Provider = 'webgpu' | 'cuda' | 'cpu';

async function run(model: Uint8Array, provider: Provider): Promise<Float32Array> {
  const session = await InferenceSession.create(model, { executionProviders: [provider] });
  try {
    const x = new Tensor('float32', Float32Array.from({ length: N }, (_, i) => Math.sin(i)), [1, N]);
    const out = await session.run({ x });
    return out.y!.data as Float32Array;
  } finally {
    await session.release();
  }
}

const provider = process.argv[2] ?? 'webgpu';
if (provider !== 'webgpu' && provider !== 'cuda') {
  console.error(`usage: probe [webgpu|cuda]; got '${provider}'`);
  process.exit(2);
}
const model = probeModel();
const expected = await run(model, 'cpu');
const started = performance.now();
let got: Float32Array;
try {
  got = await run(model, provider);
} catch (err) {
  // Keep the reason, not onnxruntime's source location in front of it.
  const message = String((err as Error).message ?? err).split('\n')[0]!.replace(/^.* was false\. /, '');
  // onnxruntime words it "Failed to get a WebGPU adapter: No supported adapters" (Dawn found no Vulkan device).
  const noAdapter = provider === 'webgpu' && /adapter/i.test(message);
  console.log(`${provider}: ${noAdapter ? 'NO ADAPTER' : 'FAILED'}: ${message}`);
  process.exit(noAdapter ? 3 : 4);
}
const maxDiff = expected.reduce((m, v, i) => Math.max(m, Math.abs(v - got[i]!)), 0);
if (!(maxDiff < 1e-3)) {
  console.log(`${provider}: FAILED: result differs from the CPU provider's by ${maxDiff}`);
  process.exit(4);
}
console.log(`${provider}: OK: ${provider === 'webgpu' ? 'adapter found, ' : ''}a MatMul graph matches the CPU provider (max diff ${maxDiff.toExponential(1)}, ` +
  `session + run ${(performance.now() - started).toFixed(0)} ms)`);
