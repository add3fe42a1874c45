/**
 * Handlers for a service this server describes (reflection lists the whole clipserve.v1 package)
 * but cannot serve as configured: every method answers UNIMPLEMENTED saying what to change,
 * instead of grpc-js's generic "The server does not implement the method".
 */
import * as grpc from '@grpc/grpc-js';

export function disabledServiceHandlers(
  service: grpc.ServiceDefinition,
  why: string,
): grpc.UntypedServiceImplementation {
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const [method, def] of Object.entries(service)) {
    const error = { code: grpc.status.UNIMPLEMENTED, details: `${method}: ${why}` };
    if (!def.responseStream) {
      // Unary and client-streaming: answer at once; what the client still sends is discarded.
      handlers[method] = ((_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
        callback(error)) as grpc.UntypedHandleCall;
    } else {
      handlers[method] = ((call: grpc.ServerWritableStream<unknown, unknown>) =>
        call.emit('error', error)) as grpc.UntypedHandleCall;
    }
  }
  return handlers;
}
