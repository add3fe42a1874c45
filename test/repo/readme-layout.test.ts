/**
 * The README layout check (scripts/check-readme-layout.mjs, run by `npm run lint`): passes on the
 * real README, and names the row that goes missing and the row that goes stale when the table and
 * the folders drift apart.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
const SCRIPT = path.join(ROOT, 'scripts', 'check-readme-layout.mjs');

function check(readme?: string) {
  const args = [SCRIPT];
  if (readme !== undefined) {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'readme-layout-')), 'README.md');
    fs.writeFileSync(file, readme);
    args.push('--readme', file);
  }
  const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('the README layout table matches the folders', () => {
  const r = check();
  expect(r.out).toMatch(/all present, none missing/);
  expect(r.status).toBe(0);
});

test('a folder without a row and a row without a folder are both named', () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const tlsRow = readme.split('\n').find((l) => l.startsWith('| `server/src/auth/`, `server/src/tls/`'));
  expect(tlsRow).toBeDefined();
  const drifted = readme
    .replace(tlsRow!, '| `server/src/auth/` | API keys |')
    .replace('| `docs/` |', '| `docs/`, `server/src/gone/` |');
  const r = check(drifted);
  expect(r.status).toBe(1);
  expect(r.out).toMatch(/no row for: server\/src\/tls\//);
  expect(r.out).toMatch(/do not exist: server\/src\/gone\//);
});

test('a README without a Layout section is an error, not a pass', () => {
  const r = check('# clipserve\n\nno table here\n');
  expect(r.status).not.toBe(0);
  expect(r.out).toMatch(/no "## Layout" section/);
});
