/** gRPC statuses for the fine-tune and model-registry errors (the rest go through toStatus). */
import { status as Status } from '@grpc/grpc-js';
import { DatasetError, DatasetInUseError, DatasetNotFoundError, DatasetQuotaError } from '../finetune/dataset';
import { JobNotFoundError, JobStateError } from '../finetune/jobs';
import { FineTunePreconditionError, FineTuneValidationError } from '../finetune/method';
import { ModelActivationError } from '../inference/model-host';
import { ModelNotFoundError } from '../versions/registry';
import { RpcError } from './status';

/** `err` as an RpcError when it is one of ours, else unchanged (toStatus maps it). */
export function fineTuneRpcError(err: unknown): unknown {
  if (err instanceof DatasetNotFoundError) return new RpcError(Status.NOT_FOUND, err.message);
  if (err instanceof FineTunePreconditionError) return new RpcError(Status.FAILED_PRECONDITION, err.message);
  if (err instanceof DatasetInUseError) return new RpcError(Status.FAILED_PRECONDITION, err.message);
  if (err instanceof DatasetQuotaError) return new RpcError(Status.RESOURCE_EXHAUSTED, err.message);
  if (err instanceof FineTuneValidationError || err instanceof DatasetError)
    return new RpcError(Status.INVALID_ARGUMENT, err.message);
  if (err instanceof JobNotFoundError || err instanceof ModelNotFoundError)
    return new RpcError(Status.NOT_FOUND, err.message);
  if (err instanceof JobStateError) return new RpcError(Status.FAILED_PRECONDITION, err.message);
  if (err instanceof ModelActivationError) return new RpcError(Status.FAILED_PRECONDITION, err.message);
  return err;
}

/** Runs `fn`, rethrowing our errors as RpcErrors. */
export async function mapped<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw fineTuneRpcError(err);
  }
}
