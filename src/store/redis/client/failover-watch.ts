import { createClient } from "redis";
import type { HostPort } from "./topology.js";
import type { TransportOptions } from "./transport.js";

// What every Sentinel says about a failover of our master, so that no write is
// acknowledged across one (probe 70).
//
// WAIT counts the replicas that have a change, not which ones. In a switchover
// (`SENTINEL FAILOVER`, which Kubernetes charts run before a master's pod
// stops) the leading Sentinel promotes one replica while the old master goes
// on serving: a second replica still following the old master acknowledges
// its writes, and about a second later is moved to the new master, which
// never had them. Codes answered VERIFIED verified again, locked
// verifications got new guesses, delivered codes were gone. The same happens
// when the old master is cut off from the Sentinels but not from us.
//
// The leader announces each step on its own notices channel before it takes
// it (+try-failover at once; the replica is told REPLICAOF NO ONE a tick, 100
// ms, or more later), and only the leader does. So every Sentinel listed is
// subscribed to, and from the first step of a failover of our master to its
// end (+switch-master, or the leader's abort) a write's acknowledgement is not
// trusted: a call that needs one answers UNAVAILABLE, as it would for a WAIT
// that timed out, and nothing acknowledged is lost. A call under way when a
// failover began is treated the same (its reply may come from the old
// master's stray replica). The master being objectively down (+odown) counts
// too: a failover follows.
//
// What is left: a notice that reaches us later than the leader's next step (a
// tick), or a Sentinel whose notices connection is down when it leads (each
// one lost is logged and counted as a lost connection).

/** A notice about a failover of one master, from one Sentinel. */
const BEGINS = ["+odown", "+try-failover", "+elected-leader", "+failover-state-select-slave", "+selected-slave", "+failover-state-send-slaveof-noone", "+failover-state-wait-promotion", "+promoted-slave", "+failover-state-reconf-slaves", "+slave-reconf-sent"];
const ENDS_HERE = ["-odown", "-failover-abort-not-elected", "-failover-abort-no-good-slave", "-failover-abort-slave-timeout", "-failover-abort-master-is-not-primary"];
/** The master moved: every Sentinel's failover of it is over. */
const SWITCHED = "+switch-master";

/**
 * A failover a notice began is taken as over after this long without its end (a notices connection lost
 * just then would otherwise fence writes for good). Sentinel's failover-timeout defaults to 3 minutes; a
 * switchover takes seconds.
 */
export const FAILOVER_FENCE_MAX_MS = 60_000;

export interface FailoverWatch {
  /** A number that changes whenever a failover begins. */
  epoch(): number;
  /** True when no failover is under way now and none began since `epoch` was read. */
  quietSince(epoch: number): boolean;
  close(): Promise<void>;
}

/** A write's acknowledgement was not sought, or not trusted, because a failover of the master was under way. */
export class FailoverError extends Error {
  override readonly name = "FailoverError";
}

/** Which master a notice names: "master <name> ...", "<kind> <addr> ... @ <name> ...", or +switch-master's "<name> ...". */
export function masterNamed(channel: string, message: string): string | undefined {
  const words = message.split(" ");
  if (channel === SWITCHED) return words[0];
  const at = words.indexOf("@");
  if (at >= 0) return words[at + 1];
  return words[0] === "master" ? words[1] : undefined;
}

/** Failover notices about `masterName` from every Sentinel in `sentinels`. */
export function watchFailovers(sentinels: HostPort[], masterName: string, options: TransportOptions, now: () => number = Date.now): FailoverWatch {
  const { access } = options;
  const tls = access.tls ? { tls: true as const, ...access.tls } : {};
  /** Sentinel address -> when its failover of our master began (its latest notice of one). */
  const underway = new Map<string, number>();
  let epoch = 0;
  const fencing = (): boolean => {
    const t = now();
    for (const [sentinel, since] of underway) if (t - since > FAILOVER_FENCE_MAX_MS) underway.delete(sentinel);
    return underway.size > 0;
  };
  const clients = sentinels.map(({ host, port }) => {
    const address = `${host}:${port}`;
    const client = createClient({
      RESP: 2,
      socket: { host, port, connectTimeout: options.connectTimeoutMs, reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 1000), ...tls },
      ...(access.sentinelUsername !== undefined ? { username: access.sentinelUsername } : {}),
      ...(access.sentinelPassword !== undefined ? { password: access.sentinelPassword } : {}),
    });
    let up = false;
    client.on("error", (err: unknown) => {
      options.events.error(err);
      if (!up) return;
      up = false;
      options.events.lost(`sentinel notices ${address}`, err);
    });
    client.on("ready", () => {
      if (up) return;
      up = true;
      options.events.ready(`sentinel notices ${address}`);
    });
    const heard = (message: string, channel: string) => {
      if (masterNamed(channel, message) !== masterName) return;
      if (channel === SWITCHED) {
        underway.clear();
      } else if (ENDS_HERE.includes(channel)) {
        underway.delete(address);
      } else {
        underway.set(address, now());
        epoch++;
      }
    };
    // Subscribed once connected; node-redis subscribes again after a reconnect.
    client.connect().then(
      () => client.subscribe([...BEGINS, ...ENDS_HERE, SWITCHED], heard),
      () => undefined, // reconnectStrategy keeps trying; "error" reports each failure
    ).catch((err: unknown) => options.events.error(err));
    return client;
  });
  return {
    epoch: () => epoch,
    quietSince: (since) => epoch === since && !fencing(),
    // Nothing to wait for on a notices connection: dropped at once (a Sentinel that hangs must not hold a shutdown).
    close: async () => {
      for (const c of clients) {
        try {
          c.destroy();
        } catch {
          // never connected
        }
      }
    },
  };
}
