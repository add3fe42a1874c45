/**
 * The OpenAI-compatible HTTP API as a fastify application (routes, validation, auth, errors,
 * metrics, the OpenAPI document); server.ts puts it on a port. Every route answers JSON, and every
 * failure OpenAI's error shape.
 */
import { randomUUID } from 'node:crypto';
import fastifySwagger from '@fastify/swagger';
import Fastify, {
  type FastifyError,
  type FastifyHttpsOptions,
  type FastifyInstance,
  type FastifyServerOptions,
} from 'fastify';
import type * as https from 'node:https';
import type { Requirement } from '../auth';
import { checkCount } from '../grpc/validate';
import { acceptableRequestId, REQUEST_ID_METADATA_KEY } from '../metrics/grpc-server-metrics';
import { UNMATCHED_ROUTE } from '../metrics/http-api-metrics';
import { checkRequest } from './auth';
import { BodyOffload } from './body-offload';
import type { HttpApiDeps } from './deps';
import { errorBody, toHttpError } from './errors';
import { frameworkError } from './framework-errors';
import { registerEmbeddings } from './routes/embeddings';
import { registerModels } from './routes/models';
import { registerTasks } from './routes/tasks';
import { SHARED_SCHEMAS } from './schemas';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route when API keys are configured; absent: open. */
    requirement?: Requirement;
  }
}

export interface HttpAppOptions {
  /** Largest request body (--max-message-bytes: an image arrives base64 in JSON, as in a gRPC message). */
  bodyLimit: number;
  /** node:https options (TLS); plain HTTP without. */
  https?: https.ServerOptions;
}

export const OPENAPI_PATH = '/openapi.json';
/** Error messages can quote a server-side message; logs keep only its beginning. */
const MAX_LOGGED_DETAILS = 200;

/** The log level of a finished request, as grpc-codes.ts logLevelForCode grades gRPC codes. */
function logLevelForStatus(status: number): 'info' | 'warn' | 'error' {
  if (status >= 500 && status !== 503 && status !== 504) return 'error';
  if (status === 403 || status === 429 || status === 503 || status === 504) return 'warn';
  return 'info';
}

export async function buildHttpApp(deps: HttpApiDeps, options: HttpAppOptions): Promise<FastifyInstance> {
  const base: FastifyServerOptions = {
    logger: false,
    bodyLimit: options.bodyLimit,
    // The request id: the client's x-request-id when it looks like one (as on gRPC), else a fresh one.
    requestIdHeader: false,
    genReqId: (req) => acceptableRequestId(req.headers[REQUEST_ID_METADATA_KEY]) ?? randomUUID(),
    // Strict JSON types: "input": 5 is an error, not the text "5".
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false } },
    // A slow client may not hold a connection open forever while sending (slowloris).
    requestTimeout: 300_000,
    // A request arriving while the listener closes meets the drained gate: 503 in OpenAI's shape.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
  };
  const app: FastifyInstance = options.https
    ? (Fastify({ ...base, https: options.https } as FastifyHttpsOptions<https.Server>) as unknown as FastifyInstance)
    : Fastify(base);
  for (const schema of SHARED_SCHEMAS) app.addSchema(schema);
  // JSON bodies are parsed off the event loop when large (body-offload.ts).
  const offload = new BodyOffload();
  app.addHook('onClose', async () => offload.close());
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, async (_request: unknown, body: Buffer) =>
    offload.parse(body),
  );
  // Responses are plain JSON.stringify: the response schemas document them (OpenAPI) without a
  // second serializer that could disagree with them.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

  await app.register(fastifySwagger, {
    // Shared schemas appear under their $id ("Error"), not "def-0".
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`),
    },
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'clipserve HTTP API',
        version: '1',
        description:
          'OpenAI-compatible embeddings for texts and images (CLIP), next to the gRPC API. Send "Authorization: Bearer <key>" when the server has API keys.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: deps.auth ? [{ bearer: [] }] : [],
    },
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header(REQUEST_ID_METADATA_KEY, request.id);
    const requirement = request.routeOptions.config.requirement;
    // Before the body is read: a caller without a key costs no parsing.
    if (deps.auth && requirement) checkRequest(request, requirement, { ...deps.auth, logger: deps.logger });
  });
  // One line per finished request, as gRPC calls get one ("rpc finished"): never payloads.
  const errorMessages = new WeakMap<object, string>();
  app.addHook('onResponse', async (request, reply) => {
    const status = reply.statusCode;
    deps.metrics?.observe(request.method, request.routeOptions.url, status, reply.elapsedTime / 1000);
    const fields: Record<string, unknown> = {
      requestId: request.id,
      method: request.method,
      route: request.routeOptions.url ?? UNMATCHED_ROUTE,
      status,
      durationMs: Math.round(reply.elapsedTime * 1000) / 1000,
      peer: request.ip,
    };
    const message = errorMessages.get(request);
    if (message !== undefined) fields.details = message.slice(0, MAX_LOGGED_DETAILS);
    deps.logger[logLevelForStatus(status)](fields, 'http request finished');
  });

  // Before schema validation walks them: no list in a body may be longer than a request may hold,
  // so a body of a million items is refused at once, with the gRPC API's message.
  app.addHook('preValidation', async (request) => {
    const body = request.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return;
    for (const [field, value] of Object.entries(body)) {
      if (Array.isArray(value) && value.length > deps.limits.maxItemsPerRequest)
        checkCount(field, value.length, 0, deps.limits);
    }
  });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const mapped = toHttpError(frameworkError(err) ?? err);
    if (mapped.internal)
      deps.logger.error({ err, requestId: request.id, route: request.routeOptions.url }, 'http request failed');
    errorMessages.set(request, mapped.body.error.message);
    if (mapped.retryAfter !== undefined) reply.header('retry-after', String(mapped.retryAfter));
    return reply.code(mapped.status).type('application/json').send(mapped.body);
  });
  app.setNotFoundHandler((request, reply) =>
    reply
      .code(404)
      .send(
        errorBody(
          404,
          `no route ${request.method} ${request.url.split('?')[0].slice(0, 200)}: see ${OPENAPI_PATH}`,
          'not_found',
        ),
      ),
  );

  const decodeImage = (ref: string, param: string) => offload.image(ref, param, deps.limits.maxImageBytes);
  registerEmbeddings(app, deps, decodeImage);
  registerModels(app, deps);
  registerTasks(app, deps, decodeImage);
  app.get(
    OPENAPI_PATH,
    { config: deps.auth?.openDocs ? {} : { requirement: { kind: 'authenticated' } }, schema: { hide: true } },
    async () => app.swagger(),
  );
  await app.ready();
  return app;
}
