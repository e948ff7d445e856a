// Where the relay hands events: Kafka in production (kafka-sink.ts), stdout in
// dev mode (log-sink.ts). publish resolves only once every record is durably
// accepted; the relay acknowledges outbox entries only after that.

export interface EventRecord {
  topic: string;
  /** The verification id: keeps one verification's events in order (the event id for an event about none). */
  key: string;
  value: Uint8Array;
  headers: Record<string, string>;
}

export interface EventSink {
  publish(records: EventRecord[]): Promise<void>;
  close(): Promise<void>;
}
