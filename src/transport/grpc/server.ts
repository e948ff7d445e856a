import { readFileSync } from "node:fs";
import { Server, ServerCredentials, type ServerOptions } from "@grpc/grpc-js";
import type { Config } from "../../config.js";
import type { Logger } from "../../log.js";
import type { OtpService } from "../../otp/service.js";
import type { CallerResolver } from "../caller.js";
import type { GrpcHealth } from "./health.js";
import { otpServiceForGrpc } from "./otp-service.js";
import type { Metrics } from "../../metrics.js";
import { addReflection } from "./reflection.js";
import { streamGuards } from "./stream-guards.js";

// The gRPC listener for backend callers: otp.v1.OtpService, grpc.health.v1
// and server reflection on one grpc-js server.

const SERVER_OPTIONS: ServerOptions = {
  // Our requests are a few hundred bytes; anything near this is abuse. Bigger: RESOURCE_EXHAUSTED.
  "grpc.max_receive_message_length": 64 * 1024,
  // Ping idle connections so dead peers (and half-open NAT entries) are noticed.
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
  "grpc.max_connection_idle_ms": 5 * 60_000,
  // Long-lived client channels get re-balanced across replicas now and then.
  "grpc.max_connection_age_ms": 30 * 60_000,
  "grpc.max_connection_age_grace_ms": 30_000,
  "grpc.max_concurrent_streams": 1_000,
};

export interface GrpcListener {
  /** The port actually bound (the config may say 0). */
  port: number;
  /** Stop accepting, let in-flight calls finish within graceMs, then cancel the rest. */
  stop(graceMs: number): Promise<void>;
}

function credentials(tls: Config["tls"]): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const ca = tls.caFile ? readFileSync(tls.caFile) : null;
  const keyPair = { private_key: readFileSync(tls.keyFile), cert_chain: readFileSync(tls.certFile) };
  // With a client CA, a client certificate signed by it is required (mTLS).
  return ServerCredentials.createSsl(ca, [keyPair], ca !== null);
}

export async function listenGrpc(options: {
  host: string;
  port: number;
  tls: Config["tls"];
  core: OtpService;
  callerOf: CallerResolver;
  health: GrpcHealth;
  log: Logger;
  requestTimeoutMs: number;
  metrics?: Metrics;
}): Promise<GrpcListener> {
  const server = new Server({ ...SERVER_OPTIONS, interceptors: [streamGuards(options.requestTimeoutMs)] });
  const otp = otpServiceForGrpc(options.core, options.callerOf, options.log, options.metrics);
  server.addService(otp.definition, otp.implementation);
  options.health.addTo(server);
  addReflection(server);

  const address = `${options.host.includes(":") ? `[${options.host}]` : options.host}:${options.port}`;
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, credentials(options.tls), (err, bound) => (err ? reject(err) : resolve(bound))),
  );

  return {
    port,
    stop: (graceMs) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          options.log.warn("gRPC drain deadline passed; cancelling remaining calls");
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
