import {defineConfig} from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each file starts its own Orthanc servers; two workers match the 2-core CI machines.
    pool: 'forks',
    poolOptions: {forks: {maxForks: 2, minForks: 1}},
    reporters: ['default'],
    setupFiles: ['test/setup/plain-child-output.ts'],
    globalSetup: ['test/setup/repository-untouched.ts', 'test/setup/private-state-home.ts'],
  },
})
