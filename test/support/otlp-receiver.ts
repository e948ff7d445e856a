// A test OTLP/HTTP trace receiver: a plain node http server that takes what
// the service, the relay and the notifier export to
// OTEL_EXPORTER_OTLP_ENDPOINT (POST /v1/traces), in either encoding:
// protobuf (the default; decoded field by field with @bufbuild/protobuf's wire
// reader, after opentelemetry-proto's trace/v1 and common/v1 messages) or
// JSON. Only what the tests look at is decoded; the rest is skipped.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';

export type AttributeValue = string | number | boolean | bigint | null;

export interface ReceivedSpan {
  /** The exporting process's resource `service.name`. */
  service: string;
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  /** OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  kind: number;
  attributes: Record<string, AttributeValue>;
  events: { name: string; attributes: Record<string, AttributeValue> }[];
  statusCode: number;
  statusMessage: string;
  /** Every string in it and in its resource: names, keys, values, messages. */
  strings: string[];
}

export interface OtlpReceiver {
  endpoint: string;
  spans: ReceivedSpan[];
  /** Raw request bodies, for byte-level checks. */
  bodies: Buffer[];
  /** Content types of the requests received. */
  contentTypes: string[];
  /** Resolves with the spans `match` selects once there are at least `count` (polls; rejects after `ms`). */
  waitFor(match: (s: ReceivedSpan) => boolean, count?: number, ms?: number): Promise<ReceivedSpan[]>;
  close(): Promise<void>;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const bodies: Buffer[] = [];
  const contentTypes: string[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const type = req.headers['content-type'] ?? '';
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      bodies.push(body);
      contentTypes.push(type);
      try {
        if (type.startsWith('application/json')) {
          spans.push(...fromJson(JSON.parse(body.toString('utf8'))));
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        } else {
          spans.push(...fromProtobuf(body));
          res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
        }
      } catch {
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    bodies,
    contentTypes,
    async waitFor(match, count = 1, ms = 60_000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const found = spans.filter(match);
        if (found.length >= count) return found;
        if (Date.now() > deadline) throw new Error(`expected ${count} matching span(s) within ${ms} ms, got ${found.length} (of ${spans.length} received)`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// --- protobuf (opentelemetry-proto: collector/trace/v1, trace/v1, common/v1, resource/v1) ---

type Fields = (field: number, wire: WireType, r: BinaryReader) => boolean;

/** Reads a message's fields; `take` returns false for fields it does not read, which are skipped. */
function each(r: BinaryReader, end: number, take: Fields): void {
  while (r.pos < end) {
    const [field, wire] = r.tag();
    if (!take(field, wire, r)) r.skip(wire, field);
  }
}

function sub(r: BinaryReader, read: (r: BinaryReader, end: number) => void): void {
  const len = r.uint32();
  read(r, r.pos + len);
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function anyValue(r: BinaryReader, end: number): AttributeValue {
  let v: AttributeValue = null;
  each(r, end, (f, _w, r) => {
    if (f === 1) v = r.string();
    else if (f === 2) v = r.bool();
    else if (f === 3) v = r.int64();
    else if (f === 4) v = r.double();
    else if (f === 7) v = hex(r.bytes());
    else return false;
    return true;
  });
  return v;
}

function keyValue(r: BinaryReader, end: number, into: Record<string, AttributeValue>): void {
  let key = '';
  let value: AttributeValue = null;
  each(r, end, (f, _w, r) => {
    if (f === 1) key = r.string();
    else if (f === 2) sub(r, (r, e) => (value = anyValue(r, e)));
    else return false;
    return true;
  });
  into[key] = value;
}

function fromProtobuf(body: Buffer): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  const r = new BinaryReader(body);
  each(r, body.length, (f, _w, r) => {
    if (f !== 1) return false;
    // ResourceSpans
    sub(r, (r, end) => {
      const resource: Record<string, AttributeValue> = {};
      const spans: Omit<ReceivedSpan, 'service' | 'strings'>[] = [];
      each(r, end, (f, _w, r) => {
        if (f === 1) sub(r, (r, e) => each(r, e, (f, _w, r) => (f === 1 ? (sub(r, (r, e2) => keyValue(r, e2, resource)), true) : false)));
        else if (f === 2) sub(r, (r, e) => each(r, e, (f, _w, r) => (f === 2 ? (sub(r, (r, e2) => spans.push(span(r, e2))), true) : false)));
        else return false;
        return true;
      });
      for (const s of spans) out.push(finish(s, resource));
    });
    return true;
  });
  return out;
}

function span(r: BinaryReader, end: number): Omit<ReceivedSpan, 'service' | 'strings'> {
  const s: Omit<ReceivedSpan, 'service' | 'strings'> = {
    traceId: '', spanId: '', parentSpanId: '', name: '', kind: 0, attributes: {}, events: [], statusCode: 0, statusMessage: '',
  };
  each(r, end, (f, _w, r) => {
    if (f === 1) s.traceId = hex(r.bytes());
    else if (f === 2) s.spanId = hex(r.bytes());
    else if (f === 4) s.parentSpanId = hex(r.bytes());
    else if (f === 5) s.name = r.string();
    else if (f === 6) s.kind = r.int32();
    else if (f === 9) sub(r, (r, e) => keyValue(r, e, s.attributes));
    else if (f === 11) {
      const event = { name: '', attributes: {} as Record<string, AttributeValue> };
      sub(r, (r, e) =>
        each(r, e, (f, _w, r) => {
          if (f === 2) event.name = r.string();
          else if (f === 3) sub(r, (r, e2) => keyValue(r, e2, event.attributes));
          else return false;
          return true;
        }),
      );
      s.events.push(event);
    } else if (f === 15) {
      sub(r, (r, e) =>
        each(r, e, (f, _w, r) => {
          if (f === 2) s.statusMessage = r.string();
          else if (f === 3) s.statusCode = r.int32();
          else return false;
          return true;
        }),
      );
    } else return false;
    return true;
  });
  return s;
}

// --- JSON (OTLP/JSON: ids as hex strings, enums as numbers) ---

interface JsonKeyValue {
  key: string;
  value?: { stringValue?: string; boolValue?: boolean; intValue?: string | number; doubleValue?: number; bytesValue?: string };
}

function jsonAttributes(list: JsonKeyValue[] | undefined): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const kv of list ?? []) {
    const v = kv.value ?? {};
    out[kv.key] = v.stringValue ?? v.boolValue ?? (v.intValue !== undefined ? Number(v.intValue) : undefined) ?? v.doubleValue ?? v.bytesValue ?? null;
  }
  return out;
}

function fromJson(doc: {
  resourceSpans?: {
    resource?: { attributes?: JsonKeyValue[] };
    scopeSpans?: {
      spans?: {
        traceId: string; spanId: string; parentSpanId?: string; name: string; kind?: number; attributes?: JsonKeyValue[];
        events?: { name: string; attributes?: JsonKeyValue[] }[]; status?: { code?: number; message?: string };
      }[];
    }[];
  }[];
}): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of doc.resourceSpans ?? []) {
    const resource = jsonAttributes(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push(finish({
          traceId: s.traceId.toLowerCase(), spanId: s.spanId.toLowerCase(), parentSpanId: (s.parentSpanId ?? '').toLowerCase(),
          name: s.name, kind: s.kind ?? 0, attributes: jsonAttributes(s.attributes),
          events: (s.events ?? []).map((e) => ({ name: e.name, attributes: jsonAttributes(e.attributes) })),
          statusCode: s.status?.code ?? 0, statusMessage: s.status?.message ?? '',
        }, resource));
      }
    }
  }
  return out;
}

function finish(s: Omit<ReceivedSpan, 'service' | 'strings'>, resource: Record<string, AttributeValue>): ReceivedSpan {
  const strings: string[] = [s.name, s.statusMessage];
  const add = (attrs: Record<string, AttributeValue>) => {
    for (const [k, v] of Object.entries(attrs)) strings.push(k, String(v));
  };
  add(resource);
  add(s.attributes);
  for (const e of s.events) {
    strings.push(e.name);
    add(e.attributes);
  }
  return { ...s, service: String(resource['service.name'] ?? ''), strings };
}
