/**
 * `hf-hub:<org>/<repo>[@revision]` model references, as open_clip names hub models.
 */
import { HubError } from './errors';

export const HF_HUB_PREFIX = 'hf-hub:';
export const DEFAULT_REVISION = 'main';

export interface HubRef {
  repo: string;
  revision: string;
}

/** Hub repo ids: a namespace and a name of letters, digits, '-', '_' and '.'. */
const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function isHubRef(ref: string): boolean {
  return ref.startsWith(HF_HUB_PREFIX);
}

export function parseHubRef(ref: string): HubRef {
  if (!isHubRef(ref))
    throw new HubError(`"${ref}" is not a hub reference (expected ${HF_HUB_PREFIX}<org>/<repo>[@revision])`);
  const body = ref.slice(HF_HUB_PREFIX.length);
  const at = body.indexOf('@');
  const repo = at < 0 ? body : body.slice(0, at);
  const revision = at < 0 ? DEFAULT_REVISION : body.slice(at + 1);
  if (!REPO_ID.test(repo) || repo.includes('..'))
    throw new HubError(`invalid hub repo id "${repo}" in "${ref}" (expected <org>/<repo>)`);
  if (!revision || /[\s\\]|\.\./.test(revision)) throw new HubError(`invalid revision "${revision}" in "${ref}"`);
  return { repo, revision };
}

/** The on-disk folder name the hub cache uses for a model repo: models--org--repo. */
export function repoFolderName(repo: string): string {
  return `models--${repo.replace(/\//g, '--')}`;
}
