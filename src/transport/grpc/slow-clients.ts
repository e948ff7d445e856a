import http2, { type ServerHttp2Stream } from "node:http2";
import {
  ServerInterceptingCall, ServerListenerBuilder, status, type ServerInterceptingCallInterface, type ServerMethodDefinition,
} from "@grpc/grpc-js";

// grpc-js has no request timeout of its own: a client may open a stream and
// then send its message slowly, or never, holding server memory until the
// connection ages out (minutes). For unary calls the whole request (one
// message, then half-close) must arrive within `timeoutMs`, like the HTTP
// port's requestTimeout; otherwise the call ends DEADLINE_EXCEEDED and its
// stream is reset. Streaming requests (reflection) are left alone here: the
// open-calls bound gives every call, of any kind and in any phase, a lifetime
// (../open-calls.ts).

export function cutOffSlowClient(
  method: ServerMethodDefinition<unknown, unknown>,
  call: ServerInterceptingCallInterface,
  stream: ServerHttp2Stream | undefined,
  timeoutMs: number,
): ServerInterceptingCall {
  if (method.requestStream) return new ServerInterceptingCall(call);
  let timer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    clearTimeout(timer);
    timer = undefined;
  };
  return new ServerInterceptingCall(call, {
    start(next) {
      timer = setTimeout(() => {
        timer = undefined;
        call.sendStatus({ code: status.DEADLINE_EXCEEDED, details: `the request did not arrive within ${timeoutMs} ms` });
        // grpc-js closes its half of the stream but leaves the client's half
        // open, so a client that never finishes would keep it. Reset it.
        if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
      }, timeoutMs);
      next(
        new ServerListenerBuilder()
          .withOnReceiveHalfClose((done) => {
            stop();
            done();
          })
          .withOnCancel(stop)
          .build(),
      );
    },
    sendStatus(statusObject, next) {
      stop();
      next(statusObject);
    },
  });
}
