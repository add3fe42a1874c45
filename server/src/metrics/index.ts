/** Observability: Prometheus metrics (gRPC + service + process), probes, per-call request logs. */
export {
  ClipserveMetrics,
  type ClipserveMetricsOptions,
  type Readiness,
  type ReadinessProbe,
} from './clipserve-metrics';
export {
  startMetricsServer,
  MetricsServerError,
  type MetricsHttpServer,
  type MetricsServerOptions,
} from './http-server';
export {
  GrpcServerMetrics,
  REQUEST_ID_METADATA_KEY,
  splitMethodPath,
  grpcTypeOf,
  type GrpcType,
} from './grpc-server-metrics';
export {
  ServiceMetrics,
  MetricsValueError,
  MODALITIES,
  REJECT_REASONS,
  type Modality,
  type RejectReason,
  type ModelInfoLabels,
  type FineTuneJobCounts,
  type FineTuneJobCountsSource,
} from './service-metrics';
export { goCodeName, ALL_GRPC_CODES } from './grpc-codes';
export { HttpApiMetrics, UNMATCHED_ROUTE } from './http-api-metrics';
