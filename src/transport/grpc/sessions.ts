import type { Http2Server, ServerHttp2Session } from "node:http2";
import type { Server } from "@grpc/grpc-js";

// grpc-js has no public hook on the HTTP/2 sessions it serves, and its own
// idle bound (grpc.max_connection_idle_ms) closes a session gracefully, which
// never completes while a request's header block is pending: Node waits for
// that half-open stream, so the connection stayed. We need the sessions to
// apply ../idle-connections.ts's closeWhenIdle (GOAWAY, then destroy). The
// http2 server behind a connection injector is a key of grpc-js's private
// `http2Servers` map (1.10-1.14). This is the one place that relies on it: if
// an upgrade changes it, this throws when the listener starts, so every test
// that starts the service fails and says where.

export function onSessions(server: Server, listener: (session: ServerHttp2Session) => void): void {
  for (const http2Server of http2ServersOf(server)) http2Server.on("session", listener);
}

/** The http2 servers behind a grpc-js server (its connection injector's); also for ../open-calls.ts's stream bound. */
export function http2ServersOf(server: Server): Http2Server[] {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) {
    throw new Error("@grpc/grpc-js internals changed: Server.http2Servers is not the map of its http2 servers (src/transport/grpc/sessions.ts)");
  }
  const found = [...(servers.keys() as IterableIterator<Http2Server>)];
  for (const http2Server of found) {
    if (typeof http2Server?.on !== "function") throw new Error("@grpc/grpc-js internals changed: http2Servers keys are not http2 servers");
  }
  return found;
}
