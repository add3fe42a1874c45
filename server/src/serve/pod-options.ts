/**
 * Parsers for the `full` fine-tune pod options of the serve options table (config.ts): node
 * selector, tolerations, image pull secrets, a /dev/shm size, the GPU resource name and the
 * service account. Each accepts the flag/environment string form and, from a config file, the
 * JSON form, and checks what the Kubernetes API would check, so a typo fails at start rather
 * than as a Job the API server rejects at the first fine-tune.
 */
import type { V1Toleration } from '@kubernetes/client-node';

/** A bad pod option; config.ts turns it into a ConfigError (this module stays free of config.ts). */
class ConfigError extends Error {}

/** A DNS-1123 label (names of secrets' and service accounts' segments, label name parts). */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** A label / taint name: optional DNS-subdomain prefix, then a qualified name of at most 63. */
const QUALIFIED_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
const EFFECTS = ['NoSchedule', 'PreferNoSchedule', 'NoExecute'] as const;
/** A Kubernetes quantity as used for memory sizes (e.g. 16Gi, 500M, 1.5G). */
const QUANTITY = /^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/;

function objectName(v: string, name: string, what: string): string {
  if (v.length > 253 || !v.split('.').every((part) => DNS_LABEL.test(part)))
    throw new ConfigError(`${name}: ${JSON.stringify(v)} is not a valid ${what} name`);
  return v;
}

function list(raw: unknown, name: string): string[] {
  if (Array.isArray(raw)) return raw.map((x) => (typeof x === 'string' ? x.trim() : ''));
  if (typeof raw !== 'string')
    throw new ConfigError(`${name} must be a comma-separated list, got ${JSON.stringify(raw)}`);
  return raw
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

/** `key=value,key2=value2`, or a JSON object in a config file. */
export function parseNodeSelector(raw: unknown, name: string): Record<string, string> {
  const pairs: Array<[string, string]> = [];
  if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
    for (const [k, v] of Object.entries(raw as Record<string, unknown>))
      pairs.push([k, typeof v === 'string' ? v : String(v)]);
  } else {
    for (const item of list(raw, name)) {
      const eq = item.indexOf('=');
      if (eq <= 0) throw new ConfigError(`${name}: ${JSON.stringify(item)} is not key=value`);
      pairs.push([item.slice(0, eq), item.slice(eq + 1)]);
    }
  }
  if (pairs.length === 0) throw new ConfigError(`${name} names no label`);
  for (const [k, v] of pairs) {
    if (!QUALIFIED_NAME.test(k)) throw new ConfigError(`${name}: ${JSON.stringify(k)} is not a valid label key`);
    if (!LABEL_VALUE.test(v)) throw new ConfigError(`${name}: ${JSON.stringify(v)} is not a valid label value`);
  }
  return Object.fromEntries(pairs);
}

function toleration(t: V1Toleration, name: string): V1Toleration {
  const operator = t.operator ?? (t.value ? 'Equal' : 'Exists');
  if (operator !== 'Equal' && operator !== 'Exists')
    throw new ConfigError(`${name}: operator must be Equal or Exists, got ${JSON.stringify(t.operator)}`);
  if (t.key !== undefined && t.key !== '' && !QUALIFIED_NAME.test(t.key))
    throw new ConfigError(`${name}: ${JSON.stringify(t.key)} is not a valid taint key`);
  if (!t.key && operator !== 'Exists')
    throw new ConfigError(`${name}: a toleration without a key must use operator Exists`);
  if (operator === 'Exists' && t.value)
    throw new ConfigError(`${name}: operator Exists takes no value (got ${JSON.stringify(t.value)})`);
  if (t.value !== undefined && !LABEL_VALUE.test(t.value))
    throw new ConfigError(`${name}: ${JSON.stringify(t.value)} is not a valid taint value`);
  if (t.effect !== undefined && t.effect !== '' && !(EFFECTS as readonly string[]).includes(t.effect)) {
    throw new ConfigError(`${name}: effect must be one of ${EFFECTS.join(', ')}, got ${JSON.stringify(t.effect)}`);
  }
  return {
    ...(t.key ? { key: t.key } : {}),
    operator,
    ...(t.value ? { value: t.value } : {}),
    ...(t.effect ? { effect: t.effect } : {}),
    ...(t.tolerationSeconds !== undefined ? { tolerationSeconds: t.tolerationSeconds } : {}),
  };
}

/**
 * Taints the training pods tolerate: `key[=value][:Effect]` items separated by commas (kubectl
 * taint's syntax; without a value the operator is Exists), `none` for no tolerations, or a JSON
 * array of Kubernetes toleration objects (string or config file).
 */
export function parseTolerations(raw: unknown, name: string): V1Toleration[] {
  if (typeof raw === 'string' && raw.trim().startsWith('[')) {
    try {
      raw = JSON.parse(raw);
    } catch (err) {
      throw new ConfigError(`${name}: invalid JSON: ${(err as Error).message}`);
    }
  }
  if (Array.isArray(raw) && raw.every((x) => x && typeof x === 'object'))
    return (raw as V1Toleration[]).map((t) => toleration(t, name));
  if (typeof raw === 'string' && raw.trim() === 'none') return [];
  return list(raw, name).map((item) => {
    const m = /^([^=:]*)(?:=([^:]*))?(?::(.*))?$/.exec(item)!;
    return toleration(
      {
        key: m[1],
        ...(m[2] !== undefined ? { value: m[2], operator: 'Equal' } : { operator: 'Exists' }),
        ...(m[3] !== undefined ? { effect: m[3] } : {}),
      },
      name,
    );
  });
}

/** Secret names, comma-separated (or a JSON array in a config file). */
export function parseSecretNames(raw: unknown, name: string): string[] {
  const names = list(raw, name);
  if (names.length === 0) throw new ConfigError(`${name} names no secret`);
  return names.map((n) => objectName(n, name, 'secret'));
}

export function parseServiceAccount(raw: unknown, name: string): string {
  if (typeof raw !== 'string')
    throw new ConfigError(`${name} must be a service account name, got ${JSON.stringify(raw)}`);
  return objectName(raw, name, 'service account');
}

export function parseQuantity(raw: unknown, name: string): string {
  const v = typeof raw === 'number' ? String(raw) : raw;
  if (typeof v !== 'string' || !QUANTITY.test(v))
    throw new ConfigError(`${name} must be a Kubernetes quantity such as 16Gi, got ${JSON.stringify(raw)}`);
  return v;
}

/** An extended resource name such as nvidia.com/gpu or amd.com/gpu. */
export function parseResourceName(raw: unknown, name: string): string {
  if (typeof raw !== 'string' || !raw.includes('/') || !QUALIFIED_NAME.test(raw)) {
    throw new ConfigError(
      `${name} must be an extended resource name such as nvidia.com/gpu, got ${JSON.stringify(raw)}`,
    );
  }
  return raw;
}
