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
  /** a multi-value variable's selection is a list; `$__all` stands for All */
  current?: { text: string | string[]; value: string | string[] };
  multi?: boolean;
  includeAll?: boolean;
  /** what All becomes in a query; unset (or null), Grafana lists every value the variable's query found */
  allValue?: string | null;
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
  if (ref.uid === '${datasource}' || ref.uid === '$datasource') {
    const uid = variable(dashboard, 'datasource').current?.value;
    if (typeof uid !== 'string') throw new Error(`the datasource variable's default is ${JSON.stringify(uid)}, not one uid`);
    return uid;
  }
  if (ref.uid.includes('$')) throw new Error(`unresolved Grafana variable in datasource uid ${JSON.stringify(ref.uid)}`);
  return ref.uid;
}

/**
 * The values of a multi-value or All variable as Grafana's Prometheus datasource writes them into a query
 * (prometheusSpecialRegexEscape): each value regex-escaped, the backslash doubled as a PromQL string needs; one
 * value as is, several as `(a|b)`.
 */
export function grafanaRegex(values: string[]): string {
  const escaped = values.map((v) => v.replace(/\\/g, '\\\\\\\\').replace(/[$^*{}[\]+?.()|]/g, '\\\\$&'));
  return escaped.length === 1 ? escaped[0]! : `(${escaped.join('|')})`;
}

/** What a multi-value variable at All becomes in a query: its custom All value as written, else every value its query found. */
export function allValue(v: Variable, found: string[]): string {
  return v.allValue ?? grafanaRegex(found);
}

/**
 * A panel query as Prometheus runs it: Grafana's interval variables replaced by a concrete `range` (in a test,
 * one that covers the whole run), `$job` by the scrape job and `$instance` by `instance`, the selection as Grafana
 * writes it (allValue(), grafanaRegex()). Any other `$`, or `$instance` with no `instance` given, is a variable
 * the test cannot resolve, and throws.
 */
export function promql(expr: string, values: { range: string; job: string; instance?: string }): string {
  const instance = /\$\{instance\}|\$instance\b/g;
  const concrete = expr.replace(/\$__(rate_interval|interval|range)\b/g, values.range).replace(/\$\{job\}|\$job\b/g, values.job);
  const withoutInstance = concrete.replace(instance, '');
  if (withoutInstance.includes('$') || (values.instance === undefined && withoutInstance !== concrete)) {
    throw new Error(`unresolved Grafana variable in ${JSON.stringify(expr)}`);
  }
  return values.instance === undefined ? concrete : concrete.replace(instance, () => values.instance!);
}
