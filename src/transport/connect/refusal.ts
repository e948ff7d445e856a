import type { ConnectError } from "@connectrpc/connect";
import { createAsyncIterable, type UniversalServerResponse } from "@connectrpc/connect/protocol";
import { codeToHttpStatus, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "../../log.js";
import type { OtpError } from "../../otp/errors.js";
import { toConnectError } from "../status.js";

// The Connect unary answer for a request refused before (or instead of)
// connect's own decoding: unknown enum names, a body that is not UTF-8 or not
// JSON, fields fromJson refused, a GET query that cannot be read. One place,
// so each answers as the handlers' errors do (../status.ts: the rich error
// model, in the Connect unary JSON error body).

export function refusalAnswer(err: OtpError, log: Logger, path: string): UniversalServerResponse {
  return connectErrorAnswer(toConnectError(err, log, path));
}

/** A Connect unary error answer: the error's JSON body, its HTTP status. */
export function connectErrorAnswer(error: ConnectError): UniversalServerResponse {
  const bytes = errorToJsonBytes(error, {});
  return {
    status: codeToHttpStatus(error.code),
    header: new Headers({ "content-type": "application/json", "content-length": String(bytes.byteLength) }),
    body: createAsyncIterable([bytes]),
  };
}
