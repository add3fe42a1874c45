/**
 * Bounds what an error message repeats of a caller's input: a 200,000-character job id must not
 * come back as a 200 KB status trailer (or a log line of that size). Longer values are cut and say
 * how long they were.
 */

/** Characters of an input an error message repeats at most. */
export const ECHO_MAX_CHARS = 120;

export function echo(value: string, max = ECHO_MAX_CHARS): string {
  return value.length <= max ? value : `${value.slice(0, max)}… (${value.length} characters)`;
}
