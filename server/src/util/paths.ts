import * as fs from 'node:fs';
import * as path from 'node:path';

/** The package root (where package.json and proto/ live), found from this file's location so it
 *  works from the TypeScript sources (tests), from dist/ and from an installed package alike. */
export const PACKAGE_ROOT: string = (() => {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'proto'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the clipserve package root above ${__dirname}`);
    dir = up;
  }
})();

export const PROTO_DIR = path.join(PACKAGE_ROOT, 'proto');

/**
 * Path of the compiled JavaScript for a module under server/src, for code that must start a
 * worker thread or a child process: workers cannot load TypeScript, so when running from the
 * sources (under jest) this points into dist/, which `npm test` builds first.
 */
export function compiledModule(relFromSrc: string): string {
  const js = path.join(PACKAGE_ROOT, 'dist', relFromSrc.replace(/\.ts$/, '') + '.js');
  if (!fs.existsSync(js)) throw new Error(`${js} is missing: run "npm run build" first`);
  return js;
}
