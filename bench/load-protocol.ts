/** Messages between the bench (parent) and its load-generator child process. */

export type LoadKind = 'text' | 'image' | 'stream-text' | 'stream-image';

export interface LoadScenario {
  address: string;
  kind: LoadKind;
  /** Unary: concurrent callers, each with one single-item call in flight. Stream: items in flight on one stream. */
  concurrency: number;
  warmupSeconds: number;
  seconds: number;
  captions: string[];
  /** Encoded image sent by image scenarios (base64 over IPC). */
  imageBase64?: string;
}

export interface LoadReport {
  /** Items answered inside the measured window, per second (see completionRate in ./load-generator). */
  itemsPerSec: number;
  errors: number;
  /** The first few distinct error descriptions. */
  errorSamples: string[];
  /** Per-item latency (ms) of the items completed inside the window. */
  latenciesMs: number[];
  /** The generator's own CPU seconds per wall second over the whole scenario (warm-up included):
   *  on a shared machine, what the client took from the cores the server runs on. */
  cpuCores: number;
}

export type ParentMessage = { kind: 'run'; scenario: LoadScenario } | { kind: 'exit' };
export type ChildMessage =
  { kind: 'ready' } | { kind: 'report'; report: LoadReport } | { kind: 'failed'; message: string };
