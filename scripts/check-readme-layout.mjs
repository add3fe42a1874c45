#!/usr/bin/env node
// Checks the README's "## Layout" table against the folders in git: every top-level folder, every
// folder under server/src, sdk/src and examples needs a row (a row naming a path inside a folder
// covers it), and every path a row names must exist. Exits 1 naming the missing and stale rows, so
// a moved or added folder cannot leave the table behind. Run by `npm run lint`.
//
// Usage: node scripts/check-readme-layout.mjs [--readme <file>]   (default: README.md at the root)
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Folders whose every sub-folder is described on its own; the folder itself needs no row. */
const ENUMERATED = ['server/src', 'sdk/src', 'examples'];
/** Top-level folders described through their sub-folders (server/ is server/src/*). */
const TOP_LEVEL_EXEMPT = new Set(['server']);

/** The folder paths (with a trailing slash) named in backticks in the first column of the Layout table. */
export function layoutRows(readme) {
  const section = readme.split(/^## /m).find((s) => s.startsWith('Layout'));
  if (!section) throw new Error('README has no "## Layout" section');
  const named = [];
  for (const line of section.split('\n')) {
    const cells = line.split('|');
    if (!line.startsWith('|') || cells.length < 3 || /^\|\s*-/.test(line)) continue;
    for (const m of cells[1].matchAll(/`([^`]+)`/g)) named.push(m[1].replace(/\/*$/, '/'));
  }
  return named;
}

/** Folders the table must describe, from the list of tracked files (paths relative to the root). */
export function requiredFolders(files) {
  const required = new Set();
  for (const file of files) {
    const parts = file.split('/');
    if (parts.length < 2 || parts[0].startsWith('.')) continue;
    if (!TOP_LEVEL_EXEMPT.has(parts[0])) required.add(`${parts[0]}/`);
    for (const parent of ENUMERATED) {
      const depth = parent.split('/').length;
      if (file.startsWith(`${parent}/`) && parts.length > depth + 1)
        required.add(`${parts.slice(0, depth + 1).join('/')}/`);
    }
  }
  for (const parent of ENUMERATED) required.delete(`${parent}/`);
  return [...required].sort();
}

/** Missing rows (a folder no row names or names a path inside) and stale rows (a path that is not a folder). */
export function layoutProblems(rows, folders, isDirectory) {
  const missing = folders.filter((f) => !rows.some((r) => r.startsWith(f)));
  const stale = rows.filter((r) => !isDirectory(r));
  return { missing, stale };
}

function main() {
  const at = process.argv.indexOf('--readme');
  const readmePath = at > 0 ? path.resolve(process.argv[at + 1]) : path.join(ROOT, 'README.md');
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20 })
    .split('\0')
    .filter(Boolean)
    .filter((f) => fs.existsSync(path.join(ROOT, f))); // a file deleted in the work tree is not there
  const rows = layoutRows(fs.readFileSync(readmePath, 'utf8'));
  const isDirectory = (p) => fs.statSync(path.join(ROOT, p), { throwIfNoEntry: false })?.isDirectory() === true;
  const { missing, stale } = layoutProblems(rows, requiredFolders(files), isDirectory);
  if (missing.length === 0 && stale.length === 0) {
    console.log(`README layout table: ${rows.length} folders named, all present, none missing`);
    return;
  }
  if (missing.length) console.error(`README layout table has no row for: ${missing.join(', ')}`);
  if (stale.length) console.error(`README layout table names folders that do not exist: ${stale.join(', ')}`);
  process.exitCode = 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
