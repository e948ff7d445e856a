// A simulated SMS-pumping run through the real gRPC listener, shared by
// test/security/pumping.test.ts and `npm run bench:pumping`: Sends to
// consecutive numbers of one prefix (a block an operator pays out on), each
// from another client IP and never verified, interleaved with legitimate
// Sends to numbers of several countries whose codes are read from the dev
// delivery log (never printed) and verified.
import { randomInt } from 'node:crypto';
import { Metadata, status, type Client, type ServiceError } from '@grpc/grpc-js';
import { parsePhoneNumberFromString } from 'libphonenumber-js/max';
import { Channel, OtpService, VerifyResult } from '../../src/gen/otp/v1/otp_pb.js';
import { grpcCall, richDetails } from './grpc-client.js';
import type { DeliveryInbox } from './otp-app.js';

const { send, verify } = OtpService.method;

/** The attacked block: UK mobiles +44 7400 100000... (valid, type MOBILE). */
export const ATTACK_PREFIX = '+447400100';

export function attackNumber(i: number): string {
  return ATTACK_PREFIX + String(i).padStart(3, '0');
}

// Templates for legitimate numbers: mobile ranges of five countries, random digits after.
const LEGIT_TEMPLATES: [prefix: string, digits: number][] = [
  ['+1415', 7], ['+1212', 7], ['+1617', 7], ['+49151', 8], ['+49170', 8], ['+336', 8], ['+337', 8],
  ['+5511', 9], ['+614', 8], ['+447700', 6], ['+447123', 6],
];

/** A valid mobile (or US fixed-or-mobile) number outside the attacked block, never repeated in one run. */
export function legitimateNumbers(): () => string {
  const used = new Set<string>();
  return () => {
    for (;;) {
      const [prefix, digits] = LEGIT_TEMPLATES[randomInt(LEGIT_TEMPLATES.length)]!;
      let n = prefix;
      for (let i = 0; i < digits; i++) n += String(randomInt(i === 0 ? 2 : 0, 10));
      const p = parsePhoneNumberFromString(n);
      const type = p?.getType();
      if (!p?.isValid() || (type !== 'MOBILE' && type !== 'FIXED_LINE_OR_MOBILE')) continue;
      if (n.startsWith('+447400') || used.has(n)) continue;
      used.add(n);
      return n;
    }
  };
}

export interface PumpingFigures {
  attackSends: number;
  /** Attack Sends answered with a verification (a code queued for delivery). */
  attackAccepted: number;
  /** Attack codes the dev delivery log printed. */
  attackDelivered: number;
  attackRefusedBySuspension: number;
  /** Other refusals of attack Sends, by reason (none expected). */
  attackOtherRefusals: Record<string, number>;
  /** Attack Sends made before the first PREFIX_SUSPENDED refusal, and the time to it. */
  sendsBeforeSuspension: number | null;
  msToSuspension: number | null;
  /** Every PREFIX_SUSPENDED refusal carried RetryInfo. */
  refusalsHadRetryInfo: boolean;
  legitimateSends: number;
  legitimateVerified: number;
  /** Legitimate calls refused or not verified, as "<what>: <reason>". */
  legitimateFailures: string[];
}

export interface PumpingRun {
  client: Client;
  deliveries: DeliveryInbox;
  metadata?: () => Metadata;
  attackSends: number;
  /** One legitimate Send + Verify after every this many attack Sends. */
  legitimateEvery: number;
  purpose?: string;
}

const reasonOf = (err: ServiceError) => richDetails(err).errorInfo?.reason ?? status[err.code] ?? String(err.code);

export async function runPumping(run: PumpingRun): Promise<PumpingFigures> {
  const md = run.metadata ?? (() => new Metadata());
  const purpose = run.purpose ?? 'login';
  const nextLegit = legitimateNumbers();
  const figures: PumpingFigures = {
    attackSends: 0, attackAccepted: 0, attackDelivered: 0, attackRefusedBySuspension: 0, attackOtherRefusals: {},
    sendsBeforeSuspension: null, msToSuspension: null, refusalsHadRetryInfo: true,
    legitimateSends: 0, legitimateVerified: 0, legitimateFailures: [],
  };
  const started = performance.now();
  for (let i = 0; i < run.attackSends; i++) {
    // Each attack Send from another address: per-IP limits never see the attack.
    const clientIp = i % 2 === 0 ? `198.51.${100 + (i >> 8)}.${i % 256}` : `2001:db8:${(i + 1).toString(16)}::1`;
    figures.attackSends++;
    try {
      await grpcCall(run.client, send, { purpose, channel: Channel.SMS, destination: attackNumber(i), clientIp }, md());
      figures.attackAccepted++;
    } catch (err) {
      const reason = reasonOf(err as ServiceError);
      if (reason === 'PREFIX_SUSPENDED') {
        figures.attackRefusedBySuspension++;
        if (figures.sendsBeforeSuspension === null) {
          figures.sendsBeforeSuspension = i;
          figures.msToSuspension = Math.round(performance.now() - started);
        }
        if (!richDetails(err as ServiceError).retryInfo?.retryDelay) figures.refusalsHadRetryInfo = false;
      } else {
        figures.attackOtherRefusals[reason] = (figures.attackOtherRefusals[reason] ?? 0) + 1;
      }
    }
    if ((i + 1) % run.legitimateEvery === 0) await legitimate(run, md, purpose, nextLegit(), figures);
  }
  // Every accepted code reaches the delivery log: count what the attack got.
  const deadline = Date.now() + 10_000;
  const attackLines = () => run.deliveries.lines.filter((l) => l.destination.startsWith(ATTACK_PREFIX)).length;
  while (attackLines() < figures.attackAccepted && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  figures.attackDelivered = attackLines();
  return figures;
}

async function legitimate(run: PumpingRun, md: () => Metadata, purpose: string, destination: string, figures: PumpingFigures): Promise<void> {
  figures.legitimateSends++;
  const clientIp = `203.0.113.${randomInt(1, 255)}`;
  let verificationId: string;
  try {
    verificationId = (await grpcCall(run.client, send, { purpose, channel: Channel.SMS, destination, clientIp }, md())).verificationId;
  } catch (err) {
    figures.legitimateFailures.push(`Send: ${reasonOf(err as ServiceError)}`);
    return;
  }
  const code = await run.deliveries.codeFor(verificationId);
  const result = (await grpcCall(run.client, verify, { target: { case: 'verificationId', value: verificationId }, code, clientIp }, md())).result;
  if (result === VerifyResult.VERIFIED) figures.legitimateVerified++;
  else figures.legitimateFailures.push(`Verify: ${VerifyResult[result]}`);
}
