/** Binary files of the adapter method (features, checkpoints), written so a crash never leaves a partial one. */
import * as fs from 'node:fs';

/** Writes `chunks` to `file.tmp`, syncs it and renames it over `file`: a crash leaves the previous file or the new one. */
export function writeFileAtomic(file: string, chunks: ArrayBufferView[]): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    for (const a of chunks) fs.writeSync(fd, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
