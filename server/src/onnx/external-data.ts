/**
 * Writes ONNX external tensor data (`<model>.onnx.data`) sequentially, straight from the caller's
 * arrays: fp32 tensors go to disk from their own memory (no copy), fp16 ones through a bounded
 * scratch buffer, so writing a model never holds a second copy of its weights. The SHA-256 of the
 * file is computed on the way, which saves re-reading gigabytes for the bundle manifest.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { toHalfInto } from './fp16';

/** Offsets are aligned so that onnxruntime can memory-map each tensor (page size). */
export const EXTERNAL_DATA_ALIGNMENT = 4096;
const HALF_CHUNK_ELEMS = 1 << 20;

export interface ExternalLocation {
  offset: number;
  length: number;
}

export class ExternalDataWriter {
  private fd: number;
  private position = 0;
  private readonly hash = crypto.createHash('sha256');
  private readonly scratch = new Uint16Array(HALF_CHUNK_ELEMS);
  private closed = false;

  constructor(
    readonly filePath: string,
    private readonly onBytes?: (n: number) => void,
  ) {
    this.fd = fs.openSync(filePath, 'w');
  }

  get bytesWritten(): number {
    return this.position;
  }

  /** Appends `data` as float32 (or float16 when `half`), returning where it went. */
  writeFloats(data: Float32Array, half: boolean): ExternalLocation {
    this.pad();
    const offset = this.position;
    if (!half) {
      this.put(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    } else {
      for (let from = 0; from < data.length; from += HALF_CHUNK_ELEMS) {
        const n = Math.min(HALF_CHUNK_ELEMS, data.length - from);
        const chunk = this.scratch.subarray(0, n);
        toHalfInto(data, from, chunk);
        this.put(new Uint8Array(chunk.buffer, 0, n * 2));
      }
    }
    return { offset, length: this.position - offset };
  }

  /** Appends raw bytes (int8 weights), aligned like the float tensors. */
  writeBytes(bytes: Uint8Array): ExternalLocation {
    this.pad();
    const offset = this.position;
    this.put(bytes);
    return { offset, length: bytes.byteLength };
  }

  /** Closes the file and returns its size and SHA-256 (hex). */
  close(): { bytes: number; sha256: string } {
    if (!this.closed) {
      fs.closeSync(this.fd);
      this.closed = true;
    }
    return { bytes: this.position, sha256: this.hash.digest('hex') };
  }

  /** Closes without a digest, for error paths. */
  abort(): void {
    if (!this.closed) {
      fs.closeSync(this.fd);
      this.closed = true;
    }
  }

  private pad(): void {
    const rem = this.position % EXTERNAL_DATA_ALIGNMENT;
    if (rem !== 0) this.put(new Uint8Array(EXTERNAL_DATA_ALIGNMENT - rem));
  }

  private put(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.byteLength) {
      done += fs.writeSync(this.fd, bytes, done, bytes.byteLength - done, this.position + done);
    }
    this.hash.update(bytes);
    this.position += bytes.byteLength;
    this.onBytes?.(bytes.byteLength);
  }
}
