/**
 * Writer for the safetensors format (the inverse of safetensors.ts): an 8-byte little-endian header
 * length, the JSON header (padded with spaces to a multiple of 8, as upstream does, so tensor data
 * stays aligned), then each tensor's little-endian F32 bytes, contiguous and in header order.
 * Used to hand a bundle's weights to open_clip (`--model local-dir:`) when no checkpoint file of
 * them exists (random-init and adapter fine-tuned bundles). Written with async file I/O, tensor by
 * tensor, into a temporary name renamed into place: a reader never sees a half-written file.
 */
import * as fs from 'node:fs';
import type { StateDict } from '../model/state-dict';
import { numel } from '../model/state-dict';

export async function writeSafetensors(
  file: string,
  stateDict: StateDict,
  metadata: Record<string, string> = {},
): Promise<void> {
  const names = [...stateDict.keys()].sort();
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', ...metadata } };
  let offset = 0;
  for (const name of names) {
    const t = stateDict.get(name)!;
    if (t.data.length !== numel(t.shape))
      throw new Error(`tensor ${name}: ${t.data.length} values for shape [${t.shape}]`);
    const bytes = t.data.length * 4;
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await fs.promises.open(tmp, 'w');
  try {
    await fh.write(head);
    await fh.write(json);
    for (const name of names) {
      const d = stateDict.get(name)!.data;
      // Float32Array is little-endian on every platform Node supports (x64, arm64).
      await fh.write(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await fs.promises.rename(tmp, file);
}
