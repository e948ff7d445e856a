import { toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import {
  CheckRateLimitResponseSchema,
  SendResponseSchema,
  VerifyResponseSchema,
  type CheckRateLimitResponse,
  type SendResponse,
  type VerifyResponse,
} from "../../gen/otp/v1/otp_pb.js";
import { writeVarint } from "../../varint.js";

// The wire bytes of the three answers on the hot path (Send, Verify,
// CheckRateLimit), written field by field: protobuf-es's toBinary walks the
// schema by reflection, ~2.2 µs for a SendResponse and ~4.3 µs for a
// CheckRateLimitResponse (four limits, five Durations), against well under a
// microsecond here. Same bytes as toBinary (field order, proto3 implicit
// presence, varints): test/unit/response-bytes.test.ts compares them over
// many messages. Anything unusual (unknown fields, an int64 beyond 2^53, a
// negative enum or nanos, a message larger than the scratch buffer) takes
// toBinary, as does every other message; the proto stays the contract.

const SCRATCH = Buffer.allocUnsafe(16 * 1024);

/** Thrown inside an encoder when a value is not one the short way writes; caught below. */
const UNUSUAL = Symbol("unusual");

class Writer {
  at = 0;

  tag(field: number, wireType: 0 | 2): void {
    this.varint((field << 3) | wireType);
  }

  /** A non-negative integer below 2^53. */
  varint(n: number): void {
    if (!(n >= 0 && n <= Number.MAX_SAFE_INTEGER) || !Number.isInteger(n) || this.at + 10 > SCRATCH.length) throw UNUSUAL;
    this.at = writeVarint(SCRATCH, this.at, n);
  }

  uint(field: number, n: number): void {
    if (n === 0) return;
    this.tag(field, 0);
    this.varint(n);
  }

  string(field: number, s: string): void {
    if (s === "") return;
    const length = Buffer.byteLength(s, "utf8");
    this.tag(field, 2);
    this.varint(length);
    if (this.at + length > SCRATCH.length) throw UNUSUAL;
    this.at += SCRATCH.write(s, this.at, "utf8");
  }

  /** A submessage: its length is written once its bytes are known (moved up when the length takes more than one byte). */
  message(field: number, write: () => void): void {
    this.tag(field, 2);
    const lengthAt = this.at++;
    write();
    const length = this.at - lengthAt - 1;
    if (length < 0x80) {
      SCRATCH[lengthAt] = length;
      return;
    }
    const bytes = length < 0x4000 ? 2 : 3;
    if (this.at + bytes > SCRATCH.length) throw UNUSUAL;
    SCRATCH.copy(SCRATCH, lengthAt + bytes, lengthAt + 1, this.at);
    this.at = lengthAt;
    this.varint(length);
    this.at += length;
  }

  /** google.protobuf.Duration / Timestamp: int64 seconds = 1, int32 nanos = 2. */
  seconds(field: number, t: Duration | Timestamp | undefined): void {
    if (t === undefined) return;
    if (t.$unknown?.length) throw UNUSUAL;
    // int64 is a bigint (or a string where BigInt is missing): only whole seconds in 0..2^53 take the short way.
    const s = Number(t.seconds);
    if (!Number.isSafeInteger(s) || BigInt(s) !== BigInt(t.seconds)) throw UNUSUAL;
    this.message(field, () => {
      this.uint(1, s);
      this.uint(2, t.nanos);
    });
  }
}

const writer = new Writer();

function sendResponse(w: Writer, m: SendResponse): void {
  w.string(1, m.verificationId);
  w.seconds(2, m.expiresAt);
  w.seconds(3, m.resendAvailableAt);
  w.string(4, m.maskedDestination);
  w.uint(5, m.channel);
  w.uint(6, m.maxAttempts);
  w.uint(7, m.codeLength);
}

function verifyResponse(w: Writer, m: VerifyResponse): void {
  w.uint(1, m.result);
  w.uint(2, m.attemptsRemaining);
  w.string(3, m.verificationId);
  w.string(4, m.receipt);
}

function checkRateLimitResponse(w: Writer, m: CheckRateLimitResponse): void {
  w.uint(1, m.allowed ? 1 : 0);
  w.seconds(2, m.retryAfter);
  for (const l of m.limits) {
    if (l.$unknown?.length) throw UNUSUAL;
    w.message(3, () => {
      w.string(1, l.name);
      w.uint(2, l.limit);
      w.uint(3, l.remaining);
      w.seconds(4, l.resetAfter);
    });
  }
}

const ENCODERS = new Map<string, (w: Writer, m: never) => void>([
  [SendResponseSchema.typeName, sendResponse],
  [VerifyResponseSchema.typeName, verifyResponse],
  [CheckRateLimitResponseSchema.typeName, checkRateLimitResponse],
]);

/** The message's protobuf bytes, as toBinary writes them. */
export function responseBytes<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): Buffer {
  const encode = ENCODERS.get(schema.typeName);
  if (encode && message.$typeName === schema.typeName && !message.$unknown?.length) {
    writer.at = 0;
    try {
      encode(writer, message as never);
      return Buffer.from(SCRATCH.subarray(0, writer.at));
    } catch (err) {
      if (err !== UNUSUAL) throw err;
    }
  }
  const bytes = toBinary(schema, message);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
