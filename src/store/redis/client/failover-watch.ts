import { createClient } from "redis";
import type { HostPort } from "./topology.js";
import { sentinelClientOptions } from "./sentinel.js";
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
// ms, or more later), and only the leader does. So every Sentinel is
// subscribed to (those listed, and the others they know of), and while any of
// them has our master objectively down (+odown) or a failover of it under way
// (+try-failover ... until its own +switch-master, which the leader sends only
// once every replica has been moved, or its abort) a write's acknowledgement
// is not trusted: a call that needs one answers UNAVAILABLE, as it would for a
// WAIT that timed out, and nothing acknowledged is lost. A call under way when
// a failover began is treated the same (its reply may come from the old
// master's stray replica). Each Sentinel's state is its own: another's
// +switch-master (they switch as soon as the leader announces the new address,
// before it has moved every replica) ends nothing of the leader's (review 72).
// Nor does the leader's own end it: with three replicas its failover can end
// "for timeout" with a replica still following the old master, and node-redis
// moves to the new master seconds later (it listens for neither +switch-master
// nor the leader's steps; it moves on a lost connection, a READONLY, or a
// replica's notices). Until the connection commands go on names the master a
// +switch-master named, the fence stays (probe 73: 27 of 60 codes verified
// twice with three replicas).
//
// What is left: a notice that reaches us later than the leader's next step (a
// tick), or a Sentinel whose notices connection is down when it leads: each
// such connection is reported lost (logged, counted) when it fails or is not
// up within the start-up bound.

/** Notices that a failover of a master is under way (or about to be: its master is objectively down). */
const FAILOVER_STEPS = ["+try-failover", "+elected-leader", "+failover-state-select-slave", "+selected-slave", "+failover-state-send-slaveof-noone", "+failover-state-wait-promotion", "+promoted-slave", "+failover-state-reconf-slaves", "+slave-reconf-sent", "+slave-reconf-inprog", "+slave-reconf-done", "+failover-end", "+failover-end-for-timeout"];
const ABORTS = ["-failover-abort-not-elected", "-failover-abort-no-good-slave", "-failover-abort-slave-timeout", "-failover-abort-master-is-not-primary"];
const ODOWN = "+odown";
const NO_LONGER_ODOWN = "-odown";
/** This Sentinel moved the master: its failover (or its view of one) is over. */
const SWITCHED = "+switch-master";
const CHANNELS = [...FAILOVER_STEPS, ...ABORTS, ODOWN, NO_LONGER_ODOWN, SWITCHED];

/**
 * A Sentinel's failover is taken as over after this long without a notice of it (a notices connection lost
 * just then would otherwise fence writes for good). Sentinel's failover-timeout defaults to 3 minutes; a
 * switchover takes seconds.
 */
export const FAILOVER_FENCE_MAX_MS = 60_000;
/** How often the Sentinels are asked which other Sentinels watch the master. */
const DISCOVERY_EVERY_MS = 30_000;

/** A write's acknowledgement was not sought, or not trusted, because a failover of the master was under way. */
export class FailoverError extends Error {
  override readonly name = "FailoverError";
}

/** The address +switch-master names as the new master ("<name> <old ip> <old port> <new ip> <new port>"). */
export function switchedTo(message: string): string | undefined {
  const words = message.split(" ");
  return words.length >= 5 ? `${words[3]}:${words[4]}` : undefined;
}

/** A +switch-master heard: fenced while the connection's master is not the one it named (bounded by the cap). */
export function switchPending(pending: { to: string; at: number } | undefined, master: string | undefined, now: number): boolean {
  return pending !== undefined && master !== pending.to && now - pending.at <= FAILOVER_FENCE_MAX_MS;
}

/**
 * The connection is on the master a +switch-master (heard at `at`) named: its writes now go where only the
 * new master's replicas acknowledge, so the failovers and downs heard up to then are over for it, whatever
 * their Sentinels say later, or fail to say (probe 74: a leader that hung mid-failover fenced every write for
 * the 60 s cap, the connection long on the new master). Those heard after stay.
 */
export function settleSwitch(views: Iterable<SentinelView>, at: number): void {
  for (const v of views) {
    if (v.failoverAt !== undefined && v.failoverAt <= at) v.failoverAt = undefined;
    if (v.odownAt !== undefined && v.odownAt <= at) v.odownAt = undefined;
  }
}

export interface FailoverWatch {
  /** A number that changes whenever a failover begins. */
  epoch(): number;
  /** True when no failover is under way now and none began since `epoch` was read. */
  quietSince(epoch: number): boolean;
  close(): Promise<void>;
}

/** Which master a notice names: "master <name> ...", "<kind> <addr> ... @ <name> ...", or +switch-master's "<name> ...". */
export function masterNamed(channel: string, message: string): string | undefined {
  const words = message.split(" ");
  if (channel === SWITCHED) return words[0];
  const at = words.indexOf("@");
  if (at >= 0) return words[at + 1];
  return words[0] === "master" ? words[1] : undefined;
}

/** One Sentinel's view of our master, as its notices tell it: since when it has it down, or a failover under way. */
export interface SentinelView {
  odownAt?: number;
  failoverAt?: number;
}

/** A notice applied to the view of the Sentinel that sent it; true when it begins (or goes on with) a failover. */
export function applyNotice(view: SentinelView, channel: string, now: number): boolean {
  if (channel === ODOWN) view.odownAt = now;
  else if (channel === NO_LONGER_ODOWN) view.odownAt = undefined;
  else if (ABORTS.includes(channel)) view.failoverAt = undefined;
  else if (channel === SWITCHED) view.odownAt = view.failoverAt = undefined;
  else if (FAILOVER_STEPS.includes(channel)) view.failoverAt = now;
  else return false;
  return channel === ODOWN || FAILOVER_STEPS.includes(channel);
}

/** Whether any Sentinel's view has a failover of our master under way (or its master down), not older than the cap. */
export function fenced(views: Iterable<SentinelView>, now: number): boolean {
  for (const v of views) {
    for (const at of [v.odownAt, v.failoverAt]) if (at !== undefined && now - at <= FAILOVER_FENCE_MAX_MS) return true;
  }
  return false;
}

/**
 * Failover notices about `masterName` from every Sentinel in `sentinels`, and every other Sentinel they know of;
 * `master`: the master the connection's commands go to now (Transport.master).
 */
export function watchFailovers(sentinels: HostPort[], masterName: string, options: TransportOptions, master: () => string | undefined, now: () => number = Date.now): FailoverWatch {
  // As node-redis's own Sentinel connections: credentials, TLS, silence bound and PINGs.
  const { socket, pingInterval, ...auth } = sentinelClientOptions(options);
  const views = new Map<string, SentinelView>();
  const clients = new Map<string, { destroy(): void }>();
  const timers: NodeJS.Timeout[] = [];
  let epoch = 0;
  let closed = false;
  /** The latest +switch-master's new master, until the connection is on it. */
  let pending: { to: string; at: number } | undefined;
  const fencing = (): boolean => {
    const t = now();
    if (pending && master() === pending.to) settleSwitch(views.values(), pending.at);
    if (pending && !switchPending(pending, master(), t)) pending = undefined;
    return pending !== undefined || fenced(views.values(), t);
  };

  const watch = (sentinel: HostPort) => {
    const address = `${sentinel.host}:${sentinel.port}`;
    if (closed || clients.has(address)) return;
    const node = `sentinel notices ${address}`;
    const view: SentinelView = {};
    views.set(address, view);
    const client = createClient({
      RESP: 2,
      socket: { ...socket, host: sentinel.host, port: sentinel.port },
      pingInterval,
      ...auth,
    });
    clients.set(address, client);
    // "up" once subscribed; reported lost when it fails after that, or is not up within the start-up bound.
    let state: "connecting" | "up" | "lost" = "connecting";
    const lost = (err: unknown) => {
      if (state === "lost") return;
      state = "lost";
      options.events.lost(node, err);
    };
    client.on("error", (err: unknown) => {
      options.events.error(err);
      if (state === "up") lost(err);
    });
    const unheard = setTimeout(() => {
      if (state === "connecting") lost(new Error(`no notices connection within ${options.connectTimeoutMs} ms`));
    }, options.connectTimeoutMs);
    unheard.unref();
    timers.push(unheard);
    const heard = (message: string, channel: string) => {
      if (masterNamed(channel, message) !== masterName) return;
      if (applyNotice(view, channel, now())) epoch++;
      if (channel === SWITCHED) {
        const to = switchedTo(message);
        if (to === undefined) return;
        // A call under way now may be acknowledged by the old master's stray replica: not trusted either.
        if (to !== master()) epoch++;
        pending = { to, at: now() };
      }
    };
    const subscribed = () => {
      // Notices missed while it was away cannot be known: a reconnect starts from what it says next.
      if (state !== "up") options.events.ready(node);
      state = "up";
    };
    // node-redis subscribes again after a reconnect ("ready" follows it).
    client.on("ready", () => {
      if (state !== "connecting") subscribed();
    });
    client
      .connect()
      .then(() => client.subscribe(CHANNELS, heard))
      .then(subscribed, (err: unknown) => {
        // A subscription refused (an ACL without it) leaves that Sentinel unheard: said, never silent.
        options.events.error(err);
        lost(err);
      });
  };

  // The other Sentinels watching the master, as one of the listed ones knows them (a failover may be led by one
  // not in REDIS_SENTINELS).
  const discover = async () => {
    for (const listed of sentinels) {
      if (closed) return;
      const asker = createClient({ RESP: 2, socket: { ...socket, host: listed.host, port: listed.port, reconnectStrategy: false }, ...auth });
      asker.on("error", () => undefined);
      try {
        await asker.connect();
        const reply = (await asker.sendCommand(["SENTINEL", "SENTINELS", masterName])) as unknown;
        for (const entry of Array.isArray(reply) ? reply : []) {
          const fields = new Map<string, string>();
          if (Array.isArray(entry)) for (let i = 0; i + 1 < entry.length; i += 2) fields.set(String(entry[i]), String(entry[i + 1]));
          const host = fields.get("ip");
          const port = Number(fields.get("port"));
          if (host && Number.isInteger(port) && port > 0) watch({ host, port });
        }
        return;
      } catch {
        // The next listed one.
      } finally {
        asker.destroy();
      }
    }
  };

  for (const s of sentinels) watch(s);
  void discover();
  const rediscover = setInterval(() => void discover(), DISCOVERY_EVERY_MS);
  rediscover.unref();
  timers.push(rediscover);

  return {
    epoch: () => epoch,
    quietSince: (since) => epoch === since && !fencing(),
    // Nothing to wait for on a notices connection: dropped at once (a Sentinel that hangs must not hold a shutdown).
    close: async () => {
      closed = true;
      for (const t of timers) clearTimeout(t);
      for (const c of clients.values()) {
        try {
          c.destroy();
        } catch {
          // never connected
        }
      }
    },
  };
}
