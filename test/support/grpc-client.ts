// A plain @grpc/grpc-js client, as a backend would use it: unary calls by
// path, messages encoded with the generated protobuf-es schemas. Nothing of
// the server's transport code is reused. Raw byte calls send whatever bytes
// a broken client might.
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import { anyUnpack } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema, type BadRequest, type ErrorInfo, type RetryInfo } from '../../src/gen/google/rpc/error_details_pb.js';
import { StatusSchema } from '../../src/gen/google/rpc/status_pb.js';

const DEADLINE_MS = 5_000;

export function grpcClient(target: string): grpc.Client {
  return new grpc.Client(target, grpc.credentials.createInsecure());
}

interface UnaryMethod<I extends DescMessage, O extends DescMessage> {
  name: string;
  parent: { typeName: string };
  input: I;
  output: O;
}

export function grpcCall<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: UnaryMethod<I, O>,
  request: MessageInitShape<I>,
  metadata = new grpc.Metadata(),
): Promise<MessageShape<O>> {
  const bytes = Buffer.from(toBinary(method.input, create(method.input, request)));
  return grpcRaw(client, `/${method.parent.typeName}/${method.name}`, bytes, metadata).then((out) => fromBinary(method.output, out));
}

/** Sends exactly `body` as the request message and returns the response bytes. */
export function grpcRaw(client: grpc.Client, path: string, body: Buffer, metadata = new grpc.Metadata()): Promise<Buffer> {
  const identity = (b: Buffer): Buffer => b;
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(path, identity, identity, body, metadata, { deadline: Date.now() + DEADLINE_MS }, (err, out) =>
      err ? reject(err) : resolve(out!),
    );
  });
}

/** The error a call failed with (fails the test if it succeeded). */
export async function grpcError(call: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('expected the call to fail, it succeeded');
}

export interface RichDetails {
  badRequest?: BadRequest;
  retryInfo?: RetryInfo;
  errorInfo?: ErrorInfo;
  statusCode?: number;
}

/** google.rpc.Status from `grpc-status-details-bin`, with the details we use unpacked. */
export function richDetails(err: grpc.ServiceError): RichDetails {
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  if (!Buffer.isBuffer(raw)) return {};
  const status = fromBinary(StatusSchema, raw);
  const found: RichDetails = { statusCode: status.code };
  for (const any of status.details) {
    found.badRequest ??= anyUnpack(any, BadRequestSchema);
    found.retryInfo ??= anyUnpack(any, RetryInfoSchema);
    found.errorInfo ??= anyUnpack(any, ErrorInfoSchema);
  }
  return found;
}

/** grpc.health.v1.Health/Check by hand: request {service}, response field 1 = status enum. */
export async function grpcHealth(client: grpc.Client, service = ''): Promise<number> {
  const name = Buffer.from(service);
  const request = service ? Buffer.concat([Buffer.from([0x0a, name.length]), name]) : Buffer.alloc(0);
  const response = await grpcRaw(client, '/grpc.health.v1.Health/Check', request);
  // HealthCheckResponse{status}: tag 0x08 then the enum as one varint byte (values 0..3); absent = 0.
  return response.length >= 2 && response[0] === 0x08 ? response[1]! : 0;
}

export const SERVING = 1;

/** Health/Check until it answers SERVING, for `ms` at most (the last failure is thrown). */
export async function untilHealthy(client: grpc.Client, ms: number, everyMs = 100): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if ((await grpcHealth(client)) === SERVING) return;
      throw new Error('not SERVING');
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  }
}
