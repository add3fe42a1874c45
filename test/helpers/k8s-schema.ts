/**
 * Validation of rendered Kubernetes objects against the official API schemas, without a cluster.
 *
 * Two layers, because each misses what the other catches:
 *  - JSON Schema (ajv validators that kubernetes-models / @kubernetes-models/prometheus-operator
 *    generate from the Kubernetes OpenAPI spec and the prometheus-operator CRDs): types, required
 *    fields, enums. The Kubernetes OpenAPI schemas do not forbid unknown fields, though, so a typo
 *    such as `readinesProbe` passes them, while a real API server with strict field validation
 *    rejects it.
 *  - Unknown fields: the same generator emits TypeScript interfaces for every type; each object is
 *    type-checked as a fresh object literal of its interface, and TypeScript's excess-property check
 *    reports every field the API does not define, at any depth.
 */
import * as path from 'node:path';
import * as ts from 'typescript';

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

/** Which npm package holds the models of an API group. */
function modelPackage(apiVersion: string): string {
  const group = apiVersion.includes('/') ? apiVersion.split('/')[0] : '';
  if (group === 'monitoring.coreos.com') return '@kubernetes-models/prometheus-operator';
  return 'kubernetes-models';
}

/** Module that defines `kind` in `apiVersion`, e.g. kubernetes-models/apps/v1/Deployment. */
export function modelModule(obj: Pick<K8sObject, 'apiVersion' | 'kind'>): string {
  if (!/^[a-z0-9.-]+(\/[a-z0-9]+)?$/.test(obj.apiVersion) || !/^[A-Z][A-Za-z0-9]*$/.test(obj.kind)) {
    throw new Error(`malformed apiVersion/kind: ${obj.apiVersion} ${obj.kind}`);
  }
  return `${modelPackage(obj.apiVersion)}/${obj.apiVersion}/${obj.kind}`;
}

export function describeObject(obj: K8sObject): string {
  return `${obj.kind}/${obj.metadata?.name ?? '<unnamed>'}`;
}

type ModelClass = new (data: unknown) => { validate(): void };

/**
 * kustomize's secretGenerator folds long base64 values over several lines; the API server decodes
 * them regardless (Go's base64 decoder skips line breaks), while the schema's "byte" format does
 * not allow them. Validate what the API server reads: the value without its line breaks.
 */
function withUnwrappedSecretData(obj: K8sObject): K8sObject {
  const data = obj.kind === 'Secret' ? (obj.data as Record<string, unknown> | undefined) : undefined;
  if (!data) return obj;
  return {
    ...obj,
    data: Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, typeof v === 'string' ? v.replace(/[\r\n]/g, '') : v]),
    ),
  };
}

/** Schema errors of one object ([] when valid); an unknown apiVersion/kind is an error too. */
export function schemaErrors(obj: K8sObject): string[] {
  let Model: ModelClass | undefined;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    Model = (require(modelModule(obj)) as Record<string, ModelClass>)[obj.kind];
  } catch {
    Model = undefined;
  }
  if (!Model) return [`${describeObject(obj)}: no schema for ${obj.apiVersion} ${obj.kind}`];
  try {
    new Model(withUnwrappedSecretData(obj)).validate();
    return [];
  } catch (err) {
    const details = (err as { errors?: Array<{ instancePath: string; message?: string; params?: unknown }> }).errors;
    if (!details) return [`${describeObject(obj)}: ${(err as Error).message}`];
    return details.map(
      (d) => `${describeObject(obj)}: ${d.instancePath || '/'} ${d.message ?? ''} ${JSON.stringify(d.params ?? {})}`,
    );
  }
}

const REPO_ROOT = path.resolve(__dirname, '..', '..');

/**
 * Unknown-field errors for each object (same order as the input; [] when all fields are known).
 * One TypeScript program for all objects: building it dominates the cost (~1-2 s).
 */
export function unknownFieldErrors(objects: K8sObject[]): string[][] {
  // The virtual file sits in the repository so that module resolution finds node_modules.
  const fileName = path.join(REPO_ROOT, 'test', '__k8s_strict_fields__.ts');
  const imports: string[] = [];
  const decls: string[] = [];
  const ranges: Array<{ start: number; end: number; json: string[] }> = [];
  let body = '';
  objects.forEach((obj, i) => {
    const iface = `I${obj.kind}`;
    imports.push(`import type { ${iface} as T${i} } from ${JSON.stringify(modelModule(obj))};`);
    const json = JSON.stringify(obj, null, 2);
    const decl = `export const o${i}: T${i} = ${json};\n`;
    decls.push(decl);
  });
  const header = imports.join('\n') + '\n';
  let offset = header.length;
  for (const decl of decls) {
    ranges.push({ start: offset, end: offset + decl.length, json: decl.split('\n') });
    offset += decl.length;
    body += decl;
  }
  const text = header + body;

  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    types: [],
    lib: ['lib.es2022.d.ts'],
  };
  const host = ts.createCompilerHost(options);
  const baseGetSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, languageVersion, onError, shouldCreate) =>
    path.resolve(name) === fileName
      ? ts.createSourceFile(name, text, languageVersion, true)
      : baseGetSourceFile(name, languageVersion, onError, shouldCreate);
  const baseFileExists = host.fileExists.bind(host);
  host.fileExists = (name) => path.resolve(name) === fileName || baseFileExists(name);
  const baseReadFile = host.readFile.bind(host);
  host.readFile = (name) => (path.resolve(name) === fileName ? text : baseReadFile(name));

  const program = ts.createProgram([fileName], options, host);
  const source = program.getSourceFile(fileName);
  if (!source) throw new Error('strict field check: virtual source file was not loaded');
  const diagnostics = [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)];

  const out: string[][] = objects.map(() => []);
  for (const d of diagnostics) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    const at = d.start ?? -1;
    const index = ranges.findIndex((r) => at >= r.start && at < r.end);
    if (index < 0) {
      // Outside every object: the import header (a model module that does not resolve). Never drop it.
      throw new Error(`strict field check: ${message}`);
    }
    const { line } = source.getLineAndCharacterOfPosition(at);
    const { line: firstLine } = source.getLineAndCharacterOfPosition(ranges[index].start);
    const snippet = (ranges[index].json[line - firstLine] ?? '').trim();
    out[index].push(`${describeObject(objects[index])}: ${message} (at: ${snippet})`);
  }
  return out;
}

/** Every schema and unknown-field error of a set of objects, each prefixed with Kind/name. */
export function validateObjects(objects: K8sObject[]): string[] {
  const perObject = objects.map((o) => schemaErrors(o));
  // Objects without a model have no interface to check fields against; their error is already listed.
  const known = objects.filter((o, i) => !perObject[i].some((e) => e.includes(': no schema for ')));
  return perObject.flat().concat(unknownFieldErrors(known).flat());
}
