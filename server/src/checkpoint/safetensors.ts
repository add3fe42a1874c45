/**
 * Reader for the safetensors format: an 8-byte little-endian u64 header length N, N bytes of UTF-8
 * JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the raw
 * little-endian tensor data, offsets relative to the start of the data section.
 *
 * Tensors are read one at a time straight from the file into their final Float32Array (fp32 data is
 * read into the array's own bytes; fp16/bf16 go through a bounded scratch buffer), so peak memory is
 * the size of the resulting state dict, never file + state dict.
 */
import * as fs from 'node:fs/promises';
import type { StateDict } from '../model/state-dict';
import { numel } from '../model/state-dict';
import { BYTES_PER_ELEMENT, decodeToF32, type WeightDType } from './dtype';
import { CheckpointError } from './errors';
import type { ReadProgress } from './progress';

export interface SafetensorsEntry {
  name: string;
  dtype: WeightDType;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  dataStart: number;
}

/** Upstream refuses headers above 100 MB; a larger value means a corrupt or non-safetensors file. */
const MAX_HEADER_BYTES = 100_000_000;
/** Scratch size for converting half-precision tensors chunk by chunk. */
const CHUNK_BYTES = 16 << 20;

function isDType(d: unknown): d is WeightDType {
  return typeof d === 'string' && Object.prototype.hasOwnProperty.call(BYTES_PER_ELEMENT, d);
}

async function readExactly(fh: fs.FileHandle, buf: Uint8Array, position: number, file: string): Promise<void> {
  let done = 0;
  while (done < buf.byteLength) {
    const { bytesRead } = await fh.read(buf, done, buf.byteLength - done, position + done);
    if (bytesRead === 0) throw new CheckpointError(`unexpected end of file at byte ${position + done}`, file);
    done += bytesRead;
  }
}

async function parseHeader(fh: fs.FileHandle, file: string): Promise<SafetensorsHeader> {
  const { size } = await fh.stat();
  if (size < 8) throw new CheckpointError('not a safetensors file (shorter than 8 bytes)', file);
  const lenBuf = Buffer.alloc(8);
  await readExactly(fh, lenBuf, 0, file);
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(Math.min(MAX_HEADER_BYTES, size - 8))) {
    throw new CheckpointError(
      `not a safetensors file (header length ${headerLen} does not fit in ${size} bytes)`,
      file,
    );
  }
  const n = Number(headerLen);
  const headerBuf = Buffer.alloc(n);
  await readExactly(fh, headerBuf, 8, file);
  let json: unknown;
  try {
    json = JSON.parse(headerBuf.toString('utf8'));
  } catch (e) {
    throw new CheckpointError(`safetensors header is not valid JSON (${(e as Error).message})`, file);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json))
    throw new CheckpointError('safetensors header is not a JSON object', file);
  const dataStart = 8 + n;
  const dataSize = size - dataStart;
  const entries: SafetensorsEntry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = (raw ?? {}) as Record<string, string>;
      continue;
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!isDType(info?.dtype)) {
      throw new CheckpointError(
        `tensor "${name}" has dtype ${JSON.stringify(info?.dtype)}; only F32, F16, BF16 and F64 weights are supported`,
        file,
      );
    }
    const shape = info.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new CheckpointError(`tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`, file);
    }
    const off = info.data_offsets;
    if (
      !Array.isArray(off) ||
      off.length !== 2 ||
      !off.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      off[0] > off[1] ||
      off[1] > dataSize
    ) {
      throw new CheckpointError(
        `tensor "${name}" has invalid data_offsets ${JSON.stringify(off)} (data section is ${dataSize} bytes)`,
        file,
      );
    }
    const expected = numel(shape as number[]) * BYTES_PER_ELEMENT[info.dtype];
    if (off[1] - off[0] !== expected) {
      throw new CheckpointError(
        `tensor "${name}": ${off[1] - off[0]} bytes stored but shape ${JSON.stringify(shape)} ${info.dtype} needs ${expected}`,
        file,
      );
    }
    entries.push({
      name,
      dtype: info.dtype,
      shape: shape as number[],
      begin: dataStart + off[0],
      end: dataStart + off[1],
    });
  }
  return { entries, metadata, dataStart };
}

/** Reads every tensor of a safetensors file as fp32. */
export async function readSafetensors(file: string, onProgress?: ReadProgress): Promise<StateDict> {
  const fh = await fs.open(file, 'r');
  try {
    const header = await parseHeader(fh, file);
    const total = header.entries.reduce((a, e) => a + (e.end - e.begin), 0);
    let done = 0;
    const out: StateDict = new Map();
    // File order keeps the reads sequential.
    const ordered = [...header.entries].sort((a, b) => a.begin - b.begin);
    let scratch: Buffer | undefined;
    for (const e of ordered) {
      const count = numel(e.shape);
      const data = new Float32Array(count);
      if (e.dtype === 'F32') {
        await readExactly(fh, new Uint8Array(data.buffer), e.begin, file);
        decodeInPlaceIfBigEndian(data);
      } else {
        const width = BYTES_PER_ELEMENT[e.dtype];
        const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / width));
        scratch ??= Buffer.alloc(perChunk * width);
        for (let i = 0; i < count; i += perChunk) {
          const m = Math.min(perChunk, count - i);
          const view = scratch.subarray(0, m * width);
          await readExactly(fh, view, e.begin + i * width, file);
          decodeToF32(e.dtype, view, 0, m, data, i);
        }
      }
      out.set(e.name, { shape: [...e.shape], data });
      done += e.end - e.begin;
      onProgress?.(done, total);
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** The file is little-endian; on a big-endian host the raw read must be byte-swapped. */
function decodeInPlaceIfBigEndian(data: Float32Array): void {
  const probe = new Uint8Array(new Uint16Array([1]).buffer);
  if (probe[0] === 1) return;
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i < bytes.length; i += 4) {
    [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]] = [bytes[i + 3], bytes[i + 2], bytes[i + 1], bytes[i]];
  }
}
