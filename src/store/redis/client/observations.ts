// What the Redis connections of this process have seen, for /metrics
// (src/metrics.ts reads these): failures that made a call UNAVAILABLE by
// reason, topology changes (failovers, reshardings), replica acknowledgements
// that did not come in time. Counts only: never a key or an argument.

export const redisObservations = {
  /** reason: connection, timeout, moved, wait, clusterdown, readonly, loading, ... */
  unavailable: new Map<string, number>(),
  topologyChanges: 0,
  waitTimeouts: 0,
  /** When (epoch ms) a write last went unacknowledged by the replicas OTP_REDIS_WAIT_REPLICAS asks for; 0: never. */
  lastWaitTimeoutAt: 0,
  connectionsLost: 0,
};

export function countUnavailable(reason: string): void {
  redisObservations.unavailable.set(reason, (redisObservations.unavailable.get(reason) ?? 0) + 1);
}
