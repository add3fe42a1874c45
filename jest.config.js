/** Tests run the TypeScript sources through ts-jest; worker threads and CLI subprocesses run the
 *  compiled output in dist/, which `npm test` builds first. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }],
  },
  testTimeout: 120000,
  verbose: false,
};
