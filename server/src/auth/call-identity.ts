/**
 * The API key a call was admitted with, handed from the auth interceptor to the handlers. It is
 * attached to the call's own Metadata object (a WeakMap, not a header), so a client cannot claim
 * an identity by sending a header, and it goes away with the call.
 */
import type * as grpc from '@grpc/grpc-js';

const keyNames = new WeakMap<grpc.Metadata, string>();

export function rememberKeyName(metadata: grpc.Metadata, name: string): void {
  keyNames.set(metadata, name);
}

/** The name of the key the call was admitted with; '' when the server runs without keys. */
export function keyNameOf(metadata: grpc.Metadata): string {
  return keyNames.get(metadata) ?? '';
}
