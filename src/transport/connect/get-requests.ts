import { fromBinary } from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import type { UniversalHandler, UniversalHandlerFn } from "@connectrpc/connect/protocol";
import type { Logger } from "../../log.js";
import { OtpError } from "../../otp/errors.js";
import { binaryRequestRefusal } from "../binary-faults.js";
import { hasEnumFields } from "./json-enums.js";
import { jsonDecodeViolations } from "./json-faults.js";
import { jsonBodyRefusal } from "./json-requests.js";
import { refusalAnswer } from "./refusal.js";

// Connect GET calls (the read-only methods) carry the request message in the
// query: ?encoding=json|proto&message=...[&base64=1][&compression=...].
// connect-es reads it before any interceptor runs, and a `message` that is not
// base64 (with base64=1) throws from base64Decode, which connect answers as
// INTERNAL, unlogged; other faults answer INVALID_ARGUMENT naming nothing. So
// once connect has refused a GET call, the query is read again here (failure
// path only) and the answer names the `message` parameter, or the field in
// it, as a BadRequest. Two checks on the way in: a percent-encoded message
// that is not UTF-8, which URLSearchParams would read as U+FFFD and connect
// would accept (a URL with no percent-encoded byte above 0x7f skips it); and a
// parameter given twice, of which connect reads the first (probe 75: a
// gateway reading the last judged another request).

const PARAM = "message";
const NON_ASCII_ESCAPE = /%[89a-f]/i;

export function getQueriesChecked(handler: UniversalHandler, next: UniversalHandlerFn, log: Logger): UniversalHandlerFn {
  const input = handler.method.input;
  const path = handler.requestPath;
  const enums = hasEnumFields(input);
  const violation = (description: string): OtpError => OtpError.invalidArgument([{ field: PARAM, description }]);

  /** Why connect refused the query, when it is the message's fault. */
  const queryRefusal = (query: URLSearchParams): OtpError | undefined => {
    const encoding = query.get("encoding");
    // Another encoding is a 415 (./plain-refusals.ts says which work); compressed messages are connect's to judge.
    if ((encoding !== "json" && encoding !== "proto") || (query.get("compression") ?? "identity") !== "identity") return undefined;
    const message = query.get(PARAM);
    if (message === null) return violation(`is required: the ${input.typeName} as JSON (encoding=json) or base64 protobuf (encoding=proto&base64=1)`);
    let bytes: Uint8Array;
    if (query.get("base64") === "1") {
      try {
        bytes = base64Decode(message);
      } catch {
        return violation("is not valid base64 (base64=1)");
      }
    } else {
      bytes = new TextEncoder().encode(message);
    }
    if (encoding === "proto") {
      try {
        fromBinary(input, bytes);
        return undefined;
      } catch {
        const refusal = binaryRequestRefusal(input, bytes);
        return refusal.details.violations ? refusal : violation(`is not a valid ${input.typeName} (protobuf${query.get("base64") === "1" ? "" : "; send it with base64=1"})`);
      }
    }
    const read = jsonBodyRefusal(input, bytes, enums, "the message query parameter");
    if (read instanceof OtpError) return read.details.violations ? read : violation(read.message.replace(/^the message query parameter /, ""));
    const violations = jsonDecodeViolations(input, read.json);
    return violations.length > 0 ? OtpError.invalidArgument(violations) : undefined;
  };

  return async (req) => {
    if (req.method !== "GET") return next(req);
    const queryAt = req.url.indexOf("?");
    const raw = queryAt < 0 ? "" : req.url.slice(queryAt + 1);
    if (NON_ASCII_ESCAPE.test(raw) && !percentDecodesAsUtf8(raw)) {
      return refusalAnswer(violation("is not valid UTF-8 once percent-decoded (binary messages need base64=1)"), log, path);
    }
    // Read once: for the check below, and again only if connect refuses the call.
    const params = new URLSearchParams(raw);
    const twice = CONNECT_PARAMS.find((name) => params.getAll(name).length > 1);
    if (twice !== undefined) return refusalAnswer(OtpError.invalidArgument([{ field: twice, description: "is given twice in the query" }]), log, path);
    const res = await next(req);
    if (res.status < 400 || res.status === 405 || res.status === 415) return res;
    const refusal = queryRefusal(params);
    return refusal ? refusalAnswer(refusal, log, path) : res;
  };
}

/**
 * The query parameters connect reads (their names percent-decoded, as connect reads them); it takes the first
 * of each, and a gateway in front may take the last: given twice, refused.
 */
const CONNECT_PARAMS = ["message", "encoding", "base64", "compression", "connect"];

/** Whether the raw `message` parameter(s) of a query percent-decode to UTF-8 (decodeURIComponent is strict). */
function percentDecodesAsUtf8(query: string): boolean {
  for (const pair of query.split("&")) {
    if (!pair.startsWith(`${PARAM}=`)) continue;
    try {
      decodeURIComponent(pair.slice(PARAM.length + 1).replace(/\+/g, " "));
    } catch {
      return false;
    }
  }
  return true;
}
