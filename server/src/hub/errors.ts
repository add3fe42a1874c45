/** A failure talking to the Hugging Face hub or using its cache; `status` is the HTTP status when
 *  the hub answered, so callers can tell "not found" (try another file) from real failures. */
export class HubError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'HubError';
  }
}
