/** Raised for any checkpoint that cannot be read as an OpenCLIP state_dict: a malformed file, an
 *  unsupported dtype or pickle construct, or a directory without the expected files. The message
 *  always names the file so a CLI user can act on it. */
export class CheckpointError extends Error {
  constructor(
    message: string,
    readonly file?: string,
  ) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'CheckpointError';
  }
}
