/** The embedding server: start it programmatically, or configure it like `clipserve serve`. */
export { startServer } from './server';
export type { RunningServer, ServerStats, StartOptions, StartServerConfig } from './server';
export { ConfigError, configFromEnv, readConfigFile, resolveServeConfig, SERVE_OPTIONS } from './config';
export type { LogLevel, Provider, ServeConfig } from './config';
export { loadServedModel } from './model-loader';
export type { ModelLoader } from './model-loader';
