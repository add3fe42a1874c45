/**
 * A throwaway PostgreSQL server for the suites that need a real one: Debian's `postgresql`
 * package (.ci/run installs it), a fresh cluster (initdb) in a temporary directory started with
 * pg_ctl on a free port on 127.0.0.1, run as the `postgres` user when the tests run as root
 * (PostgreSQL refuses root), stopped and removed afterwards. CLIPSERVE_TEST_POSTGRES_URL, when
 * set, names an existing server to use instead (each suite still gets its own database).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import pg from 'pg';

export interface TestPostgres {
  /** URL of the server's `postgres` database. */
  readonly url: string;
  /** Creates an empty database and returns its URL. */
  newDatabase(): Promise<string>;
  stop(): Promise<void>;
}

/** The newest installed server's bin directory. */
function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root)
    ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb')))
    : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (versions.length === 0)
    throw new Error(
      'PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: install Debian\'s "postgresql" package (apt-get install -y postgresql) or set CLIPSERVE_TEST_POSTGRES_URL',
    );
  return path.join(root, versions[0], 'bin');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

let dbCounter = 0;

function withDatabases(url: string, stop: () => Promise<void>): TestPostgres {
  return {
    url,
    async newDatabase() {
      const name = `clipserve_test_${process.pid}_${Date.now()}_${++dbCounter}`;
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      const u = new URL(url);
      u.pathname = `/${name}`;
      return u.toString();
    },
    stop,
  };
}

export async function startPostgres(): Promise<TestPostgres> {
  const external = process.env.CLIPSERVE_TEST_POSTGRES_URL;
  if (external) return withDatabases(external, async () => undefined);
  const bin = binDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clipserve-pg-'));
  const data = path.join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    fs.chownSync(dir, uid, gid);
  }
  const run = (cmd: string, args: string[]) => {
    const [file, argv] = asRoot
      ? ['runuser', ['-u', 'postgres', '--', path.join(bin, cmd), ...args]]
      : [path.join(bin, cmd), args];
    return execFileSync(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir }).toString();
  };
  const user = asRoot ? 'postgres' : os.userInfo().username;
  try {
    run('initdb', ['-D', data, '-U', user, '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${(err as { stderr?: Buffer }).stderr?.toString() ?? err}`);
  }
  const port = await freePort();
  // Durability is not what the tests measure: fsync off keeps the 2-core CI fast.
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`;
  try {
    run('pg_ctl', ['-D', data, '-l', path.join(dir, 'server.log'), '-o', opts, '-w', '-t', '60', 'start']);
  } catch (err) {
    const log = fs.existsSync(path.join(dir, 'server.log'))
      ? fs.readFileSync(path.join(dir, 'server.log'), 'utf8')
      : '';
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`pg_ctl start failed: ${(err as { stderr?: Buffer }).stderr?.toString() ?? err}\n${log}`);
  }
  const url = `postgres://${user}@127.0.0.1:${port}/postgres`;
  return withDatabases(url, async () => {
    try {
      run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
