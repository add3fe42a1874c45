/** `clipserve tokenize` end to end, run from the compiled CLI in dist/ (`npm test` builds it). */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ClipTokenizer, buildDemoVocab } from '../../../server/src/tokenizer';
import { compiledModule } from '../../../server/src/util/paths';
import { HAVE_GOLDEN, goldenPath } from '../../helpers/shared';

interface GoldenCase {
  text: string;
  ids: number[];
}

function cli(args: string[], input: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [compiledModule('cli/main'), 'tokenize', ...args], {
    input,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function rows(stdout: string): number[][] {
  return stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as number[]);
}

describe('clipserve tokenize', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-cli-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  (HAVE_GOLDEN ? it : it.skip)('prints the golden ids for every case (--json) and for plain lines', () => {
    const cases = fs
      .readFileSync(goldenPath('tokenizer', 'cases.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as GoldenCase);
    const vocab = goldenPath('tokenizer', 'bpe_simple_vocab_16e6.txt.gz');

    const json = cli(['--vocab', vocab, '--json'], cases.map((c) => JSON.stringify(c.text)).join('\n') + '\n');
    expect(json.stderr).toBe('');
    expect(json.status).toBe(0);
    expect(rows(json.stdout)).toEqual(cases.map((c) => c.ids));

    const plain = cases
      .filter((c) => !/[\n\r\u2028\u2029\ud800-\udfff]/.test(c.text) && !c.text.includes('\u0085'))
      .slice(0, 60);
    const out = cli(['--vocab', vocab], plain.map((c) => c.text).join('\n') + '\n');
    expect(out.status).toBe(0);
    expect(rows(out.stdout)).toEqual(plain.map((c) => c.ids));
  });

  it('uses the vocabulary and context length of a bundle (--model)', () => {
    const bundle = path.join(dir, 'bundle');
    fs.mkdirSync(bundle);
    const demo = ClipTokenizer.fromMerges(buildDemoVocab());
    demo.writeMergesFile(path.join(bundle, 'vocab.bpe.txt.gz'));
    fs.writeFileSync(
      path.join(bundle, 'clipserve.json'),
      JSON.stringify({
        files: { vocab: { path: 'vocab.bpe.txt.gz' } },
        model_cfg: { text_cfg: { context_length: 16 } },
      }),
    );
    const texts = ['a photo of a cat', 'A long caption that keeps going well past sixteen tokens of text, surely'];
    const out = cli(['--model', bundle], texts.join('\n'));
    expect(out.status).toBe(0);
    expect(rows(out.stdout)).toEqual(texts.map((t) => Array.from(demo.tokenize(t, 16).ids)));
  });

  it('explains what is missing or wrong', () => {
    const none = cli([], 'x\n');
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/--vocab .*--model/s);

    const vocab = path.join(dir, 'demo.txt.gz');
    ClipTokenizer.fromMerges(buildDemoVocab()).writeMergesFile(vocab);
    const badJson = cli(['--vocab', vocab, '--json'], '"ok"\nnot json\n');
    expect(badJson.status).toBe(1);
    expect(badJson.stderr).toMatch(/line 2/);

    const noManifest = cli(['--model', dir], 'x\n');
    expect(noManifest.status).toBe(1);
    expect(noManifest.stderr).toMatch(/clipserve\.json/);
  });
});
