/** A key file or CLIPSERVE_API_KEYS value that cannot be used; the message names the entry. */
export class ApiKeysError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ApiKeysError';
  }
}
