/**
 * `clipserve eval`: open_clip CSV parsing and retrieval evaluation of a converted golden model on
 * a small image–caption set rendered with sharp.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { convertCheckpoint } from '../../../server/src/checkpoint/convert';
import { CsvDatasetError, CsvParser, parseCsv, readCsvDataset } from '../../../server/src/dataset/csv';
import { seededRandom } from '../../../server/src/util/random';
import { evaluateRetrieval } from '../../../server/src/eval/evaluate';
import { clipMetrics } from '../../../server/src/eval/metrics';
import { formatMetricsTable } from '../../../server/src/eval/report';
import { l2normalize } from '../../../server/src/inference/heads';
import { loadModel, type LoadedModel } from '../../../server/src/runtime/model';
import { describeGolden, goldenPath } from '../../helpers/shared';

const CLI = path.join(__dirname, '..', '..', '..', 'dist', 'cli', 'main.js');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-eval-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('open_clip CSV datasets', () => {
  test('quoted fields, doubled quotes, embedded separators and newlines, CRLF, BOM', () => {
    const text =
      '\ufefffilepath\ttitle\r\na.png\t"a ""red"" square\twith tab"\r\n\r\nsub/b.jpg\t"two\nlines"\nc.png\t\n';
    expect(parseCsv(text, '\t')).toEqual([
      ['filepath', 'title'],
      ['a.png', 'a "red" square\twith tab'],
      ['sub/b.jpg', 'two\nlines'],
      ['c.png', ''],
    ]);
    expect(() => parseCsv('a\t"b', '\t')).toThrow(/unterminated/);
  });

  test('the incremental parser gives the same records whatever the chunk boundaries ("" and CRLF split too)', () => {
    const rand = seededRandom(7);
    const alphabet = ['a', 'b', '\t', '"', '""', '\n', '\r\n', '\r', ' ', 'é', '\ufeff'];
    for (let n = 0; n < 300; n++) {
      let text = n % 3 === 0 ? '\ufeff' : '';
      for (let i = 0; i < 60; i++) text += alphabet[Math.floor(rand() * alphabet.length)];
      let whole: string[][] | Error;
      try {
        whole = parseCsv(text, '\t');
      } catch (err) {
        whole = err as Error;
      }
      const parser = new CsvParser('\t');
      let pieces: string[][] | Error = [];
      try {
        for (let at = 0; at < text.length;) {
          const len = 1 + Math.floor(rand() * 5);
          pieces.push(...parser.push(text.slice(at, at + len)));
          at += len;
        }
        pieces.push(...parser.end());
      } catch (err) {
        pieces = err as Error;
      }
      expect([text, pieces]).toEqual([text, whole]);
    }
  });

  test('columns by name, custom separator, paths relative to the CSV, clear errors', () => {
    const dir = path.join(tmp, 'csvs');
    fs.mkdirSync(dir, { recursive: true });
    const csv = path.join(dir, 'val.csv');
    fs.writeFileSync(csv, 'id,caption,image\n1,a cat,img/cat.png\n2,"a dog, running",/abs/dog.png\n');
    const rows = readCsvDataset(csv, { imgKey: 'image', captionKey: 'caption', separator: ',' });
    expect(rows).toEqual([
      { image: path.join(dir, 'img', 'cat.png'), caption: 'a cat' },
      { image: '/abs/dog.png', caption: 'a dog, running' },
    ]);
    expect(() => readCsvDataset(csv)).toThrow(/no column "filepath".*separator tab.*--csv-separator/);
    fs.writeFileSync(csv, 'filepath\ttitle\nx.png\n');
    expect(() => readCsvDataset(csv)).toThrow(CsvDatasetError);
    fs.writeFileSync(csv, 'filepath\ttitle\n');
    expect(() => readCsvDataset(csv)).toThrow(/no data rows/);
  });

  test('model-card table', () => {
    const m = clipMetrics(new Float32Array([1, 0, 0, 1]), new Float32Array([1, 0, 0, 1]), 2, 2, 100).metrics;
    const table = formatMetricsTable(m);
    expect(table.split('\n')[0]).toMatch(/^\s+R@1\s+R@5\s+R@10\s+Mean Rank\s+Median Rank$/);
    expect(table).toMatch(/Image-to-Text\s+100\.00\s+100\.00\s+100\.00\s+1\.00\s+1/);
    expect(table).toMatch(/Text-to-Image/);
  });
});

describeGolden('eval on a rendered dataset with a converted golden model', () => {
  const COLORS: Array<[string, { r: number; g: number; b: number }]> = [
    ['red', { r: 220, g: 30, b: 30 }],
    ['green', { r: 30, g: 200, b: 40 }],
    ['blue', { r: 20, g: 40, b: 230 }],
    ['yellow', { r: 240, g: 220, b: 20 }],
    ['black', { r: 5, g: 5, b: 5 }],
    ['white', { r: 250, g: 250, b: 250 }],
    ['purple', { r: 120, g: 30, b: 160 }],
  ];
  let bundle: string;
  let csv: string;
  let model: LoadedModel;

  beforeAll(async () => {
    bundle = path.join(tmp, 'bundle');
    await convertCheckpoint({
      input: goldenPath('model', 'tiny-gelu'),
      outDir: bundle,
      vocab: goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz'),
    });
    const data = path.join(tmp, 'data');
    fs.mkdirSync(path.join(data, 'images'), { recursive: true });
    const lines = ['filepath\ttitle'];
    for (const [i, [name, rgb]] of COLORS.entries()) {
      // A coloured square on a grey canvas, at a different spot per image; alternate PNG/JPEG.
      const square = await sharp({ create: { width: 40, height: 40, channels: 3, background: rgb } })
        .png()
        .toBuffer();
      const img = sharp({
        create: { width: 96, height: 80, channels: 3, background: { r: 128, g: 128, b: 128 } },
      }).composite([{ input: square, left: 6 * i, top: 4 * i }]);
      const file = `images/${name}.${i % 2 ? 'jpg' : 'png'}`;
      await (i % 2 ? img.jpeg({ quality: 90 }) : img.png()).toFile(path.join(data, file));
      lines.push(`${file}\ta ${name} square on a grey background`);
    }
    csv = path.join(data, 'val.tsv');
    fs.writeFileSync(csv, lines.join('\n') + '\n');
    model = await loadModel(bundle, { provider: 'cpu', preprocessWorkers: 1, intraOpThreads: 1 });
  });
  afterAll(async () => {
    await model?.close();
  });

  test('metrics equal get_clip_metrics on the normalised features, whatever the batch size', async () => {
    const pairs = readCsvDataset(csv);
    const dim = model.info.embedDim;
    // Reference: embed one pair at a time, straight through the model.
    const img = new Float32Array(pairs.length * dim);
    const txt = new Float32Array(pairs.length * dim);
    for (const [i, p] of pairs.entries()) {
      img.set(await model.encodeImage(await model.preprocessImage(fs.readFileSync(p.image)), 1), i * dim);
      txt.set(await model.encodeText(model.tokenizer.tokenize(p.caption, model.info.contextLength).ids, 1), i * dim);
    }
    const expected = clipMetrics(
      l2normalize(img, dim),
      l2normalize(txt, dim),
      pairs.length,
      dim,
      model.info.logitScale,
    );
    const seen: number[] = [];
    const r3 = await evaluateRetrieval(model, pairs, { batchSize: 3, onProgress: (done) => seen.push(done) });
    expect(seen).toEqual([3, 6, 7]);
    expect(r3.numSamples).toBe(7);
    expect([...r3.imageToTextRanks]).toEqual([...expected.image_to_text_ranks]);
    expect([...r3.textToImageRanks]).toEqual([...expected.text_to_image_ranks]);
    for (const [k, v] of Object.entries(expected.metrics))
      expect((r3.metrics as unknown as Record<string, number>)[k]).toBeCloseTo(v, 9);
    const r32 = await evaluateRetrieval(model, pairs, { batchSize: 32 });
    expect([...r32.imageToTextRanks]).toEqual([...r3.imageToTextRanks]);
    expect([...r32.textToImageRanks]).toEqual([...r3.textToImageRanks]);
  });

  test('a missing image fails with its path', async () => {
    const pairs = [...readCsvDataset(csv), { image: path.join(tmp, 'data', 'images', 'gone.png'), caption: 'x' }];
    await expect(evaluateRetrieval(model, pairs, { batchSize: 4 })).rejects.toThrow(/gone\.png/);
  });

  test('CLI: prints the table and writes metrics JSON', async () => {
    const out = path.join(tmp, 'metrics.json');
    const { stdout } = await promisify(execFile)(process.execPath, [
      CLI,
      'eval',
      '--model',
      bundle,
      '--data',
      csv,
      '--batch-size',
      '4',
      '--out',
      out,
    ]);
    expect(stdout).toMatch(/tiny-gelu 1 on .*val\.tsv \(7 pairs\)/);
    expect(stdout).toMatch(/Image-to-Text\s+\d+\.\d\d/);
    expect(stdout).toMatch(/Text-to-Image\s+\d+\.\d\d/);
    const report = JSON.parse(fs.readFileSync(out, 'utf8'));
    expect(report.num_samples).toBe(7);
    expect(report.model).toEqual({ name: 'tiny-gelu', version: '1' });
    const direct = await evaluateRetrieval(model, readCsvDataset(csv));
    for (const [k, v] of Object.entries(direct.metrics)) expect(report.metrics[k]).toBeCloseTo(v, 9);
    // Same CSV re-written with commas and other column names.
    const comma = path.join(tmp, 'data', 'val.csv');
    fs.writeFileSync(comma, fs.readFileSync(csv, 'utf8').replace(/\t/g, ',').replace('filepath,title', 'path,caption'));
    const { stdout: s2 } = await promisify(execFile)(process.execPath, [
      CLI,
      'eval',
      '--model',
      bundle,
      '--data',
      comma,
      '--csv-separator',
      ',',
      '--csv-img-key',
      'path',
      '--csv-caption-key',
      'caption',
    ]);
    expect(s2).toMatch(/\(7 pairs\)/);
  });
});
