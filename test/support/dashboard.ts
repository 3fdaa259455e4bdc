import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './shared.js';

/** The parts of a Grafana dashboard JSON (deploy/grafana/dashboards) the tests read. */
export interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
}

export interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: { refId: string; expr: string; legendFormat?: string; datasource?: { type: string; uid: string } }[];
}

export const DASHBOARD_PATH = join(repoRoot, 'deploy', 'grafana', 'dashboards', 'mega-asr.json');

export function loadDashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_PATH, 'utf8')) as Dashboard;
}

/**
 * A panel query as Prometheus runs it: Grafana's interval variables replaced by a concrete `range` (in a test,
 * one that covers the whole run). Any other `$` is a variable the test cannot resolve, and throws.
 */
export function promql(expr: string, range: string): string {
  const concrete = expr.replace(/\$__(rate_interval|interval|range)\b/g, range);
  if (concrete.includes('$')) throw new Error(`unresolved Grafana variable in ${JSON.stringify(expr)}`);
  return concrete;
}
