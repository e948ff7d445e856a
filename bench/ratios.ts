import { CheckRateLimitRequestSchema, Channel, SendRequestSchema, VerifyRequestSchema } from "../src/gen/otp/v1/otp_pb.js";
import { connectLoad, type ConnectEncoding } from "./connect-load.js";
import { ghz, type GhzLoad, type GhzResult } from "./ghz.js";
import { probeNoise } from "./noise.js";
import { PURPOSE, type Service } from "./service.js";

// The headline of `npm run bench` (issue 12): CPU of the service's
// processes (all threads) per successful call, against what the same
// process spends on grpc.health.v1.Health/Check in the same run. Floor and
// call are measured alternately, several rounds each, and the lowest CPU per
// call of each is the one trusted: on a shared machine noise only ever adds.
// Every measurement also carries the noise meter (others' CPU).

export type Transport = "gRPC" | "Connect JSON" | "Connect binary";

export interface RatioMeasurement {
  /** Service CPU (all threads and workers, the relay included) per OK call, µs. */
  cpuUs: number;
  ok: number;
  rps: number;
  /** CPU used by processes that are not the bench's, % of the machine. */
  othersPct: number;
  /** % of a core: service, redis, kafka, load generator. */
  cpu: Record<string, number>;
  errors: Record<string, number>;
}

export interface RatioRow {
  call: string;
  transport: Transport;
  /** The service configuration it ran on ("default, Kafka sink", ...). */
  config: string;
  floor: RatioMeasurement[];
  runs: RatioMeasurement[];
  /** Lowest CPU per call of each. */
  floorUs: number;
  callUs: number;
  /** callUs / floorUs */
  ratio: number;
  /** Target for the ratio to the floor (issue 12), when there is one. */
  target?: number;
  /** Connect rows: its CPU per call ÷ the same call's over gRPC in this run (target 1.3). */
  vsGrpc?: number;
}

export interface RatioContext {
  service: Service;
  /** Service configuration label for the rows. */
  config: string;
  seconds: number;
  warmupSeconds: number;
  rounds: number;
  concurrency: number;
  connections: number;
  /** Called after every load (Send, Verify write events): wait until the relay has published them, so its CPU counts. */
  drain: () => Promise<unknown>;
  log: (msg: string) => void;
}

/** One load against the service, gRPC (ghz) or Connect over HTTP/1.1. */
export type Load = (service: Service, seconds: number, round: number) => Promise<GhzResult>;

/** Measure one load: the service's CPU per OK call, the relay's publishing of what it wrote included. */
export async function cpuPerCall(ctx: RatioContext, load: Load, round: number): Promise<RatioMeasurement> {
  const probe = probeNoise();
  const r = await load(ctx.service, ctx.seconds, round);
  await ctx.drain();
  const report = probe.stop();
  const cpuSeconds = report.cpuSeconds.service ?? NaN;
  return { cpuUs: (cpuSeconds * 1e6) / Math.max(1, r.ok), ok: r.ok, rps: r.rps, othersPct: report.otherPct, cpu: r.cpu, errors: r.errors };
}

export const healthCheck: Load = (service, seconds) =>
  ghz({ port: service.grpcPort, call: "grpc.health.v1.Health/Check", data: {}, seconds, concurrency: CONCURRENCY(), connections: CONNECTIONS() });

let concurrency = 50;
let connections = 2;
const CONCURRENCY = () => concurrency;
const CONNECTIONS = () => connections;

/** Floor and call alternately, `rounds` times each, after a warm-up of both. */
export async function ratioOf(ctx: RatioContext, row: { call: string; transport: Transport; target?: number }, load: Load): Promise<RatioRow> {
  concurrency = ctx.concurrency;
  connections = ctx.connections;
  if (ctx.warmupSeconds > 0) {
    await healthCheck(ctx.service, ctx.warmupSeconds, -1);
    await load(ctx.service, ctx.warmupSeconds, -1);
    await ctx.drain();
  }
  const floor: RatioMeasurement[] = [];
  const runs: RatioMeasurement[] = [];
  for (let round = 0; round < ctx.rounds; round++) {
    floor.push(await cpuPerCall(ctx, healthCheck, round));
    runs.push(await cpuPerCall(ctx, load, round));
    const [f, c] = [floor.at(-1)!, runs.at(-1)!];
    ctx.log(`${row.call} (${row.transport}, ${ctx.config}) round ${round + 1}: floor ${f.cpuUs.toFixed(1)} µs/call (${Math.round(f.rps)}/s, others ${f.othersPct.toFixed(0)}%), call ${c.cpuUs.toFixed(1)} µs/call (${Math.round(c.rps)}/s, others ${c.othersPct.toFixed(0)}%)${Object.keys(c.errors).length ? ` errors ${JSON.stringify(c.errors)}` : ""}`);
  }
  const floorUs = Math.min(...floor.map((m) => m.cpuUs));
  const callUs = Math.min(...runs.map((m) => m.cpuUs));
  return { ...row, config: ctx.config, floor, runs, floorUs, callUs, ratio: callUs / floorUs };
}

// --- the loads ---


export interface VerifyPool {
  /** [verification id, wrong code] in rotation. */
  wrongFile: string;
  wrong: { verification_id: string; code: string }[];
  /** Per round (and one warm-up) a fresh list of [id, right code], each used once. */
  right: (round: number) => { verification_id: string; code: string }[];
  rightFile: (round: number) => string;
  /** Right codes kept for a verify-ok profile (BENCH_PROFILE=verify-ok). */
  profileOnce?: { warm: { dataFile: string; total: number }; measured: { dataFile: string; total: number } };
}

const grpc = (call: string, data: Pick<GhzLoad, "data" | "dataFile">): Load => (service, seconds) =>
  ghz({ port: service.grpcPort, call, ...data, seconds, concurrency, connections });

export const loads = {
  verifyWrong: (pool: VerifyPool): Load => grpc("otp.v1.OtpService/Verify", { dataFile: pool.wrongFile }),
  /** Each right code once: ghz -n over this round's list. */
  verifyRight: (pool: VerifyPool): Load => (service, _seconds, round) =>
    ghz({ port: service.grpcPort, call: "otp.v1.OtpService/Verify", dataFile: pool.rightFile(round), total: pool.right(round).length, concurrency, connections }),
  checkRateLimit: (): Load => grpc("otp.v1.OtpService/CheckRateLimit", { data: { purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination: "m{{.RequestNumber}}@example.com" } }),
  /** Unique destinations: every call issues a new verification and queues a delivery event. */
  send: (tag: string): Load => {
    let n = 0;
    return (service, seconds) => ghz({ port: service.grpcPort, call: "otp.v1.OtpService/Send", data: { purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination: `${tag}${++n}-{{.RequestNumber}}@example.com` }, seconds, concurrency, connections });
  },
};

/** The same calls over Connect (HTTP/1.1). Enough bodies for the run: the generator cycles through them. */
export const connectLoads = {
  verifyWrong: (pool: VerifyPool, encoding: ConnectEncoding): Load => (service, seconds) =>
    connectLoad({
      port: service.httpPort, call: "otp.v1.OtpService/Verify", schema: VerifyRequestSchema, encoding, seconds, concurrency,
      messages: pool.wrong.map((w) => ({ target: { case: "verificationId" as const, value: w.verification_id }, code: w.code })),
      json: pool.wrong.map((w) => ({ verificationId: w.verification_id, code: w.code })),
    }),
  checkRateLimit: (encoding: ConnectEncoding): Load => (service, seconds) => {
    const destinations = Array.from({ length: 20_000 }, (_, i) => `m${i}@example.com`);
    return connectLoad({
      port: service.httpPort, call: "otp.v1.OtpService/CheckRateLimit", schema: CheckRateLimitRequestSchema, encoding, seconds, concurrency,
      messages: destinations.map((destination) => ({ purpose: PURPOSE, channel: Channel.EMAIL, destination })),
      json: destinations.map((destination) => ({ purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination })),
    });
  },
  send: (tag: string, encoding: ConnectEncoding, perSecond: number): Load => {
    let n = 0;
    return (service, seconds) => {
      // Unique destinations: more bodies than the run can send.
      const destinations = Array.from({ length: Math.ceil(seconds * perSecond) }, (_, i) => `${tag}${encoding[0]}${++n}-${i}@example.com`);
      return connectLoad({
        port: service.httpPort, call: "otp.v1.OtpService/Send", schema: SendRequestSchema, encoding, seconds, concurrency, once: true,
        messages: destinations.map((destination) => ({ purpose: PURPOSE, channel: Channel.EMAIL, destination })),
        json: destinations.map((destination) => ({ purpose: PURPOSE, channel: "CHANNEL_EMAIL", destination })),
      });
    };
  },
};
