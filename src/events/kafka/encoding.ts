import { crc32c } from "./crc32c.js";
import { require, resolvePinned } from "./pinned.js";

// kafkajs 2.2.4 (unmaintained) encodes every protocol structure with an
// Encoder that starts from Buffer.alloc(512): a zero-filled, unpooled
// ArrayBuffer per Encoder, one per record and one per record header (four or
// five), each varint through a temporary array and Buffer.from, and the record
// batch's CRC-32C a byte at a time in JS; grouping a batch by partition copies
// the partition's array for every message. Together about half of the Kafka
// client's CPU per event (bench/relay-cost.ts).
//
// This module, imported by kafka/client.ts before kafkajs, puts modules of its
// own in require's cache under kafkajs's file names, so kafkajs's files load
// them instead of their own:
// - the Encoder, with kafkajs's own methods (inherited), except that its
//   buffers come from Node's pool (Buffer.allocUnsafe) and varints are written
//   in place. Not zero-filling is safe because an Encoder exposes only
//   `buf.slice(0, offset)` (its `buffer` getter; nothing in kafkajs reads
//   `.buf` otherwise) and every write fills exactly the bytes it advances
//   `offset` over;
// - crc32C/index.js, with a slicing-by-8 CRC-32C (crc32c.ts);
// - record/v0, writing a record's headers into its own encoder (sized for
//   the record) instead of an Encoder per header;
// - producer/groupMessagesPerPartition, linear instead of quadratic.
// test/unit/kafka-encoding.test.ts proves a produce request's bytes (and the
// grouping) are the same with and without the substitution. What is
// substituted is pinned by the SHA-256 of kafkajs's files: if kafkajs changes
// (an upgrade, a patch), start-up fails here instead of silently running a
// stale copy.

const BY = "src/events/kafka/encoding.ts";

/** The kafkajs files replaced or wrapped, with the SHA-256 of the version whose internals this module knows. */
const PINNED = {
  encoder: { file: "kafkajs/src/protocol/encoder.js", sha256: "9977889e184a9e910e4f6098c36ec6a0ca36c183aa6ead0f24191b6aa1c9a777" },
  crc32C: { file: "kafkajs/src/protocol/recordBatch/crc32C/index.js", sha256: "0826ea7387f25400b1a24bacdbba85db9c1f2e932f168874728a9ecaf1eb2379" },
  record: { file: "kafkajs/src/protocol/recordBatch/record/v0/index.js", sha256: "ffbc628c1f35f5de8ba798165616b1009d9af1c27ca959999a10e6e3c18f8215" },
  groupMessagesPerPartition: { file: "kafkajs/src/producer/groupMessagesPerPartition.js", sha256: "ea72357721fbf67770b5e06b9bf4260faa1e60f3affb556bff2cc7892c1881fb" },
} as const;

/** Marks the substituted modules' exports. */
const MARK = Symbol.for("otp-service.kafkajs-encoding");

const MOST_SIGNIFICANT_BIT = 0x80;
const OTHER_BITS = 0x7f;
const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;

interface EncoderInstance {
  buf: Buffer;
  offset: number;
  ensureAvailable(length: number): void;
}

interface EncoderClass {
  new (initialSize?: number): EncoderInstance;
  prototype: EncoderInstance;
  nextPowerOfTwo(value: number): number;
  sizeOfVarInt(value: number): number;
  sizeOfVarLong(value: unknown): number;
  encodeZigZag(value: number): number;
}


/** kafkajs's Encoder with pooled buffers and varints written in place (see above). */
function pooledEncoder(Original: EncoderClass): EncoderClass {
  const Pooled = function (this: EncoderInstance, initialSize = 511) {
    this.buf = Buffer.allocUnsafe(Original.nextPowerOfTwo(initialSize));
    this.offset = 0;
  } as unknown as EncoderClass;
  // Every other method and static is kafkajs's own.
  Object.setPrototypeOf(Pooled, Original);
  Pooled.prototype = Object.create(Original.prototype, { constructor: { value: Pooled, writable: true, configurable: true } }) as EncoderInstance;
  const proto = Pooled.prototype as EncoderInstance & Record<string, unknown>;

  proto.ensureAvailable = function (this: EncoderInstance, length: number): void {
    if (this.offset + length > this.buf.length) {
      const grown = Buffer.allocUnsafe(Original.nextPowerOfTwo(this.offset + length));
      this.buf.copy(grown, 0, 0, this.offset);
      this.buf = grown;
    }
  };
  // Unsigned LEB128, as kafkajs's writeUVarInt (a value is taken as 32 bits).
  const writeUVarInt = function (this: EncoderInstance, value: number): EncoderInstance {
    this.ensureAvailable(5);
    const buf = this.buf;
    let offset = this.offset;
    while ((value & 0xffffff80) !== 0) {
      buf[offset++] = (value & OTHER_BITS) | MOST_SIGNIFICANT_BIT;
      value >>>= 7;
    }
    buf[offset++] = value & OTHER_BITS;
    this.offset = offset;
    return this;
  };
  proto.writeUVarInt = writeUVarInt;
  // A varlong whose value fits 32 bits signed (a record's timestamp delta,
  // nearly always 0) has the same zigzag bytes as the varint; anything else
  // takes kafkajs's Long arithmetic.
  const writeVarLong = Original.prototype["writeVarLong" as keyof EncoderInstance] as unknown as (this: EncoderInstance, value: unknown) => EncoderInstance;
  proto.writeVarLong = function (this: EncoderInstance, value: unknown): EncoderInstance {
    if (typeof value === "number" && Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX) {
      return writeUVarInt.call(this, Original.encodeZigZag(value) >>> 0);
    }
    return writeVarLong.call(this, value);
  };
  const sizeOfVarLong = Original.sizeOfVarLong.bind(Original);
  (Pooled as unknown as { sizeOfVarLong(value: unknown): number }).sizeOfVarLong = (value: unknown): number => {
    if (typeof value === "number" && Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX) {
      let zigzag = Original.encodeZigZag(value) >>> 0;
      let bytes = 1;
      while ((zigzag & 0xffffff80) !== 0) {
        bytes += 1;
        zigzag >>>= 7;
      }
      return bytes;
    }
    return sizeOfVarLong(value);
  };
  return Pooled;
}

type Header = { key: string; value: string | Buffer | null | undefined };
interface Writer {
  writeVarInt(value: number): Writer;
  writeInt8(value: number): Writer;
  writeVarLong(value: unknown): Writer;
  writeVarIntBytes(value: unknown): Writer;
  writeVarIntString(value: string): Writer;
}
interface RecordEncoderClass extends EncoderClass {
  sizeOfVarIntBytes(value: unknown): number;
}

/** A string's UTF-8 length: its length when it is ASCII (our headers are), Buffer.byteLength otherwise. */
function utf8Length(value: string): number {
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) > 0x7f) return Buffer.byteLength(value);
  return value.length;
}

/**
 * A header name or string value of `size` UTF-8 bytes, as kafkajs writes it
 * (its length as a varint, then its bytes), when it is ASCII (`size` is its
 * length): a character at a time. False, with nothing written, otherwise.
 */
function writeAsciiText(writer: Writer, encoder: EncoderInstance, text: string, size: number): boolean {
  if (size !== text.length) return false;
  writer.writeVarInt(size);
  encoder.ensureAvailable(size);
  const buf = encoder.buf;
  let offset = encoder.offset;
  for (let i = 0; i < size; i++) buf[offset++] = text.charCodeAt(i);
  encoder.offset = offset;
  return true;
}

/**
 * kafkajs's Record (record/v0), writing the headers straight into the
 * record's encoder (sized for the whole record) rather than through an
 * Encoder each (header/v0) copied in afterwards, and ASCII header names and
 * values a character at a time rather than through Buffer.byteLength and
 * Buffer.write twice each; the size, the fields and their order are kafkajs's own.
 */
function recordModule(Encoder: RecordEncoderClass) {
  // A record's headers, flattened (a repeated header's values one by one),
  // with their UTF-8 sizes: reused from record to record (Record is
  // synchronous), not four objects and three arrays per record.
  const names: string[] = [];
  const values: Header["value"][] = [];
  const nameSizes: number[] = [];
  const valueSizes: number[] = [];
  return ({ offsetDelta = 0, timestampDelta = 0, key, value, headers = {} }: {
    offsetDelta?: number; timestampDelta?: unknown; key: unknown; value: unknown; headers?: Record<string, Header["value"] | Header["value"][]>;
  }): unknown => {
    let count = 0;
    for (const headerKey of Object.keys(headers)) {
      const headerValue = headers[headerKey];
      if (!Array.isArray(headerValue)) (names[count] = headerKey), (values[count++] = headerValue);
      else for (const v of headerValue) (names[count] = headerKey), (values[count++] = v);
    }
    // kafkajs's sizeOfHeaders, with the UTF-8 sizes kept for writing.
    let sizeOfHeaders = Encoder.sizeOfVarInt(count);
    for (let i = 0; i < count; i++) {
      const headerValue = values[i];
      const nameSize = utf8Length(names[i]!);
      // As kafkajs: Buffer.byteLength of anything but a string (a Buffer's length; throws for null).
      const valueSize = typeof headerValue === "string" ? utf8Length(headerValue) : Buffer.byteLength(headerValue as Buffer);
      nameSizes[i] = nameSize;
      valueSizes[i] = valueSize;
      sizeOfHeaders += Encoder.sizeOfVarInt(nameSize) + nameSize;
      sizeOfHeaders += headerValue === null ? Encoder.sizeOfVarInt(-1) : Encoder.sizeOfVarInt(valueSize) + valueSize;
    }
    const sizeOfBody =
      1 + // always one byte for attributes
      Encoder.sizeOfVarLong(timestampDelta) +
      Encoder.sizeOfVarInt(offsetDelta) +
      Encoder.sizeOfVarIntBytes(key) +
      Encoder.sizeOfVarIntBytes(value) +
      sizeOfHeaders;
    const encoder = new Encoder(sizeOfBody + 5);
    const writer = (encoder as unknown as Writer)
      .writeVarInt(sizeOfBody)
      .writeInt8(0) // no used record attributes at the moment
      .writeVarLong(timestampDelta)
      .writeVarInt(offsetDelta)
      .writeVarIntBytes(key)
      .writeVarIntBytes(value)
      .writeVarInt(count);
    for (let i = 0; i < count; i++) {
      // writeVarIntString(name), then writeVarIntBytes(value): ASCII strings written here.
      const name = names[i]!;
      const headerValue = values[i];
      if (!writeAsciiText(writer, encoder, name, nameSizes[i]!)) writer.writeVarIntString(name);
      if (typeof headerValue !== "string" || !writeAsciiText(writer, encoder, headerValue, valueSizes[i]!)) writer.writeVarIntBytes(headerValue);
    }
    // Not kept past the record (a Buffer value would otherwise stay referenced).
    values.fill(undefined, 0, count);
    return encoder;
  };
}

type Partitioner = (args: { topic: string; partitionMetadata: unknown[]; message: unknown }) => number;

/**
 * kafkajs's groupMessagesPerPartition, linear: the original copies a
 * partition's array on every message it adds ([...current, message]),
 * quadratic in the batch size. Same partitioner calls in the same order, same
 * result (partition → its messages in order).
 */
function groupMessagesPerPartition({ topic, partitionMetadata, messages, partitioner }: {
  topic: string; partitionMetadata: unknown[]; messages: unknown[]; partitioner: Partitioner;
}): Record<number, unknown[]> {
  if (partitionMetadata.length === 0) return {};
  const result: Record<number, unknown[]> = {};
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message });
    (result[partition] ??= []).push(message);
  }
  return result;
}

/** The substituted Encoder, once substituteKafkajsEncoding ran. */
let substituted: EncoderClass | undefined;

/**
 * Substitute the kafkajs modules above; throws if kafkajs is not the version
 * this was written for, or was loaded before this ran (its modules would keep
 * the originals). Idempotent.
 */
export function substituteKafkajsEncoding(): void {
  if (substituted) return;
  const paths = {
    encoder: resolvePinned(PINNED.encoder, BY),
    crc32C: resolvePinned(PINNED.crc32C, BY),
    record: resolvePinned(PINNED.record, BY),
    groupMessagesPerPartition: resolvePinned(PINNED.groupMessagesPerPartition, BY),
  };
  const all = Object.values(paths);
  // A second copy of this module in the same process (a test runner that
  // re-evaluates modules but shares require's cache) finds its substitution done.
  if (all.every((path) => (require.cache[path]?.exports as { [MARK]?: true } | undefined)?.[MARK])) {
    substituted = require.cache[paths.encoder]!.exports as EncoderClass;
    return;
  }
  if (all.some((path) => require.cache[path])) {
    throw new Error("kafkajs was loaded before src/events/kafka/encoding.ts could substitute its Encoder: import it before kafkajs");
  }
  const replace = (path: string, exports: object): void => {
    require(path);
    require.cache[path]!.exports = Object.assign(exports, { [MARK]: true });
  };
  const Pooled = pooledEncoder(require(paths.encoder) as EncoderClass);
  replace(paths.encoder, Pooled);
  replace(paths.crc32C, (bytes: Uint8Array) => crc32c(bytes));
  // Loading the original record module loads header/v0 too: harmless, it is no longer called.
  replace(paths.record, recordModule(Pooled as RecordEncoderClass));
  replace(paths.groupMessagesPerPartition, (args: Parameters<typeof groupMessagesPerPartition>[0]) => groupMessagesPerPartition(args));
  substituted = Pooled;
}

/** For the test and the start-up check: whether kafkajs's modules now give ours. */
export function kafkajsEncodingSubstituted(): boolean {
  return substituted !== undefined && require(PINNED.encoder.file) === substituted
    && [PINNED.crc32C, PINNED.record, PINNED.groupMessagesPerPartition].every((p) => (require(p.file) as { [MARK]?: true })[MARK] === true);
}

substituteKafkajsEncoding();
