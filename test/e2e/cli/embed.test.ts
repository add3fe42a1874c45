/** `clipserve embed` end to end on the golden small-l14like model: real texts and image files
 *  through the tokenizer, preprocessing and the towers, against open_clip's outputs. */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { PACKAGE_ROOT } from '../../../server/src/util/paths';
import { buildGoldenBundle, closeness, goldenExpected, goldenInputs } from '../../helpers/golden-bundles';
import { describeGolden } from '../../helpers/shared';

const run = promisify(execFile);
const CLI = path.join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');

describeGolden('clipserve embed', () => {
  let tmp: string;
  let bundle: string;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-embed-'));
    bundle = await buildGoldenBundle('small-l14like', path.join(tmp, 'small'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('--json --raw gives open_clip features, texts first, in the order given', async () => {
    const inp = goldenInputs('small-l14like');
    const exp = goldenExpected('small-l14like').values;
    // Lossless sources only: the JPEG input depends on the decoder (see preprocess tests).
    const pick = [0, 1, 3];
    const args = [CLI, 'embed', '--model', bundle, '--json', '--raw', '--provider', 'cpu'];
    for (const t of inp.texts) args.push('--text', t);
    for (const i of pick) args.push('--image', inp.imageFiles[i]);
    const { stdout } = await run(process.execPath, args, { maxBuffer: 1 << 24 });
    const rows = JSON.parse(stdout) as number[][];
    expect(rows.length).toBe(inp.texts.length + pick.length);
    expect(rows.every((r) => r.length === 64)).toBe(true);
    const text = closeness(rows.slice(0, inp.texts.length).flat(), exp.text_features.flat(), 1e-4, 1e-4);
    const image = closeness(
      rows.slice(inp.texts.length).flat(),
      pick.flatMap((i) => exp.image_features[i]),
      1e-4,
      1e-4,
    );
    console.log(
      `embed CLI vs open_clip: text max |Δ| ${text.maxAbs.toExponential(2)}, image max |Δ| ${image.maxAbs.toExponential(2)}`,
    );
    expect(text.ratio).toBeLessThanOrEqual(1);
    expect(image.ratio).toBeLessThanOrEqual(1);
  });

  test('normalises by default and prints a readable summary without --json', async () => {
    const inp = goldenInputs('small-l14like');
    const { stdout } = await run(
      process.execPath,
      [CLI, 'embed', '-m', bundle, '--json', '-t', 'a cat', '-t', 'a dog'],
      { maxBuffer: 1 << 24 },
    );
    for (const r of JSON.parse(stdout) as number[][]) expect(Math.hypot(...r)).toBeCloseTo(1, 5);
    const human = await run(process.execPath, [CLI, 'embed', '-m', bundle, '-t', 'a cat', '-i', inp.imageFiles[0]]);
    expect(human.stdout).toMatch(/model small-l14like golden: dim 64, fp32, cpu; L2-normalised embeddings/);
    expect(human.stdout).toMatch(/text {2}"a cat": ‖x‖=1\.0000/);
    expect(human.stdout).toMatch(/logits \(image × text/);
  });

  test('bad input fails with a message naming it', async () => {
    await expect(run(process.execPath, [CLI, 'embed', '-m', bundle])).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/nothing to embed/),
    });
    const bogus = path.join(tmp, 'bogus.png');
    fs.writeFileSync(bogus, 'definitely not an image');
    await expect(run(process.execPath, [CLI, 'embed', '-m', bundle, '-i', bogus])).rejects.toMatchObject({
      stderr: expect.stringContaining(bogus),
    });
    await expect(run(process.execPath, [CLI, 'embed', '-m', path.join(tmp, 'nope'), '-t', 'x'])).rejects.toMatchObject({
      stderr: expect.stringMatching(/bundle directory does not exist/),
    });
  });
});
