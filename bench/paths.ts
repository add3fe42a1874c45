/**
 * Where the compiled benchmark lives (dist-bench/, built by `npm run build:bench`), for the bench
 * modules it forks as child processes (the load generator, the transport-floor server).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../server/src/util/paths';

/** Path of the compiled JavaScript of bench/<name>.ts. */
export function compiledBenchModule(name: string): string {
  const js = path.join(PACKAGE_ROOT, 'dist-bench', 'bench', `${name}.js`);
  if (!fs.existsSync(js)) throw new Error(`${js} is missing: run "npm run build:bench" first`);
  return js;
}
