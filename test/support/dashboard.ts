import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './shared.js';

/** The parts of a Grafana dashboard JSON (deploy/grafana/dashboards) the tests read. */
export interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  templating: { list: Variable[] };
  panels: Panel[];
}

export interface DatasourceRef {
  type: string;
  uid: string;
}

/** A templating variable: `datasource` (picks a datasource of type `query`) or `query` (values from a PromQL query). */
export interface Variable {
  name: string;
  type: string;
  query: string;
  definition?: string;
  datasource?: DatasourceRef;
  current?: { text: string; value: string };
  multi?: boolean;
  includeAll?: boolean;
}

export interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: DatasourceRef;
  targets?: { refId: string; expr: string; legendFormat?: string; datasource?: DatasourceRef }[];
}

export const DASHBOARD_PATH = join(repoRoot, 'deploy', 'grafana', 'dashboards', 'mega-asr.json');

export function loadDashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_PATH, 'utf8')) as Dashboard;
}

/** The dashboard's templating variable called `name`; throws when there is none. */
export function variable(dashboard: Dashboard, name: string): Variable {
  const found = dashboard.templating.list.find((v) => v.name === name);
  if (!found) throw new Error(`the dashboard has no templating variable ${name}`);
  return found;
}

/**
 * The datasource uid a panel or query resolves to with the variables at their defaults: `${datasource}` (or
 * `$datasource`) is the `datasource` variable's default, a plain uid is itself, any other variable throws.
 */
export function datasourceUid(dashboard: Dashboard, ref: DatasourceRef): string {
  if (ref.uid === '${datasource}' || ref.uid === '$datasource') return variable(dashboard, 'datasource').current!.value;
  if (ref.uid.includes('$')) throw new Error(`unresolved Grafana variable in datasource uid ${JSON.stringify(ref.uid)}`);
  return ref.uid;
}

/**
 * A panel query as Prometheus runs it: Grafana's interval variables replaced by a concrete `range` (in a test,
 * one that covers the whole run) and `$job` by the scrape job. Any other `$` is a variable the test cannot
 * resolve, and throws.
 */
export function promql(expr: string, values: { range: string; job: string }): string {
  const concrete = expr
    .replace(/\$__(rate_interval|interval|range)\b/g, values.range)
    .replace(/\$\{job\}|\$job\b/g, values.job);
  if (concrete.includes('$')) throw new Error(`unresolved Grafana variable in ${JSON.stringify(expr)}`);
  return concrete;
}
