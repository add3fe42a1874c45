/**
 * The shape of a benchmark run's results (what run.ts measures, report.ts judges and prints, and
 * bench/results/*.json holds): apart from both so neither imports the other.
 */
import type { ArchName } from '../server/src/model/config';
import type { PreprocessResult, ResponseEncodingResult, TokenizerResult } from './hot-paths';
import type { BenchProvider, RawResult, RawTextResults } from './raw-encoder';
import type { ServedResult } from './server-bench';
import type { LatencySummary } from './stats';

export type Section = 'raw' | 'server' | 'hot';
export const SECTIONS: readonly Section[] = ['raw', 'server', 'hot'];

export interface ModelResults {
  bundle: { dir: string; weightBytes: number; built: boolean; buildSeconds: number };
  raw?: { image: RawResult[]; text: RawTextResults };
  server?: {
    maxBatchSize: number;
    /** spawn → "model ready: serving" (load, verify, session creation, warm-up) */
    readySeconds: number;
    readyPeakRssBytes: number;
    served: ServedResult[];
  };
}

export interface BenchResults {
  meta: {
    date: string;
    host: string;
    node: string;
    onnxruntime: string;
    cpus: number;
    cpuModel: string;
    memoryBytes: number;
    loadAverageBefore: number[];
    loadAverageAfter: number[];
    provider: BenchProvider;
    intraOpThreads: number;
    quick: boolean;
    sections: Section[];
    wallSeconds: number;
  };
  models: Partial<Record<ArchName, ModelResults>>;
  /** bare grpc-js unary round trip between two processes (a do-nothing handler) */
  transportFloor?: LatencySummary;
  hot?: { tokenizer: TokenizerResult; preprocess: PreprocessResult[]; responseEncoding: ResponseEncodingResult[] };
  targets: TargetRow[];
}

export interface TargetRow {
  target: string;
  model: string;
  measured: string;
  required: string;
  met: boolean;
}
