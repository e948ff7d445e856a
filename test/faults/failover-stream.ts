// One fault scenario for every Redis deployment: a Send/Verify stream through
// one in-process service (gRPC), a Redis master SIGKILLed in the middle, its
// replica promoted, the dead node started again (it rejoins as a replica, so
// OTP_REDIS_WAIT_REPLICAS=1 has a replica to count again). What must hold:
// the same service serves again within seconds, no restart; calls in between
// answer UNAVAILABLE, never INTERNAL; no code is VERIFIED twice; every event
// of an answered call reaches Kafka (counted with kcat).
import { fromBinary } from '@bufbuild/protobuf';
import { status, type Client } from '@grpc/grpc-js';
import { expect } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { Sealer } from '../../src/events/seal.js';
import { TOPICS } from '../../src/events/topics.js';
import { AuditEventSchema, AuditEventType, DeliveryRequestedSchema } from '../../src/gen/otp/events/v1/events_pb.js';
import { Channel, OtpService, VerificationStatus, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, grpcClient } from '../support/grpc-client.js';
import { kcatUntil } from '../support/kcat.js';
import { freshEmail, startTestApp, type TestApp } from '../support/otp-app.js';

const { send, verify, getVerification } = OtpService.method;
const sealer = new Sealer(loadConfig({}).sealKeys); // the development seal key, as a dev notifier has it

export interface Fault {
  /** SIGKILL a master; resolves once it is dead. */
  kill(): Promise<void>;
  /** Waits for the replica's promotion, starts the dead node again and waits until it is a replica in sync. */
  recover(): Promise<void>;
  /**
   * A Cluster: the other masters keep answering, so readiness stays 200 (at
   * least half the masters answer) while the dead master's keys answer
   * UNAVAILABLE. Otherwise the one master is gone and readiness says 503.
   */
  partial?: boolean;
}

type Outcome = 'ok' | 'unavailable' | string;

const PRE_SENT = 30;
const STREAM_MS_AFTER_RECOVERY = 3_000;
const SERVES_AGAIN_WITHIN_MS = 15_000;

export interface FailoverSummary {
  calls: number;
  unavailable: number;
  /** From the kill to the last UNAVAILABLE answer. */
  unavailableForMs: number;
}

export async function failoverUnderStream(redisEnv: Record<string, string>, brokers: string, fault: Fault): Promise<FailoverSummary> {
  const app: TestApp = await startTestApp({
    ...redisEnv,
    KAFKA_BROKERS: brokers,
    OTP_REDIS_WAIT_REPLICAS: '1',
    OTP_REDIS_WAIT_TIMEOUT_MS: '500',
    OTP_REDIS_TIMEOUT_MS: '1000',
    // Entries a relay read but could not acknowledge (its master died) are taken over soon.
    OTP_RELAY_CLAIM_IDLE_MS: '1000',
    OTP_LIMIT_VERIFY_PER_IP: '100000/1h',
    OTP_LIMIT_SEND_PER_IP: '100000/1h',
    OTP_LIMIT_SEND_PER_TENANT: '100000/1h',
  });
  const client: Client = grpcClient(app.grpcTarget);
  let stop = false;
  let probe: NodeJS.Timeout | undefined;
  try {
    // Verifications to verify during the fault: their codes as a notifier reads them from Kafka.
    const pre: string[] = [];
    for (let i = 0; i < PRE_SENT; i++) pre.push((await sendOne(client)).verificationId);
    const codes = await codesFromKafka(brokers, pre);

    const outcomes: { at: number; call: 'send' | 'verify'; outcome: Outcome }[] = [];
    const sentIds: string[] = [];
    const verifiedCount = new Map<string, number>();
    const verifyRound = async (id: string): Promise<Outcome> => {
      try {
        const res = await grpcCall(client, verify, { target: { case: 'verificationId', value: id }, code: codes.get(id)! });
        if (res.result === VerifyResult.VERIFIED) verifiedCount.set(id, (verifiedCount.get(id) ?? 0) + 1);
        return 'ok';
      } catch (err) {
        return outcomeOf(err);
      }
    };

    // The stream: Send, then Verify of a pre-sent code, over and over, until some time after recovery.
    let recoveredAt = 0;
    let killedAt = 0;
    const stream = (async () => {
      for (let i = 0; !stop; i++) {
        // Each outcome is stamped when its call began: a call already waiting on the replica when
        // recovery is declared may still time out (WAIT, then its deadline) and answer UNAVAILABLE
        // after that moment. Stamped at its end, it once read as a failure after recovery.
        const sendAt = Date.now();
        const sent = await sendOne(client).then((r) => (sentIds.push(r.verificationId), 'ok'), outcomeOf);
        outcomes.push({ at: sendAt, call: 'send', outcome: sent });
        const verifyAt = Date.now();
        const verified = await verifyRound(pre[i % PRE_SENT]!);
        outcomes.push({ at: verifyAt, call: 'verify', outcome: verified });
        // A caller backs off after UNAVAILABLE; and the two shared cores are not spent on a spin.
        if (sent !== 'ok' || verified !== 'ok') await new Promise((r) => setTimeout(r, 20));
      }
    })();
    // Readiness as a load balancer sees it, every 250 ms.
    const readiness: { at: number; status: number }[] = [];
    probe = setInterval(() => {
      void fetch(`${app.httpBase}/readyz`, { signal: AbortSignal.timeout(2_000) }).then(
        (res) => readiness.push({ at: Date.now(), status: res.status }),
        () => readiness.push({ at: Date.now(), status: 0 }),
      );
    }, 250);
    await new Promise((r) => setTimeout(r, 1_000));
    killedAt = Date.now();
    await fault.kill();
    await fault.recover();
    recoveredAt = Date.now();
    await new Promise((r) => setTimeout(r, STREAM_MS_AFTER_RECOVERY));
    stop = true;
    await stream;
    clearInterval(probe);

    // Never anything but an answer or UNAVAILABLE.
    const failures = outcomes.filter((o) => o.outcome !== 'ok');
    expect(failures.filter((o) => o.outcome !== 'unavailable')).toEqual([]);
    // The same process serves again: every call begun after recovery (plus a grace) was answered.
    const late = outcomes.filter((o) => o.at > Math.max(recoveredAt, killedAt + SERVES_AGAIN_WITHIN_MS));
    expect(late.filter((o) => o.outcome !== 'ok')).toEqual([]);
    const lastFailure = failures.at(-1)?.at ?? killedAt;
    expect(lastFailure - killedAt, 'UNAVAILABLE for at most this long after the kill').toBeLessThan(SERVES_AGAIN_WITHIN_MS + (recoveredAt - killedAt));
    expect(outcomes.filter((o) => o.at > recoveredAt && o.outcome === 'ok').length).toBeGreaterThan(5);
    // The fault was felt: some calls met the dead master.
    expect(failures.length).toBeGreaterThan(0);
    // /readyz said so (503 while the one master was gone; a Cluster's other masters kept it ready), and says ready again.
    if (fault.partial) expect(readiness.filter((r) => r.status === 503)).toEqual([]);
    else expect(readiness.some((r) => r.at > killedAt && r.status === 503)).toBe(true);
    expect(readiness.filter((r) => r.at > recoveredAt + 2_500).every((r) => r.status === 200)).toBe(true);
    // /metrics counted it: calls that met the failover, the replica not acknowledging, the new master.
    const metrics = await (await fetch(`${app.httpBase}/metrics`)).text();
    const value = (line: RegExp) => Number(line.exec(metrics)?.[1] ?? 0);
    expect(value(/^otp_redis_unavailable_total\{reason="[a-z]+"\} (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^otp_redis_topology_changes_total (\d+)/m)).toBeGreaterThan(0);
    expect(value(/^otp_redis_connections_lost_total (\d+)/m), 'the dead master\'s connection was reported lost').toBeGreaterThan(0);

    // Every pre-sent code, tried again now: VERIFIED at most once in all.
    for (const id of pre) await verifyRound(id);
    for (const id of pre) await verifyRound(id);
    expect([...verifiedCount.entries()].filter(([, n]) => n > 1)).toEqual([]);
    // No code is stranded: each was answered VERIFIED once, or (these Verifies carry no idempotency key)
    // it was consumed by a call answered UNAVAILABLE because the replica acknowledged too late, after
    // which its retry rightly finds it consumed: GetVerification shows it VERIFIED, nothing lost.
    const unanswered = pre.filter((id) => !verifiedCount.has(id));
    for (const id of unanswered) {
      const state = await grpcCall(client, getVerification, { verificationId: id });
      expect(state.verification?.status, `${id}: never answered VERIFIED`).toBe(VerificationStatus.VERIFIED);
    }
    expect(unanswered.length, 'most codes were answered VERIFIED').toBeLessThan(PRE_SENT / 2);

    // Every answered Send's delivery event and every VERIFIED's audit event reach Kafka.
    const deliveries = await kcatUntil(brokers, TOPICS.delivery, (rs) => sentIds.every((id) => rs.some((r) => r.key === id)), 30_000);
    expect(sentIds.filter((id) => !deliveries.some((r) => r.key === id))).toEqual([]);
    const audits = await kcatUntil(brokers, TOPICS.audit, (rs) => verifiedOf(rs).size >= PRE_SENT, 30_000);
    expect(pre.filter((id) => !verifiedOf(audits).has(id))).toEqual([]);
    return { calls: outcomes.length, unavailable: failures.length, unavailableForMs: lastFailure - killedAt };
  } finally {
    // Also when a step above failed: the stream and the probe end before the service does.
    stop = true;
    clearInterval(probe);
    client.close();
    await app.stop();
  }
}

function sendOne(client: Client) {
  return grpcCall(client, send, { purpose: 'login', channel: Channel.EMAIL, destination: freshEmail('failover') });
}

function outcomeOf(err: unknown): Outcome {
  const code = (err as { code?: number }).code;
  return code === status.UNAVAILABLE ? 'unavailable' : `status ${code}: ${(err as Error).message}`;
}

function verifiedOf(records: { key: string; value: Buffer }[]): Set<string> {
  const ids = new Set<string>();
  for (const r of records) {
    const event = fromBinary(AuditEventSchema, r.value);
    if (event.type === AuditEventType.VERIFIED) ids.add(event.verificationId);
  }
  return ids;
}

async function codesFromKafka(brokers: string, ids: string[]): Promise<Map<string, string>> {
  const records = await kcatUntil(brokers, TOPICS.delivery, (rs) => ids.every((id) => rs.some((r) => r.key === id)), 30_000);
  const codes = new Map<string, string>();
  for (const r of records) {
    if (!ids.includes(r.key)) continue;
    const delivery = fromBinary(DeliveryRequestedSchema, r.value);
    codes.set(r.key, sealer.open('code', r.key, delivery.code!));
  }
  expect(codes.size).toBe(ids.length);
  return codes;
}
