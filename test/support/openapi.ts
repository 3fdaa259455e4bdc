import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { repoRoot } from './shared.js';

/** The served API description, for checking real responses against it. */
export const openapi = parse(readFileSync(join(repoRoot, 'openapi.yaml'), 'utf8')) as {
  paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
  components: { schemas: Record<string, unknown> };
};

const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addSchema({ $id: 'openapi', components: openapi.components });

/** Throws with ajv's explanation unless `value` matches components.schemas[name]. */
export function expectSchema(name: string, value: unknown): void {
  const validate = ajv.getSchema(`openapi#/components/schemas/${name}`);
  if (!validate) throw new Error(`openapi.yaml has no schema ${name}`);
  if (!validate(value)) throw new Error(`${name} does not match: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(value)}`);
}

/** Documented status codes of a route. */
export function documentedStatuses(path: string, method: string): string[] {
  const op = openapi.paths[path]?.[method];
  if (!op) throw new Error(`openapi.yaml does not describe ${method.toUpperCase()} ${path}`);
  return Object.keys(op.responses);
}
