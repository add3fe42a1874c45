/** Progress callback for checkpoint readers: bytes of tensor data read so far, out of the total. */
export type ReadProgress = (doneBytes: number, totalBytes: number) => void;
