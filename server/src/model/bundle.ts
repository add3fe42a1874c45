/**
 * Model bundles: a directory holding the two ONNX towers (with their external weight files), the
 * tokenizer's BPE merges and a `clipserve.json` manifest that records the config, logit scale,
 * tower signatures and the size + SHA-256 of every file. `writeBundle` builds one from a state
 * dict; `loadBundle` checks one before anything runs it, failing with a BundleError that names
 * the file and what is wrong.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  IMAGE_INPUT,
  IMAGE_OUTPUT,
  INT8_KERNELS,
  TEXT_INPUT,
  TEXT_OUTPUT,
  type TowerOptions,
} from '../onnx/clip-graph';
import { readOnnxSignature, type TensorSpec } from '../onnx/inspect';
import { writeTowerModel, type Tower, type WrittenFile } from '../onnx/write-model';
import { PACKAGE_ROOT } from '../util/paths';
import { resolveConfig, type ModelConfig, type OpenClipConfig, type PreprocessConfig } from './config';
import { BundleError } from './errors';
import { expectedWeightShapes, validateStateDict } from './expected-weights';
import {
  calibrateTower,
  checkTower,
  DEFAULT_INT8_SETTINGS,
  demoteWorst,
  keptFp32,
  INT8_ACTIVATIONS,
  INT8_METHODS,
  MAX_CHECK_ROUNDS,
  meetsContract,
  type CalibrationPass,
  type Int8Record,
  type Int8Settings,
} from './int8';
import { demoteByErrors, errorPerCost, errorRecord, measureLayerErrors, type LayerErrors } from './int8-sensitivity';
import { generatedCalibrationSet, pairsCalibrationSet } from './calibration-set';
import { quantizableLayers } from '../onnx/clip-graph';
import { numel, type StateDict } from './state-dict';

export const MANIFEST_FILE = 'clipserve.json';
export const BUNDLE_FORMAT_VERSION = 1;

export { BundleError };

/** How the towers store and compute their weights: float32, float16 weights (computed in float32),
 *  or int8 projections with float32 elsewhere (./int8). */
export type BundlePrecision = 'fp32' | 'fp16' | 'int8';
export const BUNDLE_PRECISIONS: readonly BundlePrecision[] = ['fp32', 'fp16', 'int8'];

export interface BundleFileRef {
  /** Relative to the bundle directory. */
  path: string;
  sha256: string;
  bytes: number;
}

export interface TowerSignature {
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

export interface BundleManifest {
  format_version: number;
  name: string;
  version: string;
  demo: boolean;
  precision: BundlePrecision;
  /** int8 bundles: which projections run in int8, the calibration and its measured drift. */
  int8?: Int8Record;
  model_cfg: ModelConfig;
  preprocess_cfg: PreprocessConfig;
  embed_dim: number;
  image_size: number;
  context_length: number;
  /** As stored in the checkpoint (log space). */
  logit_scale: number;
  /** exp(logit_scale) in float32, the factor model(image, text) applies. */
  logit_scale_exp: number;
  towers: { visual: TowerSignature; textual: TowerSignature };
  files: {
    visual: BundleFileRef;
    visual_data?: BundleFileRef;
    textual: BundleFileRef;
    textual_data?: BundleFileRef;
    vocab: BundleFileRef & { format: 'bpe-merges-gz' };
  };
  created_at: string;
  source: Record<string, unknown>;
}

export interface Bundle {
  dir: string;
  manifest: BundleManifest;
  paths: { visual: string; textual: string; vocab: string };
}

/** The tower signatures a config implies; loadBundle holds the ONNX files to exactly these. */
export function expectedSignatures(cfg: ModelConfig): { visual: TowerSignature; textual: TowerSignature } {
  const S = cfg.vision_cfg.image_size;
  return {
    visual: {
      inputs: [{ name: IMAGE_INPUT, dtype: 'float32', shape: ['batch', 3, S, S] }],
      outputs: [{ name: IMAGE_OUTPUT, dtype: 'float32', shape: ['batch', cfg.embed_dim] }],
    },
    textual: {
      inputs: [{ name: TEXT_INPUT, dtype: 'int64', shape: ['batch', 'sequence'] }],
      outputs: [{ name: TEXT_OUTPUT, dtype: 'float32', shape: ['batch', cfg.embed_dim] }],
    },
  };
}

function packageVersion(): string {
  try {
    return String(JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')).version);
  } catch {
    return 'unknown';
  }
}

async function sha256File(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function fileRef(dir: string, w: WrittenFile): BundleFileRef {
  return { path: path.relative(dir, w.path), sha256: w.sha256, bytes: w.bytes };
}

/** Writes into a fresh sibling temp directory and renames it into place, so a crash never leaves
 *  a half-written bundle at `outDir`. `outDir` must not exist or be empty. */
export async function writeBundle(opts: {
  outDir: string;
  name: string;
  version: string;
  config: OpenClipConfig;
  stateDict: StateDict;
  vocabFile: string;
  demo?: boolean;
  precision?: BundlePrecision;
  /** int8 only: calibration size and drift bound (defaults: DEFAULT_INT8_SETTINGS). */
  int8Settings?: Partial<Int8Settings>;
  source?: Record<string, unknown>;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** int8 only: calibration progress, in samples, per tower (the calibration and check passes). */
  onCalibration?: (tower: Tower, pass: CalibrationPass, done: number, total: number) => void;
  /** Graph formulation (for benchmarks); the default is the measured fastest. */
  towerOptions?: TowerOptions;
}): Promise<BundleManifest> {
  const precision = opts.precision ?? 'fp32';
  if (!BUNDLE_PRECISIONS.includes(precision))
    throw new BundleError(`precision must be one of ${BUNDLE_PRECISIONS.join(', ')}, got ${String(precision)}`);
  const int8Settings: Int8Settings = { ...DEFAULT_INT8_SETTINGS, ...opts.int8Settings };
  for (const k of ['samples', 'sensitivitySamples'] as const)
    if (!Number.isInteger(int8Settings[k]) || int8Settings[k] < 1)
      throw new BundleError(`int8 ${k} must be a positive integer, got ${int8Settings[k]}`);
  if (!INT8_ACTIVATIONS.includes(int8Settings.activations))
    throw new BundleError(
      `int8 activations must be one of ${INT8_ACTIVATIONS.join(', ')}, got ${String(int8Settings.activations)}`,
    );
  if (!INT8_KERNELS.includes(int8Settings.kernel))
    throw new BundleError(`int8 kernel must be one of ${INT8_KERNELS.join(', ')}, got ${String(int8Settings.kernel)}`);
  if (int8Settings.finalProjections !== 'fp32' && int8Settings.finalProjections !== 'int8')
    throw new BundleError(`int8 finalProjections must be fp32 or int8, got ${String(int8Settings.finalProjections)}`);
  if (!(int8Settings.smoothing >= 0 && int8Settings.smoothing <= 1))
    throw new BundleError(`int8 smoothing must be in [0, 1], got ${int8Settings.smoothing}`);
  if (!(int8Settings.maxDrift >= 0 && Number.isFinite(int8Settings.maxDrift)))
    throw new BundleError(`int8 max drift must be a finite number ≥ 0, got ${int8Settings.maxDrift}`);
  for (const k of ['minMeanCosine', 'minCosine'] as const) {
    if (!(int8Settings[k] >= 0 && int8Settings[k] <= 1))
      throw new BundleError(`int8 ${k} must be in [0, 1], got ${int8Settings[k]}`);
  }
  if (!opts.name || !opts.version) throw new BundleError('bundle name and version must be non-empty');
  const config = resolveConfig(opts.config);
  const cfg = config.model_cfg;
  validateStateDict(opts.stateDict, cfg);
  const vocabHead = readHead(opts.vocabFile, 2);
  if (vocabHead[0] !== 0x1f || vocabHead[1] !== 0x8b)
    throw new BundleError('vocabulary is not a gzip file (expected the gzip BPE merges file)', opts.vocabFile);

  const outDir = path.resolve(opts.outDir);
  if (fs.existsSync(outDir) && fs.readdirSync(outDir).length > 0)
    throw new BundleError('output directory exists and is not empty', outDir);
  fs.mkdirSync(path.dirname(outDir), { recursive: true });
  const tmp = fs.mkdtempSync(`${outDir}.tmp-`);
  try {
    const bytesPerValue = precision === 'fp16' ? 2 : precision === 'int8' ? 1 : 4; // int8: approximate (fp32 layers kept)
    let total = 0;
    for (const [key, shape] of expectedWeightShapes(cfg))
      if (key !== 'logit_scale') total += numel(shape) * bytesPerValue;
    let done = 0;
    const onBytes = (n: number): void => {
      done = Math.min(total, done + n);
      opts.onProgress?.(done, total);
    };
    const weights = (key: string) => {
      const t = opts.stateDict.get(key);
      if (!t) throw new BundleError(`state dict lost key ${key} while writing`);
      return t;
    };
    const producerVersion = packageVersion();
    const written: Record<Tower, ReturnType<typeof writeTowerModel>> = {} as never;
    const calibration =
      precision === 'int8'
        ? {
            config,
            weights,
            vocabFile: opts.vocabFile,
            settings: int8Settings,
            set: int8Settings.data
              ? pairsCalibrationSet(int8Settings.data, int8Settings.samples, config.preprocess_cfg)
              : generatedCalibrationSet(int8Settings.samples, config.preprocess_cfg),
            producerVersion,
            scratchDir: fs.mkdtempSync(path.join(tmp, 'calibration-')),
          }
        : undefined;
    const towers = {} as Int8Record['towers'];
    for (const tower of ['visual', 'textual'] as const) {
      const write = (layers?: ReadonlySet<string>, towerWeights = weights) =>
        writeTowerModel({
          onnxPath: path.join(tmp, `${tower}.onnx`),
          tower,
          config: cfg,
          weights: towerWeights,
          precision,
          int8: layers && { layers, activations: int8Settings.activations, kernel: int8Settings.kernel },
          producerVersion,
          towerOptions: opts.towerOptions,
          onBytes,
        });
      if (!calibration) {
        written[tower] = write();
        continue;
      }
      const plan = await calibrateTower(
        { ...calibration, onProgress: (t, d, n) => opts.onCalibration?.(t, 'calibrate', d, n) },
        tower,
      );
      let layers: ReadonlySet<string> = plan.layers;
      let cosine: { mean: number; min: number };
      let errors: LayerErrors | undefined;
      for (let round = 0; ; round++) {
        written[tower] = write(layers, plan.weights);
        cosine = await checkTower(
          { ...calibration, onProgress: (t, d, n) => opts.onCalibration?.(t, 'check', d, n) },
          tower,
          written[tower].onnx.path,
          plan.reference,
        );
        if (meetsContract(cosine, int8Settings) || layers.size === 0 || round + 1 >= MAX_CHECK_ROUNDS) break;
        if (!errors) {
          // Measured once, on the layers the first check failed with; later rounds (the prediction
          // fell short) move back the next eighth in the same order.
          errors = await measureLayerErrors(
            { ...calibration, onProgress: (t, d, n) => opts.onCalibration?.(t, 'sensitivity', d, n) },
            tower,
            [...layers],
            plan.weights,
            plan.reference,
          );
          layers = demoteByErrors(layers, errors, errorPerCost(cfg, tower, errors), int8Settings);
        } else layers = demoteWorst(layers, errorPerCost(cfg, tower, errors));
      }
      const all = quantizableLayers(cfg, tower);
      towers[tower] = {
        int8_layers: all.filter((l) => layers.has(l)),
        fp32_layers: all.filter((l) => !layers.has(l)),
        drift: plan.record.drift,
        cosine_to_fp32: cosine,
        demoted_by_check: all.filter((l) => plan.layers.has(l) && !layers.has(l)),
        ...(errors && errorRecord(errors)),
        kept_fp32: all.filter((l) => keptFp32(l, int8Settings)),
        smoothed_layers: plan.record.smoothed_layers ?? [],
      };
    }
    let int8Record: Int8Record | undefined;
    if (calibration) {
      fs.rmSync(calibration.scratchDir, { recursive: true, force: true });
      const samples = calibration.set.captions.length;
      int8Record = {
        method: INT8_METHODS[int8Settings.activations],
        max_drift: int8Settings.maxDrift,
        cosine_contract: { mean: int8Settings.minMeanCosine, min: int8Settings.minCosine },
        calibration: { images: samples, captions: samples, generator: calibration.set.source },
        towers,
      };
    }
    const vocabPath = path.join(tmp, 'vocab.bpe.txt.gz');
    fs.copyFileSync(opts.vocabFile, vocabPath);
    const vocab = {
      path: 'vocab.bpe.txt.gz',
      sha256: await sha256File(vocabPath),
      bytes: fs.statSync(vocabPath).size,
      format: 'bpe-merges-gz' as const,
    };

    const logitScale = opts.stateDict.get('logit_scale')!.data[0];
    const manifest: BundleManifest = {
      format_version: BUNDLE_FORMAT_VERSION,
      name: opts.name,
      version: opts.version,
      demo: Boolean(opts.demo),
      precision,
      ...(int8Record ? { int8: int8Record } : {}),
      model_cfg: cfg,
      preprocess_cfg: config.preprocess_cfg,
      embed_dim: cfg.embed_dim,
      image_size: cfg.vision_cfg.image_size,
      context_length: cfg.text_cfg.context_length,
      logit_scale: logitScale,
      logit_scale_exp: Math.fround(Math.exp(logitScale)),
      towers: expectedSignatures(cfg),
      files: {
        visual: fileRef(tmp, written.visual.onnx),
        ...(written.visual.data ? { visual_data: fileRef(tmp, written.visual.data) } : {}),
        textual: fileRef(tmp, written.textual.onnx),
        ...(written.textual.data ? { textual_data: fileRef(tmp, written.textual.data) } : {}),
        vocab,
      },
      created_at: new Date().toISOString(),
      source: { generator: `clipserve ${producerVersion}`, ...(opts.source ?? {}) },
    };
    fs.writeFileSync(path.join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    if (fs.existsSync(outDir)) fs.rmdirSync(outDir); // empty, checked above
    fs.renameSync(tmp, outDir);
    return manifest;
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

function readHead(file: string, n: number): Uint8Array {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new BundleError(`cannot open: ${(err as Error).message}`, file);
  }
  try {
    const buf = new Uint8Array(n);
    fs.readSync(fd, buf, 0, n, 0);
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Loading and verification

function fail(msg: string, file = MANIFEST_FILE): never {
  throw new BundleError(msg, file);
}

function need<T>(
  obj: Record<string, unknown>,
  key: string,
  check: (v: unknown) => boolean,
  what: string,
  where = '',
): T {
  const v = obj[key];
  if (!check(v)) fail(`field "${where}${key}" must be ${what}, got ${JSON.stringify(v)}`);
  return v as T;
}

const isStr = (v: unknown): boolean => typeof v === 'string' && v.length > 0;
const isPosInt = (v: unknown): boolean => Number.isInteger(v) && (v as number) > 0;
const isNum = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v);
const isObj = (v: unknown): boolean => typeof v === 'object' && v !== null && !Array.isArray(v);

function checkFileRef(raw: unknown, key: string): BundleFileRef {
  if (!isObj(raw)) fail(`field "files.${key}" must be an object with path, sha256 and bytes`);
  const r = raw as Record<string, unknown>;
  const p = need<string>(r, 'path', isStr, 'a relative path', `files.${key}.`);
  if (path.isAbsolute(p) || p.split(/[\\/]/).includes('..'))
    fail(`field "files.${key}.path" must stay inside the bundle, got ${JSON.stringify(p)}`);
  need<string>(r, 'sha256', (v) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v), 'a hex SHA-256', `files.${key}.`);
  need<number>(r, 'bytes', (v) => Number.isInteger(v) && (v as number) >= 0, 'a byte count', `files.${key}.`);
  return r as unknown as BundleFileRef;
}

/** Validates the manifest's fields and their agreement with model_cfg. */
export function parseManifest(raw: unknown): BundleManifest {
  if (!isObj(raw)) fail('manifest must be a JSON object');
  const m = raw as Record<string, unknown>;
  const fv = need<number>(m, 'format_version', isPosInt, 'a positive integer');
  if (fv !== BUNDLE_FORMAT_VERSION)
    fail(`unsupported format_version ${fv} (this clipserve reads ${BUNDLE_FORMAT_VERSION})`);
  need(m, 'name', isStr, 'a non-empty string');
  need(m, 'version', isStr, 'a non-empty string');
  need(m, 'demo', (v) => typeof v === 'boolean', 'a boolean');
  need(
    m,
    'precision',
    (v) => BUNDLE_PRECISIONS.includes(v as BundlePrecision),
    BUNDLE_PRECISIONS.map((p) => `"${p}"`).join(', '),
  );
  if (m.precision === 'int8') checkInt8Record(m.int8);
  need(m, 'created_at', isStr, 'an ISO date string');
  need(m, 'source', isObj, 'an object');
  let cfg: OpenClipConfig;
  try {
    cfg = resolveConfig({ model_cfg: m.model_cfg, preprocess_cfg: m.preprocess_cfg });
  } catch (err) {
    fail(`bad model_cfg/preprocess_cfg: ${(err as Error).message}`);
  }
  const mc = cfg.model_cfg;
  for (const [key, expected] of [
    ['embed_dim', mc.embed_dim],
    ['image_size', mc.vision_cfg.image_size],
    ['context_length', mc.text_cfg.context_length],
  ] as const) {
    need(m, key, isPosInt, 'a positive integer');
    if (m[key] !== expected) fail(`field "${key}" is ${String(m[key])} but model_cfg implies ${expected}`);
  }
  need(m, 'logit_scale', isNum, 'a finite number');
  need(m, 'logit_scale_exp', (v) => isNum(v) && (v as number) > 0, 'a positive number');
  const towers = need<Record<string, unknown>>(m, 'towers', isObj, 'an object with visual and textual signatures');
  for (const t of ['visual', 'textual']) {
    const s = towers[t] as Record<string, unknown> | undefined;
    if (!isObj(s) || !Array.isArray(s!.inputs) || !Array.isArray(s!.outputs))
      fail(`field "towers.${t}" must have inputs and outputs lists`);
  }
  const files = need<Record<string, unknown>>(m, 'files', isObj, 'an object');
  for (const k of ['visual', 'textual', 'vocab']) checkFileRef(files[k], k);
  for (const k of ['visual_data', 'textual_data']) if (files[k] !== undefined) checkFileRef(files[k], k);
  const vocab = files.vocab as Record<string, unknown>;
  if (vocab.format !== 'bpe-merges-gz')
    fail(`field "files.vocab.format" must be "bpe-merges-gz", got ${JSON.stringify(vocab.format)}`);
  return { ...(m as unknown as BundleManifest), model_cfg: mc, preprocess_cfg: cfg.preprocess_cfg };
}

/** The int8 record must say which layers run in int8, per tower (the bundle's own documentation). */
function checkInt8Record(raw: unknown): void {
  if (!isObj(raw)) fail('field "int8" must be an object (an int8 bundle records its int8 layers)');
  const towers = (raw as Record<string, unknown>).towers;
  if (!isObj(towers)) fail('field "int8.towers" must be an object with visual and textual');
  for (const t of ['visual', 'textual']) {
    const r = (towers as Record<string, unknown>)[t];
    const isNames = (v: unknown): boolean => Array.isArray(v) && v.every(isStr);
    if (
      !isObj(r) ||
      !isNames((r as Record<string, unknown>).int8_layers) ||
      !isNames((r as Record<string, unknown>).fp32_layers)
    ) {
      fail(`field "int8.towers.${t}" must list int8_layers and fp32_layers`);
    }
  }
}

const specText = (s: TensorSpec): string => `${s.name} ${s.dtype} [${s.shape.join(', ')}]`;

/** Dynamic axes may carry any name; fixed sizes, names of tensors and dtypes must agree. */
function sameSpecs(actual: TensorSpec[], expected: TensorSpec[]): boolean {
  return (
    actual.length === expected.length &&
    actual.every((a, i) => {
      const e = expected[i];
      return (
        a.name === e.name &&
        a.dtype === e.dtype &&
        a.shape.length === e.shape.length &&
        a.shape.every((d, j) => (typeof e.shape[j] === 'number' ? d === e.shape[j] : typeof d === 'string'))
      );
    })
  );
}

export async function loadBundle(dir: string, opts: { verify?: boolean } = {}): Promise<Bundle> {
  const verify = opts.verify ?? true;
  const root = path.resolve(dir);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory())
    throw new BundleError('bundle directory does not exist', root);
  const manifestPath = path.join(root, MANIFEST_FILE);
  if (!fs.existsSync(manifestPath)) throw new BundleError('missing manifest', MANIFEST_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
  } catch (err) {
    throw new BundleError(`not valid JSON: ${(err as Error).message}`, MANIFEST_FILE);
  }
  const manifest = parseManifest(raw);

  const entries = Object.entries(manifest.files) as [string, BundleFileRef | undefined][];
  for (const [, ref] of entries) {
    if (!ref) continue;
    const abs = path.join(root, ref.path);
    if (!fs.existsSync(abs)) throw new BundleError('missing file', ref.path);
    const size = fs.statSync(abs).size;
    if (size !== ref.bytes)
      throw new BundleError(`size mismatch: manifest says ${ref.bytes} bytes, file has ${size}`, ref.path);
    if (verify) {
      const digest = await sha256File(abs);
      if (digest !== ref.sha256)
        throw new BundleError(`checksum mismatch: manifest sha256 ${ref.sha256}, file ${digest}`, ref.path);
    }
  }

  const expected = expectedSignatures(manifest.model_cfg);
  for (const tower of ['visual', 'textual'] as const) {
    const ref = manifest.files[tower];
    const dataRef = manifest.files[`${tower}_data`];
    let sig;
    try {
      sig = readOnnxSignature(path.join(root, ref.path));
    } catch (err) {
      throw new BundleError(`not a readable ONNX model: ${(err as Error).message}`, ref.path);
    }
    const got = { inputs: sig.inputs, outputs: sig.outputs };
    if (!sameSpecs(got.inputs, expected[tower].inputs) || !sameSpecs(got.outputs, expected[tower].outputs)) {
      throw new BundleError(
        `wrong shape: the model has inputs (${got.inputs.map(specText).join('; ')}) and outputs (${got.outputs.map(specText).join('; ')}), ` +
          `expected (${expected[tower].inputs.map(specText).join('; ')}) and (${expected[tower].outputs.map(specText).join('; ')}) for this model_cfg`,
        ref.path,
      );
    }
    if (
      !sameSpecs(manifest.towers[tower].inputs, expected[tower].inputs) ||
      !sameSpecs(manifest.towers[tower].outputs, expected[tower].outputs)
    ) {
      fail(`field "towers.${tower}" does not match the ONNX model's inputs/outputs`);
    }
    // External data must be exactly the manifest's (checksummed) file, next to the model.
    const dataBase = dataRef ? path.relative(path.dirname(ref.path) || '.', dataRef.path) : undefined;
    for (const loc of sig.externalLocations) {
      if (loc !== dataBase)
        throw new BundleError(
          `refers to external data "${loc}", which the manifest does not list as files.${tower}_data`,
          ref.path,
        );
    }
  }

  return {
    dir: root,
    manifest,
    paths: {
      visual: path.join(root, manifest.files.visual.path),
      textual: path.join(root, manifest.files.textual.path),
      vocab: path.join(root, manifest.files.vocab.path),
    },
  };
}
