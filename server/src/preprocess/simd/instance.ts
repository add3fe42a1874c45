/**
 * The WebAssembly SIMD preprocessing kernels (kernels.wat, embedded by `npm run build:wasm`):
 * one instance per thread, compiled on first use, and a bump allocator over its memory for the
 * buffers of one call. Where this runtime lacks WebAssembly SIMD the getter returns null and the
 * callers use their TypeScript reference code.
 */
import { KERNELS_WASM_BASE64 } from './kernels-wasm';

/** The part of the WebAssembly JS API used here (its types live in lib "dom", which this
 *  project does not load). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
};

/** Exports of kernels.wat; pointers are byte offsets into `memory`. */
export interface Kernels {
  memory: WasmMemory;
  h8(
    src: number,
    stride: number,
    rows: number,
    ch: number,
    dst: number,
    outW: number,
    start: number,
    pairs: number,
    k: number,
    maxPairs: number,
  ): void;
  v8(
    src: number,
    rowLen: number,
    dst: number,
    outRows: number,
    start: number,
    taps: number,
    k: number,
    ksize: number,
  ): void;
  premultiply4(p: number, len: number): void;
  unfilter(raw: number, out: number, height: number, rowBytes: number, bpp: number): number;
}

let instance: Kernels | null | undefined;
let enabled = true;

/** Turns the kernels off (true: back on), for the benchmark's side-by-side and the tests. */
export function setSimdKernels(on: boolean): void {
  enabled = on;
}

/** The kernels, or null where they are switched off or this runtime has no WebAssembly SIMD. */
export function simdKernels(): Kernels | null {
  if (!enabled) return null;
  if (instance === undefined) {
    try {
      const mod = new WebAssembly.Module(Buffer.from(KERNELS_WASM_BASE64, 'base64'));
      instance = new WebAssembly.Instance(mod).exports as unknown as Kernels;
    } catch {
      instance = null;
    }
  }
  return instance;
}

/** Bytes after every buffer: the kernels' widest load or store runs at most 16 bytes past it. */
const SLACK = 16;

/** Bump allocator for one call: offsets 16-byte aligned, each buffer followed by SLACK bytes. */
export class Arena {
  private top = 0;
  alloc(bytes: number): number {
    const at = this.top;
    this.top += (bytes + SLACK + 15) & ~15;
    return at;
  }
  /** Grows the memory to hold everything allocated; take views of memory.buffer after this. */
  commit(mem: WasmMemory): void {
    const need = Math.ceil(this.top / 65536) - mem.buffer.byteLength / 65536;
    if (need > 0) mem.grow(need);
  }
}
