#!/usr/bin/env node
/**
 * Upgrading the model behind a vector index without downtime. A vector index built with model
 * version N can only be queried with N, and clipserve serves several versions at once, so:
 *
 *   1. the live index was built with N, and queries embed with N (a client pinned to N);
 *   2. re-index with N+1 (a second client pinned to N+1) while the queries go on with N;
 *   3. switch: queries use the new index and N+1, then ActivateModel(N+1) makes N+1 what unpinned
 *      callers get. Version N stays loaded for whoever still pins it until the server needs its room.
 *
 * Every query vector is checked to come from the version its index was built with (the SDK reports
 * the producing version in onProgress). Prints a JSON summary.
 *
 * Usage:
 *   node reindex.mjs --server 127.0.0.1:50051 --dir ./photos --from <N> --to <N+1> --query "a red bicycle"
 *
 * --api-key needs the admin scope for the activation (embed for the rest); --no-activate skips it.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { ClipClient } from '@clipserve/sdk';
import { buildIndex, nearest } from '../rag/rag.mjs';

/** A searchable index and the model version its vectors came from. */
class LiveIndex {
  constructor(client, version, entries) {
    this.client = client;
    this.version = version;
    this.entries = entries;
  }

  /** Top hits for a text, embedded with the index's own version. */
  async search(text, k) {
    let producedBy;
    const [vector] = await this.client.embedTexts([text], {
      modelVersion: this.version,
      onProgress: (p) => (producedBy = p.modelVersion),
    });
    if (producedBy !== this.version)
      throw new Error(`query embedded by ${producedBy}, index built with ${this.version}`);
    return {
      version: producedBy,
      hits: nearest(this.entries, vector, { limit: k, useCaptions: true }).map((h) => ({
        name: h.entry.name,
        score: h.score,
      })),
    };
  }
}

/** Builds an index of `dir` with `version`, checking every vector came from it. */
export async function indexWith(address, apiKey, version, dir) {
  const client = new ClipClient({ address, apiKey, modelVersion: version });
  const seen = new Set();
  const entries = await buildIndex(client, dir, { onProgress: (p) => seen.add(p.modelVersion) });
  if ([...seen].some((v) => v !== version))
    throw new Error(`index for ${version} got vectors from ${[...seen].join(', ')}`);
  return new LiveIndex(client, version, entries);
}

/**
 * The whole workflow: queries run continuously against the live index while the new one is
 * built, then the live index is swapped and the new version activated.
 */
export async function reindex({ address, apiKey, dir, from, to, query, k = 3, activate = true, queryIntervalMs = 20 }) {
  let live = await indexWith(address, apiKey, from, dir);
  const before = await live.search(query, k);
  const served = {};
  const failures = [];
  let stop = false;
  const traffic = (async () => {
    while (!stop) {
      try {
        const r = await live.search(query, k);
        served[r.version] = (served[r.version] ?? 0) + 1;
      } catch (err) {
        failures.push(err.message);
      }
      await new Promise((r) => setTimeout(r, queryIntervalMs));
    }
  })();
  try {
    const next = await indexWith(address, apiKey, to, dir); // queries keep using `from` meanwhile
    const old = live;
    live = next; // the switch, for this application: new index, new version, in one assignment
    let activated;
    if (activate) {
      const admin = new ClipClient({ address, apiKey });
      try {
        activated = await admin.models.activate(to);
      } finally {
        admin.close();
      }
    }
    await new Promise((r) => setTimeout(r, 10 * queryIntervalMs)); // some traffic on the new index
    stop = true;
    await traffic;
    old.client.close();
    const after = await live.search(query, k);
    return {
      indexed: live.entries.length,
      from,
      to,
      activeVersion: activated?.model.version,
      previousVersion: activated?.previousVersion,
      queriesByVersion: served,
      failures,
      before,
      after,
    };
  } finally {
    stop = true;
    await traffic;
    live.client.close();
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      server: { type: 'string', default: process.env.CLIPSERVE_ADDRESS ?? '127.0.0.1:50051' },
      dir: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      query: { type: 'string', default: 'a photo' },
      k: { type: 'string', default: '3' },
      'no-activate': { type: 'boolean', default: false },
      'api-key': { type: 'string' },
    },
  });
  if (!values.dir || !values.from || !values.to)
    throw new Error('--dir, --from <version N> and --to <version N+1> are required');
  const k = Number(values.k);
  if (!Number.isInteger(k) || k < 1) throw new Error('--k must be an integer >= 1');
  const summary = await reindex({
    address: values.server,
    apiKey: values['api-key'],
    dir: values.dir,
    from: values.from,
    to: values.to,
    query: values.query,
    k,
    activate: !values['no-activate'],
  });
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  if (summary.failures.length > 0) process.exitCode = 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`clipserve-reindex: ${err.message}\n`);
    process.exit(1);
  });
}
