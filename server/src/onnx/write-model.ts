/**
 * Writes one CLIP tower as `<tower>.onnx` plus `<tower>.onnx.data` (external weights), streaming
 * the weights to disk as the graph is built. Returns sizes and SHA-256 digests for the manifest.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ModelConfig } from '../model/config';
import {
  buildTextGraph,
  buildVisualGraph,
  DEFAULT_TOWER_OPTIONS,
  type Int8Plan,
  type TowerOptions,
  type WeightLookup,
} from './clip-graph';
import { ExternalDataWriter } from './external-data';
import { GraphBuilder } from './graph-builder';
import { encodeModel } from './proto';

/** Same default as onnx's convert_model_to_external_data: tensors of 1 KiB or more go external. */
export const EXTERNAL_THRESHOLD_BYTES = 1024;

export type Tower = 'visual' | 'textual';

export interface WrittenFile {
  path: string;
  bytes: number;
  sha256: string;
}

export interface WrittenTower {
  onnx: WrittenFile;
  data?: WrittenFile;
}

export interface WriteTowerOptions {
  onnxPath: string;
  tower: Tower;
  config: ModelConfig;
  weights: WeightLookup;
  precision: 'fp32' | 'fp16' | 'int8';
  /** For precision int8: the projections that run in int8 (or a calibration graph). */
  int8?: Int8Plan;
  producerVersion: string;
  towerOptions?: TowerOptions;
  externalThresholdBytes?: number;
  /** Called with each chunk of weight bytes written. */
  onBytes?: (n: number) => void;
}

export function writeTowerModel(o: WriteTowerOptions): WrittenTower {
  const dataPath = `${o.onnxPath}.data`;
  const writer = new ExternalDataWriter(dataPath, o.onBytes);
  let data: { bytes: number; sha256: string };
  let bytes: Uint8Array;
  try {
    const b = new GraphBuilder(`clip_${o.tower}`, {
      half: o.precision === 'fp16',
      external: {
        writer,
        location: path.basename(dataPath),
        thresholdBytes: o.externalThresholdBytes ?? EXTERNAL_THRESHOLD_BYTES,
      },
    });
    const opts = o.towerOptions ?? DEFAULT_TOWER_OPTIONS;
    if (o.precision === 'int8' && !o.int8)
      throw new Error('an int8 tower needs its int8 plan (which layers run in int8)');
    const int8 = o.precision === 'int8' ? o.int8 : undefined;
    if (o.tower === 'visual') buildVisualGraph(b, o.config, o.weights, opts, int8);
    else buildTextGraph(b, o.config, o.weights, opts, int8);
    data = writer.close();
    bytes = encodeModel(
      b.build({
        producerVersion: o.producerVersion,
        docString: `OpenCLIP ${o.tower} tower (${o.int8?.calibrate ? 'int8 calibration' : o.precision})`,
      }),
    );
  } catch (err) {
    writer.abort();
    throw err;
  }
  fs.writeFileSync(o.onnxPath, bytes);
  const onnx: WrittenFile = {
    path: o.onnxPath,
    bytes: bytes.byteLength,
    sha256: crypto.createHash('sha256').update(bytes).digest('hex'),
  };
  if (data.bytes === 0) {
    fs.rmSync(dataPath);
    return { onnx };
  }
  return { onnx, data: { path: dataPath, ...data } };
}
