import type { IncomingHttpHeaders } from "node:http2";

// grpc-js serves any content type that starts with "application/grpc" and
// decodes every body as protobuf, so `application/grpc+json` (a grpc-go or
// grpc-java client with a JSON codec) was answered "not a valid ..." as if
// its JSON were broken protobuf (probe 42), and gRPC-Web bodies were read as
// gRPC. The HTTP port answers both 415, naming what it takes; here the
// content type is made one grpc-js itself refuses with 415 before anything
// is read. The gRPC port speaks gRPC with the protobuf codec only.

const SERVED = /^application\/grpc(?:\+proto)?\s*(?:;|$)/i;
const UNSERVED = "application/x-unsupported-grpc-codec";

/** Rewrites, in place, a content type the gRPC port does not serve so that grpc-js answers 415. */
export function refuseOtherCodecs(headers: IncomingHttpHeaders): void {
  const type = headers["content-type"];
  if (typeof type === "string" && type.toLowerCase().startsWith("application/grpc") && !SERVED.test(type)) headers["content-type"] = UNSERVED;
}
