import type { IncomingHttpHeaders, ServerHttp2Session, ServerHttp2Stream } from "node:http2";
import { ServerInterceptingCall, ServerListenerBuilder, type ServerInterceptingCallInterface } from "@grpc/grpc-js";
import { headerValues } from "../raw-headers.js";

// node:http2 keeps only the first value of a repeated `authorization` header
// (a "single value" header), so a request carrying two keys would be served
// as whichever came first. Two credentials are one malformed credential:
// this joins them as the HTTP port's Headers do ("a, b"), so authentication
// refuses them (UNAUTHENTICATED) on both ports alike. The raw header list is
// seen only in the session's "stream" event, before grpc-js reads the
// headers; the interceptor (stream-guards.ts) puts the joined value in the
// call's metadata.
//
// Likewise a value that is not printable ASCII: grpc-js drops such a metadata
// entry (with a log line), so the call would arrive with no credentials at all
// and could fall through to a public client's Origin. It is a malformed
// credential too: the call carries one that authentication refuses, as the
// HTTP port refuses the value itself.

const joined = new WeakMap<ServerHttp2Stream, string>();

// What grpc-js keeps of a non-binary metadata value (its isLegalNonBinaryValue).
const LEGAL_VALUE = /^[ -~]*$/;
// Printable ASCII (so grpc-js keeps it) and never a bearer credential (so authentication refuses it).
const NOT_ASCII = "(a value that is not printable ASCII)";

/** Watches a session's requests for repeated credentials (before grpc-js's own stream handler runs). */
export function watchCredentialsAsSent(session: ServerHttp2Session): void {
  session.prependListener("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]) => {
    if (headers.authorization === undefined) return;
    const values = headerValues(raw, "authorization");
    if (values.some((value) => !LEGAL_VALUE.test(value))) joined.set(stream, NOT_ASCII);
    else if (values.length > 1) joined.set(stream, values.join(", "));
  });
}

/** The call as sent: with every authorization value it carried, when it carried more than one or one grpc-js drops. */
export function credentialsAsSent(call: ServerInterceptingCall, stream: ServerHttp2Stream | undefined): ServerInterceptingCall {
  const all = stream && joined.get(stream);
  if (all === undefined) return call;
  return new ServerInterceptingCall(call as ServerInterceptingCallInterface, {
    start(next) {
      next(new ServerListenerBuilder().withOnReceiveMetadata((metadata, pass) => {
        metadata.set("authorization", all);
        pass(metadata);
      }).build());
    },
  });
}
