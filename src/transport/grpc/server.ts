import type { IncomingHttpHeaders, ServerHttp2Session } from "node:http2";
import net, { type AddressInfo, type Socket } from "node:net";
import tls from "node:tls";
import { Server, ServerCredentials, type ServerOptions } from "@grpc/grpc-js";
import type { ServerCertificates } from "../../server-certificates.js";
import type { Logger } from "../../log.js";
import type { OtpService } from "../../otp/service.js";
import type { CallerResolver } from "../caller.js";
import type { GrpcHealth } from "./health.js";
import { otpServiceForGrpc } from "./otp-service.js";
import type { Metrics } from "../../metrics.js";
import { addReflection } from "./reflection.js";
import { awaitPreface, closeWhenIdle, type IdleBound } from "../idle-connections.js";
import { keepPeerAddress } from "../peer-address.js";
import { refuseOtherCodecs } from "./content-types.js";
import { serveDeadlines } from "../deadline-headers.js";
import { watchCredentialsAsSent } from "./credentials-as-sent.js";
import { http2ServersOf, onSessions } from "./sessions.js";
import { useChainFreeStreamTables } from "../http2-stream-tables.js";
import { streamGuards } from "./stream-guards.js";
import type { OpenCalls } from "../open-calls.js";

// The gRPC listener for backend callers: otp.v1.OtpService, grpc.health.v1
// and server reflection on one grpc-js server.
//
// We own the listening socket (and TLS, when configured) and hand each
// connection to grpc-js through its public connection injector only once the
// TLS handshake and the HTTP/2 client preface have arrived within
// OTP_CONNECTION_IDLE_MS; grpc-js's own listener has no such bound (a silent
// connection lived until an unanswered keepalive ping, ~80 s). After that, a
// connection with no call open for as long, counted from its start, gets
// GOAWAY and is then destroyed, so a call whose headers never complete does
// not hold it either (../idle-connections.ts, ./sessions.ts).

const SERVER_OPTIONS: ServerOptions = {
  // Our requests are a few hundred bytes; anything near this is abuse. Bigger: RESOURCE_EXHAUSTED.
  "grpc.max_receive_message_length": 64 * 1024,
  // Ping idle connections so dead peers (and half-open NAT entries) are noticed.
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
  // Long-lived client channels get re-balanced across replicas now and then.
  "grpc.max_connection_age_ms": 30 * 60_000,
  "grpc.max_connection_age_grace_ms": 30_000,
  // Per connection; the process-wide bound is ../open-calls.ts. A backend's
  // channel (or ghz -c 50 over 2 connections) needs far fewer; past this the
  // client queues or opens another connection.
  "grpc.max_concurrent_streams": 256,
  // Channelz (grpc-js's per-call and per-session counters, with a Date per call)
  // is on by default, but nothing here serves grpc.channelz.v1 or reads it: the
  // Prometheus metrics are ours. Off, every call skips that bookkeeping.
  "grpc.enable_channelz": 0,
};

export interface GrpcListener {
  /** The port actually bound (the config may say 0). */
  port: number;
  /** Stop accepting, let in-flight calls finish within graceMs, then cancel the rest. */
  stop(graceMs: number): Promise<void>;
}

/**
 * The TLS side of the port: grpc-js sees TLS sockets (and their peer certificates) already established,
 * so this server's secure context is the port's, and it follows a certificate reload (../../server-certificates.ts).
 */
function tlsServer(certificates: ServerCertificates, handshakeTimeout: number): tls.Server {
  const server = tls.createServer({
    ...certificates.contextOptions(),
    ALPNProtocols: ["h2"],
    handshakeTimeout,
    // With a client CA, a client certificate signed by it is required (mTLS).
    ...(certificates.mtls ? { requestCert: true, rejectUnauthorized: true } : {}),
  });
  certificates.follow(server);
  return server;
}

export async function listenGrpc(options: {
  /** undefined: every address. */
  host: string | undefined;
  port: number;
  /** TLS_*_FILE, when set: the certificate in force, reloaded without a restart. */
  tls: ServerCertificates | undefined;
  core: OtpService;
  callerOf: CallerResolver;
  health: GrpcHealth;
  log: Logger;
  requestTimeoutMs: number;
  /** OTP_CONNECTION_IDLE_MS: TLS handshake + preface + first call. */
  idleMs: number;
  /** OTP_SESSION_IDLE_MS: time with no call open once a connection has served one. */
  sessionIdleMs: number;
  /** The process-wide bound on open calls (OTP_MAX_OPEN_CALLS), shared with the HTTP port. */
  openCalls: OpenCalls;
  /** OTP_MAX_CONNECTIONS: connections this port holds at once; more are closed on accept. */
  maxConnections: number;
  /** OTP_MIN_DEADLINE_MS (../status.ts deadlineTooNear). */
  minDeadlineMs: number;
  metrics?: Metrics;
}): Promise<GrpcListener> {
  const server = new Server({
    ...SERVER_OPTIONS,
    interceptors: [streamGuards(options.requestTimeoutMs, options.callerOf, options.log, options.metrics)],
  });
  const otp = otpServiceForGrpc(options.core, options.log, options.metrics, options.minDeadlineMs);
  // Every service goes through `services`, which notes the streaming methods'
  // paths: the open-calls bound gives those a lifetime and a quota of their own.
  const streaming = new Set<string>();
  const services: Pick<Server, "addService"> = {
    addService(service, implementation) {
      for (const method of Object.values(service)) if (method.requestStream || method.responseStream) streaming.add(method.path);
      server.addService(service, implementation);
    },
  };
  services.addService(otp.definition, otp.implementation);
  options.health.addTo(services);
  addReflection(services);

  // TLS, when configured, is ours: grpc-js gets plain (already decrypted) HTTP/2.
  const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
  // Every session not yet closed, for stop() to drain and wait on (see there).
  const sessions = new Map<ServerHttp2Session, IdleBound>();
  onSessions(server, (session) => {
    useChainFreeStreamTables(session);
    watchCredentialsAsSent(session);
    // Before grpc-js's own stream handler reads the deadline (../deadline-headers.ts).
    session.prependListener("stream", (_stream: unknown, headers: IncomingHttpHeaders) => {
      serveDeadlines(headers);
      refuseOtherCodecs(headers);
    });
    sessions.set(session, closeWhenIdle(session, options.idleMs, options.sessionIdleMs));
    session.once("close", () => sessions.delete(session));
  });
  // After grpc-js's stream handler is attached (by createConnectionInjector), in front of it.
  for (const http2Server of http2ServersOf(server)) options.openCalls.guardStreams(http2Server, "grpc", streaming);
  const listener = options.tls ? tlsServer(options.tls, options.idleMs) : net.createServer();
  const waiting = new Set<Socket>();
  listener.on(options.tls ? "secureConnection" : "connection", (socket: Socket) => {
    keepPeerAddress(socket);
    waiting.add(socket);
    socket.once("close", () => waiting.delete(socket));
    awaitPreface(socket, options.idleMs, () => {
      waiting.delete(socket);
      injector.injectConnection(socket);
    });
  });
  // A failed TLS handshake (or one that timed out) is the client's problem; the socket is already gone.
  listener.on("tlsClientError", (err: Error, socket: Socket) => {
    socket.destroy();
    options.log.debug({ err }, "gRPC TLS handshake failed");
  });
  // In front of TLS's own connection listener too: a connection past the bound costs no handshake.
  options.openCalls.guardConnections(listener, options.maxConnections);
  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(options.port, options.host, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  listener.on("error", (err) => options.log.error({ err }, "gRPC listener error"));

  return {
    port: (listener.address() as AddressInfo).port,
    stop: (graceMs) =>
      new Promise<void>((resolve) => {
        listener.close();
        for (const socket of waiting) socket.destroy();
        const timer = setTimeout(() => {
          options.log.warn("gRPC drain deadline passed; cancelling remaining calls");
          server.forceShutdown();
          // grpc-js no longer lists sessions it already took for closed (see below), so forceShutdown
          // missed them: a call waiting on Redis was cut only when the process exited (probe 22).
          for (const session of sessions.keys()) session.destroy();
          resolve();
        }, graceMs);
        // tryShutdown sends each session a GOAWAY (open streams go on, new
        // ones are refused), but its callback is no proof that they have
        // finished: since Node 24, closing an http2 server closes its
        // sessions too (Http2Server.close -> session.close()), and grpc-js,
        // which closes the server first, then takes a session whose `closed`
        // flag is set for one already gone. So the callback came at once and
        // the process exited under calls still open (a request still
        // arriving was reset with CANCEL). Node emits a session's "close"
        // only once its last stream has ended: wait for that.
        const closing = [...sessions.keys()].map((session) => new Promise<void>((done) => session.once("close", () => done())));
        const shutDown = new Promise<void>((done) => server.tryShutdown(() => done()));
        // A session left with no call open (a request's headers still
        // incomplete) is closed shortly instead (../idle-connections.ts).
        for (const idle of sessions.values()) idle.drain();
        void Promise.all([shutDown, ...closing]).then(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
