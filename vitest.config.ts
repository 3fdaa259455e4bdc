import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // onnxruntime-node aborts if its module is evaluated twice in one thread:
    // every test file gets its own child process, and modules are never reset.
    pool: 'forks',
    isolate: true,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    env: { ORT_DISABLE_TELEMETRY: '1' },
  },
});
