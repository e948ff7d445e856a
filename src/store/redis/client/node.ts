import { createClient } from "redis";
import { nodeClientOptions, type RedisReply, type Transport, type TransportOptions } from "./transport.js";

// One Redis node (REDIS_URL): one multiplexed connection.

export async function connectNode(url: string, options: TransportOptions): Promise<{ transport: Transport; connecting: Promise<unknown> }> {
  const client = createClient({ url, ...nodeClientOptions(options) });
  // Log transitions only (not every failed retry), and never the URL: it may hold a password.
  let connected = false;
  client.on("error", (err: Error) => {
    options.events.error(err);
    if (!connected) return;
    connected = false;
    options.events.lost("node", err);
  });
  client.on("ready", () => {
    if (connected) return;
    connected = true;
    options.events.ready("node");
  });
  const send = (args: readonly string[]) => client.sendCommand<RedisReply>(args);
  const transport: Transport = {
    send: (_key, args) => send(args),
    // sendCommand queues synchronously: calls made in one tick go out in order on this one connection.
    pipeline: (_key, commands) => Promise.all(commands.map(send)),
    pingAll: async () => (await send(["PING"])) === "PONG",
    close: async () => {
      if (client.isOpen) await client.close();
    },
    destroy: () => client.destroy(),
  };
  return { transport, connecting: client.connect() };
}
