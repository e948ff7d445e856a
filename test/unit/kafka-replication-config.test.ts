// OTP_KAFKA_REPLICATION_FACTOR / OTP_KAFKA_MIN_INSYNC_REPLICAS: read the same
// way by the service and the notifier, with defaults that work on one dev
// broker, production defaults of RF 3 / min ISR 2, and a refusal naming the
// variable when no write could ever be confirmed. The process test checks
// the service exits on it before touching Redis or Kafka.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { readTopicReplication } from '../../src/events/topic-replication.js';
import { loadNotifierConfig } from '../../src/notifier/config.js';
import { exitWithin, spawnService } from '../support/service-process.js';

describe('Kafka topic replication settings', () => {
  it('default to 1/1 outside production, so one dev broker works', () => {
    expect(loadConfig({}).kafkaReplication).toEqual({ replicationFactor: 1, minInsyncReplicas: 1 });
    expect(loadNotifierConfig({}).replication).toEqual({ replicationFactor: 1, minInsyncReplicas: 1 });
  });

  it('default to RF 3 / min ISR 2 in production', () => {
    expect(readTopicReplication({}, true)).toEqual({ replicationFactor: 3, minInsyncReplicas: 2 });
    // A lower RF alone brings the min ISR default down with it rather than refusing.
    expect(readTopicReplication({ OTP_KAFKA_REPLICATION_FACTOR: '1' }, true)).toEqual({ replicationFactor: 1, minInsyncReplicas: 1 });
  });

  it('are taken as given when valid, by both the service and the notifier', () => {
    const env = { OTP_KAFKA_REPLICATION_FACTOR: '5', OTP_KAFKA_MIN_INSYNC_REPLICAS: '3' };
    expect(loadConfig(env).kafkaReplication).toEqual({ replicationFactor: 5, minInsyncReplicas: 3 });
    expect(loadNotifierConfig(env).replication).toEqual({ replicationFactor: 5, minInsyncReplicas: 3 });
  });

  it('refuse a min ISR above the replication factor, naming both variables', () => {
    const env = { OTP_KAFKA_REPLICATION_FACTOR: '2', OTP_KAFKA_MIN_INSYNC_REPLICAS: '3' };
    for (const load of [() => loadConfig(env), () => loadNotifierConfig(env)]) {
      expect(load).toThrow(ConfigError);
      expect(load).toThrow(/OTP_KAFKA_MIN_INSYNC_REPLICAS \(3\) must not exceed OTP_KAFKA_REPLICATION_FACTOR \(2\)/);
    }
    // Production's default min ISR (2) against an explicit RF... is lowered, but an explicit min ISR is not.
    expect(() => readTopicReplication({ OTP_KAFKA_MIN_INSYNC_REPLICAS: '4' }, true)).toThrow(/OTP_KAFKA_MIN_INSYNC_REPLICAS \(4\).*OTP_KAFKA_REPLICATION_FACTOR \(3\)/);
  });

  it('refuse values that are not whole numbers in range, naming the variable', () => {
    expect(() => loadConfig({ OTP_KAFKA_REPLICATION_FACTOR: '0' })).toThrow(/OTP_KAFKA_REPLICATION_FACTOR must be between 1 and 32/);
    expect(() => loadConfig({ OTP_KAFKA_REPLICATION_FACTOR: 'three' })).toThrow(/OTP_KAFKA_REPLICATION_FACTOR must be a whole number/);
    expect(() => loadConfig({ OTP_KAFKA_MIN_INSYNC_REPLICAS: '-1' })).toThrow(/OTP_KAFKA_MIN_INSYNC_REPLICAS must be a whole number/);
  });

  it('the service process exits 1 on min ISR > RF, saying which variable', { timeout: 30_000 }, async () => {
    const service = await spawnService({ OTP_KAFKA_REPLICATION_FACTOR: '1', OTP_KAFKA_MIN_INSYNC_REPLICAS: '2' });
    expect(await exitWithin(service, 20_000)).toBe(1);
    expect(service.stderr()).toContain('OTP_KAFKA_MIN_INSYNC_REPLICAS (2) must not exceed OTP_KAFKA_REPLICATION_FACTOR (1)');
  });
});
