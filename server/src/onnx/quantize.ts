/**
 * Symmetric int8 quantization of Linear weights, one scale per output channel: for a weight stored
 * as [in, out] (the graph multiplies x @ W), column n gets scale max|W[:, n]| / 127 and values
 * round(W / scale) in [-127, 127]. -128 is left unused so that the grid is symmetric around zero,
 * as onnxruntime's quantizer does for weights (reduce_range aside).
 */

export interface QuantizedMatrix {
  /** [rows, cols] int8, row-major, like the float matrix it came from. */
  values: Int8Array;
  /** One scale per column (output channel). */
  scales: Float32Array;
}

export function quantizePerColumn(w: Float32Array, rows: number, cols: number): QuantizedMatrix {
  if (w.length !== rows * cols) throw new Error(`quantizePerColumn: ${w.length} values for a ${rows}×${cols} matrix`);
  const absMax = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const a = Math.abs(w[base + c]);
      if (a > absMax[c]) absMax[c] = a;
    }
  }
  // An all-zero column keeps scale 1 (any scale represents zeros exactly; 0 would divide by zero).
  const scales = absMax.map((m) => (m > 0 ? m / 127 : 1));
  const inv = scales.map((s) => 1 / s);
  const values = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) {
      const q = Math.round(w[base + c] * inv[c]);
      values[base + c] = q > 127 ? 127 : q < -127 ? -127 : q;
    }
  }
  return { values, scales };
}

/** Back to float: values × their column's scale (what the int8 graph effectively multiplies by). */
export function dequantizePerColumn(q: QuantizedMatrix, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) out[r * cols + c] = q.values[r * cols + c] * q.scales[c];
  return out;
}
