/** API keys with scopes: key lists, the constant-time key store and the grpc-js interceptor. */
export { ApiKeysError } from './errors';
export { createAuthInterceptor, checkCall, AUTHORIZATION_KEY } from './interceptor';
export type { AuthInterceptorOptions, AuthVerdict } from './interceptor';
export { parseApiKeys, digestOf, MIN_KEY_LENGTH } from './key-file';
export type { ApiKeyEntry } from './key-file';
export { ApiKeySource } from './key-source';
export type { ApiKeySourceOptions } from './key-source';
export { ApiKeyStore } from './key-store';
export type { ApiKeyIdentity } from './key-store';
export { AuthPolicy, SERVICE_SCOPES } from './policy';
export type { AuthPolicyOptions, Requirement } from './policy';
export { grants, isScope, SCOPES } from './scopes';
export type { Scope } from './scopes';
