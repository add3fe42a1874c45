/**
 * The shipped observability artefacts, checked with the real tools: the alert rules with
 * `promtool check rules` and `promtool test rules` (alerts fire when they should, not otherwise),
 * and the Grafana dashboard's structure. (Whether every dashboard query names an exported metric
 * and runs in Prometheus is checked against a live server in observability-e2e.test.ts.)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
const ALERTS = path.join(ROOT, 'deploy/prometheus/alerts.yaml');
const ALERT_TESTS = path.join(ROOT, 'deploy/prometheus/alerts.test.yaml');
const DASHBOARD = path.join(ROOT, 'deploy/grafana/clipserve.json');

function which(tool: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

const PROMTOOL = which('promtool');

/** Missing promtool skips loudly on a workstation and fails in CI, where .ci/prometheus.sh installs it. */
function describeWithPromtool(name: string, fn: () => void): void {
  if (PROMTOOL) {
    describe(name, fn);
  } else if (process.env.CI) {
    describe(name, () => {
      it('needs promtool (CI must install it: .ci/prometheus.sh)', () => {
        throw new Error('promtool not found on PATH although CI is set; run .ci/prometheus.sh');
      });
    });
  } else {
    console.warn(
      `\n!!! SKIPPING "${name}": promtool not found (apt-get install prometheus, or .ci/prometheus.sh) !!!\n`,
    );
    describe.skip(name, fn);
  }
}

describeWithPromtool('alert rules (promtool)', () => {
  it('pass promtool check rules', () => {
    const out = execFileSync(PROMTOOL!, ['check', 'rules', ALERTS], { encoding: 'utf8' });
    expect(out).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('fire exactly as the promtool unit tests expect', () => {
    const r = spawnSync(PROMTOOL!, ['test', 'rules', ALERT_TESTS], {
      encoding: 'utf8',
      cwd: path.dirname(ALERT_TESTS),
    });
    expect(`${r.stdout}${r.stderr}`).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });

  it('cover high error ratio, queue saturation and readiness', () => {
    const text = fs.readFileSync(ALERTS, 'utf8');
    for (const alert of [
      'ClipserveHighErrorRatio',
      'ClipserveQueueSaturated',
      'ClipserveNotReady',
      'ClipserveCredentialsReloadFailing',
    ]) {
      expect(text).toContain(`alert: ${alert}`);
      // Every alert has a unit test.
      expect(fs.readFileSync(ALERT_TESTS, 'utf8')).toContain(`alertname: ${alert}`);
    }
  });

  it('reject a broken rule file (the check is not vacuous)', () => {
    const broken = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rules-')), 'broken.yaml');
    fs.writeFileSync(
      broken,
      'groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(x[5m]) > \n',
    );
    const r = spawnSync(PROMTOOL!, ['check', 'rules', broken], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    fs.rmSync(path.dirname(broken), { recursive: true, force: true });
  });
});

// ---- Grafana dashboard structure --------------------------------------------------------------

interface GridPos {
  h: number;
  w: number;
  x: number;
  y: number;
}
interface Target {
  refId: string;
  expr: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: GridPos;
  datasource?: { type: string; uid: string };
  targets?: Target[];
}

const PANEL_TYPES = new Set([
  'row',
  'timeseries',
  'stat',
  'table',
  'gauge',
  'bargauge',
  'heatmap',
  'text',
  'piechart',
  'state-timeline',
]);

/** Structural schema of a Grafana (schemaVersion >= 36) dashboard as imported from JSON. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function dashboardProblems(d: Record<string, any>): string[] {
  const problems: string[] = [];
  const need = (cond: unknown, msg: string) => {
    if (!cond) problems.push(msg);
  };
  need(typeof d.title === 'string' && d.title.length > 0, 'title must be a non-empty string');
  need(typeof d.uid === 'string' && /^[A-Za-z0-9_-]{1,40}$/.test(d.uid), 'uid must be 1-40 chars of [A-Za-z0-9_-]');
  need(Number.isInteger(d.schemaVersion) && d.schemaVersion >= 36, 'schemaVersion must be an integer >= 36');
  need(d.time && typeof d.time.from === 'string' && typeof d.time.to === 'string', 'time.from/time.to must be strings');
  need(d.id === undefined || d.id === null, 'id must be absent or null in an importable dashboard');
  const vars: any[] = d.templating?.list ?? []; // eslint-disable-line @typescript-eslint/no-explicit-any
  need(Array.isArray(vars), 'templating.list must be an array');
  const dsVar = vars.find((v) => v.type === 'datasource');
  need(
    dsVar && dsVar.name === 'datasource' && dsVar.query === 'prometheus',
    'needs a "datasource" variable of Prometheus type',
  );
  need(Array.isArray(d.panels) && d.panels.length > 0, 'panels must be a non-empty array');
  const ids = new Set<number>();
  const placed: Array<GridPos & { id: number }> = [];
  for (const p of (d.panels ?? []) as Panel[]) {
    const where = `panel ${p.id} "${p.title}"`;
    need(Number.isInteger(p.id) && p.id > 0 && !ids.has(p.id), `${where}: id must be a unique positive integer`);
    ids.add(p.id);
    need(PANEL_TYPES.has(p.type), `${where}: unknown type ${p.type}`);
    need(typeof p.title === 'string' && p.title.length > 0, `${where}: needs a title`);
    const g = p.gridPos;
    need(
      g && [g.h, g.w, g.x, g.y].every((n) => Number.isInteger(n) && n >= 0),
      `${where}: gridPos h/w/x/y must be integers >= 0`,
    );
    if (g) {
      need(g.w >= 1 && g.x + g.w <= 24 && g.h >= 1, `${where}: gridPos must fit the 24-column grid`);
      for (const o of placed) {
        const overlap = g.x < o.x + o.w && o.x < g.x + g.w && g.y < o.y + o.h && o.y < g.y + g.h;
        need(!overlap, `${where}: overlaps panel ${o.id}`);
      }
      placed.push({ ...g, id: p.id });
    }
    if (p.type === 'row' || p.type === 'text') continue;
    need(
      p.datasource?.type === 'prometheus' && p.datasource.uid === '${datasource}',
      `${where}: datasource must be the $datasource Prometheus variable`,
    );
    need(Array.isArray(p.targets) && p.targets.length > 0, `${where}: needs targets`);
    const refIds = new Set<string>();
    for (const t of p.targets ?? []) {
      need(
        typeof t.refId === 'string' && /^[A-Z]$/.test(t.refId) && !refIds.has(t.refId),
        `${where}: target refIds must be unique letters`,
      );
      refIds.add(t.refId);
      need(typeof t.expr === 'string' && t.expr.trim().length > 0, `${where}: target ${t.refId} needs an expr`);
      need(
        t.datasource === undefined || (t.datasource.type === 'prometheus' && t.datasource.uid === '${datasource}'),
        `${where}: target ${t.refId} datasource must match the panel's`,
      );
    }
  }
  return problems;
}

describe('Grafana dashboard', () => {
  const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

  it('is structurally valid Grafana dashboard JSON', () => {
    expect(dashboardProblems(dashboard)).toEqual([]);
  });

  it('the structure check catches broken dashboards', () => {
    const broken = JSON.parse(JSON.stringify(dashboard));
    broken.panels[1].gridPos.x = 20; // width 10 from column 20 overflows the grid
    broken.panels[2].targets = [];
    delete broken.schemaVersion;
    const problems = dashboardProblems(broken);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/fit the 24-column grid/),
        expect.stringMatching(/needs targets/),
        expect.stringMatching(/schemaVersion/),
      ]),
    );
  });

  it('has the panels operators need', () => {
    const all = (dashboard.panels as Panel[]).flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join('\n');
    for (const metric of [
      'grpc_server_handled_total',
      'grpc_server_handling_seconds_bucket',
      'clipserve_batch_size',
      'clipserve_queue_depth',
      'clipserve_queue_wait_seconds_bucket',
      'clipserve_inference_seconds_bucket',
      'clipserve_rejected_items_total',
      'clipserve_model_info',
    ]) {
      expect(all).toContain(metric);
    }
    for (const q of ['0.5', '0.95', '0.99']) expect(all).toContain(`histogram_quantile(${q}, sum by (le, grpc_method)`);
  });
});
