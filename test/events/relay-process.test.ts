// OTP_RELAY=off and `npm run relay`: the service only writes the outbox; a
// relay of its own process (src/relay-main.ts, spawned as production runs it)
// publishes to Kafka. Real Redis, real Kafka, kcat reading the topic.
import type { Client } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOPICS } from '../../src/events/topics.js';
import { Channel, OtpService } from '../../src/gen/otp/v1/otp_pb.js';
import { run } from '../support/cli.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { createTopics } from '../support/kafka.js';
import { kafkaAndRedisForFile } from '../support/kafka-and-redis.js';
import { kcatRead, kcatUntil } from '../support/kcat.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';
import { spawnService, type ServiceProcess } from '../support/service-process.js';

const env = kafkaAndRedisForFile();
beforeAll(async () => {
  // The topics exist before anything is published, so reading them proves the event is not there yet.
  await createTopics(env.brokers, [TOPICS.delivery, TOPICS.audit], 3);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function readyz(app: TestApp): Promise<{ event_backlog: number; event_lag_ms: number | null }> {
  const res = await fetch(`${app.httpBase}/readyz`);
  return JSON.parse((await res.text()).split('\n')[1]!) as { event_backlog: number; event_lag_ms: number | null };
}

describe('the relay in its own process', () => {
  let app: TestApp;
  let client: Client;
  let relay: ServiceProcess | undefined;

  beforeAll(async () => {
    // This file's own Redis: no other file's relay drains this outbox.
    app = await startTestApp({ REDIS_URL: env.redisUrl, KAFKA_BROKERS: env.brokers, OTP_RELAY: 'off' });
    client = grpcClient(app.grpcTarget);
  });
  afterAll(async () => {
    client?.close();
    relay?.child.kill('SIGKILL');
    await app?.stop();
  });

  it('with OTP_RELAY=off the service keeps events in the outbox; npm run relay publishes them and stops cleanly', async () => {
    const { verificationId } = await grpcCall(client, OtpService.method.send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('relay') });
    // The service still watches the backlog (Send's bound, /readyz): delivery + audit events wait.
    const deadline = Date.now() + 10_000;
    while ((await readyz(app)).event_backlog < 2 && Date.now() < deadline) await sleep(100);
    const waiting = await readyz(app);
    expect(waiting.event_backlog).toBeGreaterThanOrEqual(2);
    // The lag is read from the outbox too: how long the oldest of them has waited, reported with no relay here.
    expect(waiting.event_lag_ms).toBeGreaterThanOrEqual(0);
    const sentBy = Date.now();
    while ((await readyz(app)).event_lag_ms! < 1_000 && Date.now() < sentBy + 10_000) await sleep(100);
    expect((await readyz(app)).event_lag_ms).toBeGreaterThanOrEqual(1_000);
    expect((await kcatRead(env.brokers, TOPICS.delivery)).some((r) => r.key === verificationId)).toBe(false);

    relay = await spawnService({ NODE_ENV: 'development', REDIS_URL: env.redisUrl, KAFKA_BROKERS: env.brokers, OTP_RELAY_METRICS_PORT: '0' }, 'src/relay-main.ts');
    const records = await kcatUntil(env.brokers, TOPICS.delivery, (all) => all.some((r) => r.key === verificationId), 60_000);
    expect(records.filter((r) => r.key === verificationId)).toHaveLength(1);
    await kcatUntil(env.brokers, TOPICS.audit, (all) => all.some((r) => r.key === verificationId), 30_000);
    const drained = Date.now() + 10_000;
    while ((await readyz(app)).event_backlog > 0 && Date.now() < drained) await sleep(100);
    expect((await readyz(app)).event_backlog).toBe(0);
    expect((await readyz(app)).event_lag_ms).toBe(0);

    // Its lines say which process wrote them.
    expect(new Set(relay.logs().map((l) => (l as { service?: string }).service))).toEqual(new Set(['otp-relay']));
    // Its own /metrics (OTP_RELAY_METRICS_PORT; 0 here: a free port, logged) counts what it published.
    const port = (relay.logs().find((l) => l.msg === 'metrics at /metrics') as { port?: number } | undefined)?.port;
    expect(port).toBeGreaterThan(0);
    const scrape = async () => (await run('curl', ['-sS', '--fail', `http://127.0.0.1:${port}/metrics`])).stdout;
    let metrics = await scrape();
    // Its backlog watch reads every 0.5 s on its own schedule.
    const read = Date.now() + 10_000;
    while (!/^otp_event_backlog 0$/m.test(metrics) && Date.now() < read) {
      await sleep(100);
      metrics = await scrape();
    }
    expect(metrics).toMatch(/^otp_relay_events_published_total\{type="delivery"\} [1-9]/m);
    expect(metrics).toMatch(/^otp_relay_errors_total \d+/m);
    // The relay process watches the outbox as the service does: backlog and lag, both 0 once drained.
    expect(metrics).toMatch(/^otp_relay_lag_seconds 0$/m);
    expect(metrics).toMatch(/^otp_event_backlog 0$/m);
    // It runs the delivery status consumer too: the statuses it ignores start at 0 here, where they are counted,
    // so OtpDeliveryStatusesRejected sees a first burst (probe 50: they started at 0 in the service only).
    expect(metrics).toMatch(/^otp_kafka_errors_total\{client="otp-service-status",kind="unauthenticated_status"\} 0$/m);
    expect(metrics).toMatch(/^otp_kafka_errors_total\{client="otp-service-status",kind="foreign_status"\} 0$/m);

    relay.child.kill('SIGTERM');
    expect(await relay.exited).toBe(0);
    // It left its status consumer group as it stopped (probe 62: a fetch waiting 5 s on the idle topic outlasted
    // the 2 s it has to leave, and the group kept it until its session expired).
    expect(relay.logs().map((l) => l.msg)).not.toContain('delivery status consumer stopped before leaving its group; the broker drops it when its session expires');
    expect(relay.logs().some((l) => l.msg === 'otp-service relay started')).toBe(true);
    // Nothing on stderr an operator would chase: kafkajs's unthrottled request queue used to schedule its
    // check a negative delay away, a TimeoutNegativeWarning per process (src/events/kafka/throttle-checks.ts).
    expect(relay.stderr()).not.toContain('Warning');
  }, 120_000);
});
