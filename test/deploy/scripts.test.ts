/**
 * The image's shell scripts, run for real with /bin/sh against a stand-in `clipserve` on PATH (the
 * real converter needs a checkpoint; what is under test here is the script's decisions: when to
 * convert, where, atomically, and what it hands to `clipserve serve`).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const REPO = path.resolve(__dirname, '..', '..');
const PREPARE = path.join(REPO, 'deploy', 'docker', 'prepare-model.sh');
const ENTRYPOINT = path.join(REPO, 'deploy', 'docker', 'entrypoint.sh');
const INSTALL_KUBECTL = path.join(REPO, 'deploy', 'ci', 'install-kubectl.sh');

/**
 * A stand-in `clipserve`: records each call's arguments (one line per call) in $FAKE_LOG; for
 * `convert` writes a bundle (a tower file, then the clipserve.json manifest) into --out unless
 * FAKE_CONVERT_FAIL is set, and with
 * FAKE_RACE_DEST creates that bundle itself first, as a replica finishing earlier would.
 */
const FAKE_CLIPSERVE = `#!/bin/sh
echo "$*" >> "$FAKE_LOG"
if [ "$1" = convert ]; then
  [ -z "\${FAKE_CONVERT_FAIL:-}" ] || { echo "convert failed" >&2; exit 3; }
  out=""; prev=""
  for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; prev="$a"; done
  mkdir -p "$out" && echo weights > "$out/visual.onnx" && echo '{}' > "$out/clipserve.json"
  if [ -n "\${FAKE_RACE_DEST:-}" ]; then mkdir -p "$FAKE_RACE_DEST" && echo theirs > "$FAKE_RACE_DEST/clipserve.json"; fi
fi
`;

let work: string;
let bin: string;
let log: string;

beforeEach(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-deploy-scripts-'));
  bin = path.join(work, 'bin');
  log = path.join(work, 'calls.log');
  fs.mkdirSync(bin);
  fs.writeFileSync(path.join(bin, 'clipserve'), FAKE_CLIPSERVE, { mode: 0o755 });
  // The image installs the scripts under these names on PATH.
  fs.symlinkSync(PREPARE, path.join(bin, 'clipserve-prepare-model'));
  fs.symlinkSync(ENTRYPOINT, path.join(bin, 'clipserve-entrypoint'));
  fs.mkdirSync(path.join(work, 'checkpoint'));
  fs.writeFileSync(path.join(work, 'checkpoint', 'open_clip_config.json'), '{}');
  fs.writeFileSync(path.join(work, 'bpe.txt.gz'), 'vocab');
});

afterEach(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

function run(script: string, env: Record<string, string>, args: string[] = []) {
  const res = spawnSync('/bin/sh', [script, ...args], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { PATH: `${bin}:/usr/bin:/bin`, FAKE_LOG: log, ...env },
  });
  const calls = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : [];
  return { status: res.status, stderr: res.stderr, calls };
}

const listing = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []);

describe('prepare-model.sh (clipserve-prepare-model)', () => {
  test('does nothing without CLIPSERVE_CONVERT_FROM (empty counts as unset)', () => {
    const r = run(PREPARE, { CLIPSERVE_CONVERT_FROM: '', CLIPSERVE_MODEL: path.join(work, 'models', 'b') });
    expect(r.status).toBe(0);
    expect(r.calls).toEqual([]);
    expect(fs.existsSync(path.join(work, 'models'))).toBe(false);
  });

  test('converts an absent bundle through a private partial directory renamed into place', () => {
    const dest = path.join(work, 'models', 'bundles', 'vit-l-14');
    const r = run(PREPARE, {
      CLIPSERVE_CONVERT_FROM: path.join(work, 'checkpoint'),
      CLIPSERVE_MODEL: dest + '/',
      CLIPSERVE_CONVERT_VOCAB: path.join(work, 'bpe.txt.gz'),
      CLIPSERVE_CONVERT_ARGS: '--precision fp16',
    });
    expect(r.stderr).toMatch(/bundle ready/);
    expect(r.status).toBe(0);
    expect(r.calls).toHaveLength(1);
    expect(r.calls[0]).toMatch(
      new RegExp(
        `^convert ${work}/checkpoint --out ${dest}\\.partial\\.\\S+ --vocab ${work}/bpe.txt.gz --precision fp16$`,
      ),
    );
    expect(listing(dest)).toEqual(['clipserve.json', 'visual.onnx']);
    expect(listing(path.dirname(dest))).toEqual(['vit-l-14']);
  });

  test('leaves a present bundle (one with a manifest) alone', () => {
    const dest = path.join(work, 'models', 'b');
    fs.mkdirSync(dest, { recursive: true });
    fs.writeFileSync(path.join(dest, 'clipserve.json'), 'mine');
    const r = run(PREPARE, { CLIPSERVE_CONVERT_FROM: path.join(work, 'checkpoint'), CLIPSERVE_MODEL: dest });
    expect(r.status).toBe(0);
    expect(r.calls).toEqual([]);
    expect(fs.readFileSync(path.join(dest, 'clipserve.json'), 'utf8')).toBe('mine');
  });

  test('refuses to touch a non-empty directory that is not a bundle', () => {
    const dest = path.join(work, 'models', 'b');
    fs.mkdirSync(dest, { recursive: true });
    fs.writeFileSync(path.join(dest, 'notes.txt'), 'keep me');
    const r = run(PREPARE, { CLIPSERVE_CONVERT_FROM: path.join(work, 'checkpoint'), CLIPSERVE_MODEL: dest });
    expect(r.status).toBe(65);
    expect(r.stderr).toMatch(/holds no clipserve.json/);
    expect(r.calls).toEqual([]);
    expect(listing(dest)).toEqual(['notes.txt']);
  });

  test('an existing but empty bundle directory (e.g. a fresh mount point) is converted into', () => {
    const dest = path.join(work, 'models', 'b');
    fs.mkdirSync(dest, { recursive: true });
    const r = run(PREPARE, { CLIPSERVE_CONVERT_FROM: path.join(work, 'checkpoint'), CLIPSERVE_MODEL: dest });
    expect(r.status).toBe(0);
    expect(listing(dest)).toEqual(['clipserve.json', 'visual.onnx']);
  });

  test('a failed conversion fails the start and leaves neither bundle nor partial', () => {
    const dest = path.join(work, 'models', 'b');
    const r = run(PREPARE, {
      CLIPSERVE_CONVERT_FROM: path.join(work, 'checkpoint'),
      CLIPSERVE_MODEL: dest,
      FAKE_CONVERT_FAIL: '1',
    });
    expect(r.status).toBe(3);
    expect(listing(path.join(work, 'models'))).toEqual([]);
  });

  test("losing a race to another replica keeps the winner's bundle and drops our copy", () => {
    const dest = path.join(work, 'models', 'b');
    const r = run(PREPARE, {
      CLIPSERVE_CONVERT_FROM: path.join(work, 'checkpoint'),
      CLIPSERVE_MODEL: dest,
      FAKE_RACE_DEST: dest,
    });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/another replica finished/);
    expect(fs.readFileSync(path.join(dest, 'clipserve.json'), 'utf8').trim()).toBe('theirs');
    expect(listing(path.join(work, 'models'))).toEqual(['b']);
  });

  test.each<[string, Record<string, string>, number, RegExp]>([
    ['no CLIPSERVE_MODEL', { CLIPSERVE_MODEL: '' }, 64, /CLIPSERVE_MODEL .* is not/],
    ['a hub reference as target', { CLIPSERVE_MODEL: 'hf-hub:org/model' }, 64, /hub reference/],
    ['a relative target', { CLIPSERVE_MODEL: 'models/b' }, 64, /must be an absolute path/],
    ['a missing checkpoint', { CLIPSERVE_CONVERT_FROM: '/nonexistent/ckpt' }, 66, /does not exist/],
    ['a missing vocabulary', { CLIPSERVE_CONVERT_VOCAB: '/nonexistent/bpe.txt.gz' }, 66, /is not a file/],
  ])('refuses %s with a clear error', (_name, env, status, message) => {
    const r = run(PREPARE, {
      CLIPSERVE_CONVERT_FROM: path.join(work, 'checkpoint'),
      CLIPSERVE_MODEL: path.join(work, 'models', 'b'),
      ...env,
    });
    expect(r.status).toBe(status);
    expect(r.stderr).toMatch(message);
    expect(r.calls).toEqual([]);
  });
});

describe('entrypoint.sh (clipserve-entrypoint)', () => {
  test('prepares the model, then becomes `clipserve serve` with the container arguments', () => {
    const dest = path.join(work, 'models', 'b');
    const r = run(ENTRYPOINT, { CLIPSERVE_CONVERT_FROM: path.join(work, 'checkpoint'), CLIPSERVE_MODEL: dest }, [
      '--port=50051',
      '--log-level',
      'debug info',
    ]);
    expect(r.status).toBe(0);
    expect(r.calls).toHaveLength(2);
    expect(r.calls[0]).toMatch(/^convert /);
    expect(r.calls[1]).toBe('serve --port=50051 --log-level debug info');
  });

  test('does not start the server when preparation fails', () => {
    const r = run(ENTRYPOINT, { CLIPSERVE_CONVERT_FROM: '/nonexistent', CLIPSERVE_MODEL: path.join(work, 'm') });
    expect(r.status).toBe(66);
    expect(r.calls).toEqual([]);
  });
});

describe('shell scripts are well-formed', () => {
  test.each([PREPARE, ENTRYPOINT, INSTALL_KUBECTL])('%s parses and is executable', (file) => {
    const shell = fs.readFileSync(file, 'utf8').startsWith('#!/usr/bin/env bash') ? 'bash' : 'sh';
    const res = spawnSync(shell, ['-n', file], { encoding: 'utf8' });
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    expect(fs.statSync(file).mode & 0o111).not.toBe(0);
  });

  const shellcheck = spawnSync('shellcheck', ['--version'], { encoding: 'utf8' });
  (shellcheck.status === 0 ? test : test.skip)('pass shellcheck (when installed)', () => {
    const res = spawnSync('shellcheck', [PREPARE, ENTRYPOINT, INSTALL_KUBECTL], { encoding: 'utf8' });
    expect(res.stdout + res.stderr).toBe('');
    expect(res.status).toBe(0);
  });
});
