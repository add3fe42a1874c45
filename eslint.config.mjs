// ESLint flat config: typescript-eslint's recommended rules everywhere, plus the type-aware rules that
// catch real server bugs (a promise nobody awaits or catches, an async callback handed to an API that
// ignores its result). Formatting is Prettier's job: eslint-config-prettier comes last and switches
// off every stylistic rule that would disagree with it. `npm run lint` runs this with
// --max-warnings 0, so every rule below is either an error or off.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import tseslint from 'typescript-eslint';

// TypeScript sources that a tsconfig covers, so the type-aware rules can run on them.
// tsconfig.test.json holds server/src, bench/ and test/; the SDK has its own tsconfig (NodeNext modules).
const TYPED = ['server/src/**/*.ts', 'bench/**/*.ts', 'test/**/*.ts', 'sdk/src/**/*.ts'];

export default defineConfig(
  globalIgnores([
    '**/node_modules/**',
    '**/dist/**',
    'dist-bench/**',
    'coverage/**',
    '**/generated/**',
    '**/*.generated.ts',
    'test/fixtures/**',
    'bench/results/**',
    'bench/reports/**',
    '.cache/**',
    'models/**',
    'tmp/**',
  ]),
  {
    // A disable comment that no longer suppresses anything is an error: stale ones cannot pile up.
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2022,
      globals: { ...globals.node },
    },
    rules: {
      // `_`-prefixed names are deliberate (positional parameters an interface requires, destructuring
      // that drops a field); everything else unused is dead code.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
      // A `let` assigned once but read earlier by a closure (a listener built before the object it
      // reports to) cannot become `const` without reordering the code; only flag the plain cases.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    files: TYPED,
    languageOptions: {
      parserOptions: {
        project: ['./sdk/tsconfig.json', './tsconfig.test.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // A rejected promise nobody handles crashes the process (Node's default) or is silently lost:
      // either await it, return it, attach .catch, or mark a deliberate fire-and-forget with `void`.
      '@typescript-eslint/no-floating-promises': 'error',
      // An async function where a void callback is expected (event emitters, grpc-js handlers, timers)
      // drops its rejection. Attribute spreads in JSX do not exist here; arguments and returns matter.
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/no-for-in-array': 'error',
      '@typescript-eslint/no-implied-eval': 'error',
      // Not enabled: the no-unsafe-* family of recommendedTypeChecked. The server parses untrusted
      // protobuf/JSON into `unknown` and narrows it; the tests drive dynamic grpc-js clients typed
      // `any` on purpose. Turning those on would flag thousands of test lines for no bug found.
    },
  },
  {
    // Library and server code log through pino or write to process.stdout on purpose (the CLI);
    // a stray console call there is a debugging leftover. Tests, benchmarks, examples and scripts print
    // their figures and progress to the console by design, so the rule is off for them.
    files: ['server/src/**/*.ts', 'sdk/src/**/*.ts'],
    rules: { 'no-console': 'error' },
  },
  {
    // Plain JavaScript (examples, build scripts, jest config): CommonJS or ES modules run by Node.
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  prettier,
);
