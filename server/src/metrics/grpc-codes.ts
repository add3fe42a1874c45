import { status as GrpcStatus } from '@grpc/grpc-js';

/**
 * gRPC status codes spelled the way Go's `codes.Code.String()` prints them. The `grpc_code` label
 * of go-grpc-prometheus uses these spellings ("Canceled" with one l, "OK", "InvalidArgument"), and
 * the dashboards and alert rules written for it match on them, so we must print them identically.
 */
const GO_CODE_NAMES: Readonly<Record<number, string>> = {
  [GrpcStatus.OK]: 'OK',
  [GrpcStatus.CANCELLED]: 'Canceled',
  [GrpcStatus.UNKNOWN]: 'Unknown',
  [GrpcStatus.INVALID_ARGUMENT]: 'InvalidArgument',
  [GrpcStatus.DEADLINE_EXCEEDED]: 'DeadlineExceeded',
  [GrpcStatus.NOT_FOUND]: 'NotFound',
  [GrpcStatus.ALREADY_EXISTS]: 'AlreadyExists',
  [GrpcStatus.PERMISSION_DENIED]: 'PermissionDenied',
  [GrpcStatus.RESOURCE_EXHAUSTED]: 'ResourceExhausted',
  [GrpcStatus.FAILED_PRECONDITION]: 'FailedPrecondition',
  [GrpcStatus.ABORTED]: 'Aborted',
  [GrpcStatus.OUT_OF_RANGE]: 'OutOfRange',
  [GrpcStatus.UNIMPLEMENTED]: 'Unimplemented',
  [GrpcStatus.INTERNAL]: 'Internal',
  [GrpcStatus.UNAVAILABLE]: 'Unavailable',
  [GrpcStatus.DATA_LOSS]: 'DataLoss',
  [GrpcStatus.UNAUTHENTICATED]: 'Unauthenticated',
};

/** All standard codes, in go-grpc-prometheus's `allCodes` order, used to pre-create handled series. */
export const ALL_GRPC_CODES: readonly number[] = [
  GrpcStatus.OK,
  GrpcStatus.CANCELLED,
  GrpcStatus.UNKNOWN,
  GrpcStatus.INVALID_ARGUMENT,
  GrpcStatus.DEADLINE_EXCEEDED,
  GrpcStatus.NOT_FOUND,
  GrpcStatus.ALREADY_EXISTS,
  GrpcStatus.PERMISSION_DENIED,
  GrpcStatus.UNAUTHENTICATED,
  GrpcStatus.RESOURCE_EXHAUSTED,
  GrpcStatus.FAILED_PRECONDITION,
  GrpcStatus.ABORTED,
  GrpcStatus.OUT_OF_RANGE,
  GrpcStatus.UNIMPLEMENTED,
  GrpcStatus.INTERNAL,
  GrpcStatus.UNAVAILABLE,
  GrpcStatus.DATA_LOSS,
];

/** Go's `codes.Code(c).String()`: the name for a standard code, `Code(<n>)` for anything else. */
export function goCodeName(code: number): string {
  return GO_CODE_NAMES[code] ?? `Code(${Math.trunc(code)})`;
}

/**
 * The log level go-grpc-middleware's logging interceptors use by default for each code: client
 * mistakes are routine (info), conditions an operator may need to look at are warnings, and codes
 * that mean the server itself failed are errors.
 */
export function logLevelForCode(code: number): 'info' | 'warn' | 'error' {
  switch (code) {
    case GrpcStatus.OK:
    case GrpcStatus.CANCELLED:
    case GrpcStatus.INVALID_ARGUMENT:
    case GrpcStatus.NOT_FOUND:
    case GrpcStatus.ALREADY_EXISTS:
    case GrpcStatus.UNAUTHENTICATED:
      return 'info';
    case GrpcStatus.DEADLINE_EXCEEDED:
    case GrpcStatus.PERMISSION_DENIED:
    case GrpcStatus.RESOURCE_EXHAUSTED:
    case GrpcStatus.FAILED_PRECONDITION:
    case GrpcStatus.ABORTED:
    case GrpcStatus.OUT_OF_RANGE:
    case GrpcStatus.UNAVAILABLE:
      return 'warn';
    default:
      return 'error';
  }
}
