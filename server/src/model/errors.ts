/** Errors of model bundles, in their own module so that every bundle stage can throw them. */

/** A bundle that cannot be written or loaded; the message starts with the file it concerns. */
export class BundleError extends Error {
  constructor(
    message: string,
    readonly file?: string,
  ) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'BundleError';
  }
}
