// produce() resolves only when every partition written to was acknowledged:
// kafkajs 2.2.4 can resolve a sendBatch without the partitions of a leader
// that died mid-request (see unacknowledged in src/events/kafka/client.ts).
// The check works on what sendBatch returns; this pins its arithmetic.
import { describe, expect, it } from 'vitest';
import { unacknowledged, type OutgoingRecord } from '../../src/events/kafka/client.js';
import { partitionOf } from '../../src/events/kafka/partitioner.js';

const record = (topic: string, key: string): OutgoingRecord => ({ topic, key, value: new Uint8Array(), headers: {} });
const ack = (topicName: string, partition: number, errorCode = 0) => ({ topicName, partition, errorCode });

describe('acknowledgement check', () => {
  const keys = ['0-vid-a', '1-vid-b', '2-vid-c', '3-vid-d', '4-vid-e', '5-vid-f'];
  const records = [...keys.map((k) => record('otp.delivery.v1', k)), ...keys.map((k) => record('otp.audit.v1', k))];
  const counts = new Map([['otp.delivery.v1', 3], ['otp.audit.v1', 3]]);
  const written = [...new Set(records.map((r) => `${r.topic}/${partitionOf(r.key, 3)}`))];

  it('passes when every partition written to is acknowledged', () => {
    const acks = written.map((id) => ack(id.split('/')[0]!, Number(id.split('/')[1])));
    expect(unacknowledged(records, acks, counts)).toEqual([]);
  });

  it('names the partitions a broker never acknowledged (a dead leader\'s share of the batch)', () => {
    const [dropped, ...kept] = written;
    const acks = kept.map((id) => ack(id.split('/')[0]!, Number(id.split('/')[1])));
    expect(unacknowledged(records, acks, counts)).toEqual([dropped]);
  });

  it('an acknowledgement carrying an error code does not count', () => {
    const acks = written.map((id, i) => ack(id.split('/')[0]!, Number(id.split('/')[1]), i === 0 ? 19 : 0));
    expect(unacknowledged(records, acks, counts)).toEqual([written[0]]);
  });
});
