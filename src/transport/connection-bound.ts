import type { Server, Socket } from "node:net";

// A bound on the connections a listening server holds at once: past it a new
// connection is destroyed on accept, before TLS or any protocol reads it.
// Counted here rather than by net.Server's maxConnections, which a cluster
// worker (OTP_WORKERS > 1) does not apply to the connections the primary
// hands it. Used by the service's two ports (OTP_MAX_CONNECTIONS, through
// ./open-calls.ts) and by the small operator ports (../plain-endpoint.ts).

const ignore = (): void => {};

/** Call once all of the server's "connection" listeners are attached: the bound goes in front of them. */
export function boundConnections(server: Server, max: number, refused: () => void): void {
  const listeners = server.listeners("connection") as ((socket: Socket) => void)[];
  server.removeAllListeners("connection");
  let open = 0;
  const release = (): void => {
    open--;
  };
  server.on("connection", (socket: Socket) => {
    if (open >= max) {
      socket.on("error", ignore);
      socket.destroy();
      refused();
      return;
    }
    open++;
    socket.once("close", release);
    for (const listener of listeners) listener.call(server, socket);
  });
}
