/**
 * API-key scopes and what each grants. `admin` implies every other scope, so an operator key
 * needs no list; the others grant exactly their own service.
 */
export const SCOPES = ['embed', 'finetune', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export function isScope(value: string): value is Scope {
  return (SCOPES as readonly string[]).includes(value);
}

/** True when a key holding `held` may call something that needs `needed`. */
export function grants(held: ReadonlySet<Scope>, needed: Scope): boolean {
  return held.has('admin') || held.has(needed);
}
