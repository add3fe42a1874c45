/**
 * The import-graph rules of clipserve (npm run lint:deps; docs/architecture.md explains them).
 * Layers of server/src, top to bottom; a folder may import its own layer and any layer below it,
 * never one above:
 *   composition  serve/ cli/                          wiring, lifecycle, the command line
 *   transport    grpc/ http/ auth/ tls/ metrics/      the server's edge: handlers, keys, TLS, metrics
 *   services     inference/ versions/ finetune/ eval/ the serving core and the offline users of it
 *   engine       runtime/ preprocess/ batching/       onnxruntime sessions, image preprocessing, the batcher
 *   model        model/ onnx/ checkpoint/ hub/        bundle format and weights, graph builder, converters
 *   leaves       tokenizer/ dataset/ store/ util/     self-contained: they import no layer above
 * The benchmark (bench/) and the tests (test/) sit outside the product: they may import it, it never
 * imports them.
 */
const LAYERS = [
  ['composition', ['serve', 'cli']],
  ['transport', ['grpc', 'http', 'auth', 'tls', 'metrics']],
  ['services', ['inference', 'versions', 'finetune', 'eval']],
  ['engine', ['runtime', 'preprocess', 'batching']],
  ['model', ['model', 'onnx', 'checkpoint', 'hub']],
  ['leaves', ['tokenizer', 'dataset', 'store', 'util']],
];

const folders = (names) => `^server/src/(${names.join('|')})/`;

/**
 * Known exception, kept visible rather than hidden: the int8 converter's calibration
 * (model/int8.ts, model/int8-sensitivity.ts, model/calibration-set.ts) runs the towers it writes,
 * through runtime/worker-session.ts, on images preprocessed as serving preprocesses them
 * (preprocess/). Writing a bundle is what needs these measurements, so the bundle writer calls
 * them; lifting the int8 build above the engine would mean handing a calibrator to every caller
 * of writeBundle instead.
 */
const UPWARD_EXCEPTIONS = ['^server/src/model/(int8|int8-sensitivity|calibration-set)\\.ts$'];

const upward = LAYERS.slice(1).map(([name, own], i) => ({
  name: `no-upward-from-${name}`,
  comment: `${name} (${own.join(', ')}) must not import a layer above it (${LAYERS.slice(0, i + 1)
    .map(([n]) => n)
    .join(', ')})`,
  severity: 'error',
  from: { path: folders(own), pathNot: UPWARD_EXCEPTIONS },
  to: { path: folders(LAYERS.slice(0, i + 1).flatMap(([, f]) => f)) },
}));

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'No import cycles, type-only imports included (a type cycle still ties two modules together).',
      severity: 'error',
      from: { path: '^(server/src|bench)/' },
      to: { circular: true },
    },
    ...upward,
    {
      name: 'no-product-to-bench-or-test',
      comment:
        'Production code never imports the benchmark or the tests (clipserve bench loads the bench build at run time).',
      severity: 'error',
      from: { path: '^server/src/' },
      to: { path: '^(bench|test)/' },
    },
    {
      name: 'no-unlisted-folder',
      comment: 'Every server/src folder belongs to a layer above: a new folder must be placed in LAYERS.',
      severity: 'error',
      from: { path: '^server/src/[^/]+/', pathNot: folders(LAYERS.flatMap(([, f]) => f)) },
      to: {},
    },
    {
      name: 'no-unlisted-folder-imported',
      comment: 'The same, seen from the importer: a folder outside LAYERS is not imported.',
      severity: 'error',
      from: {},
      to: { path: '^server/src/[^/]+/', pathNot: folders(LAYERS.flatMap(([, f]) => f)) },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import that resolves to nothing is a broken build waiting to happen.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(node_modules|dist|dist-bench)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.test.json' },
    reporterOptions: {
      archi: { collapsePattern: '^(server/src/[^/]+|bench|test/[^/]+|test)/' },
      dot: { collapsePattern: '^(server/src/[^/]+|bench|test)/' },
    },
  },
};
