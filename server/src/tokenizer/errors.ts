/** Errors raised by the tokenizer for bad vocabulary files or bad arguments. */
export class TokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

/** A vocabulary file (merges file, vocab.json, merges.txt) that cannot be used. */
export class VocabFileError extends TokenizerError {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'VocabFileError';
  }
}
