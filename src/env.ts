// Readers for environment variables, shared by the service's and the
// notifier's config: each names the variable in its error.

export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * A well-formed setting whose target cannot be used at start-up (a Redis that
 * does not answer, a port already taken). The message names the variable and
 * says what is wrong; main.ts logs it as one line, with no stack.
 */
export class StartupError extends Error {
  override name = "StartupError";
}

export type Env = Record<string, string | undefined>;

export function optional(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === "" ? undefined : value;
}

export function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  return value;
}

export function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(`${name} must be one of ${allowed.join(", ")}, got "${raw}"`);
  }
  return raw as T;
}

/**
 * Whether NODE_ENV asks for production, for every program. Only `production` turns the development defaults
 * off, so a value meant as production but spelled otherwise ("Production", "prod") ran development mode
 * without a word (probe 100): anything but production, development or test is refused.
 */
export function productionMode(env: Env): boolean {
  return oneOf(env, "NODE_ENV", ["production", "development", "test"], "development") === "production";
}

const ON = ["on", "true"];
const OFF = ["off", "false"];

/**
 * An on/off setting, unset when not given: `on` or `true`, `off` or `false` (any case), for every such setting
 * alike. Some took only on/off, some only true/false; Helm renders an unquoted YAML `off` as "false", which
 * the on/off ones refused and the pods crash-looped (probe 100).
 */
export function flag(env: Env, name: string): boolean | undefined {
  const raw = optional(env, name);
  if (raw === undefined) return undefined;
  const value = raw.toLowerCase();
  if (ON.includes(value)) return true;
  if (OFF.includes(value)) return false;
  throw new ConfigError(`${name} must be on or off (or true or false), got "${raw}"`);
}

/** Whether a setting that takes a value or "off" says off: `off` or `false`, in any case, as a flag would. */
export function saysOff(env: Env, name: string): boolean {
  const raw = optional(env, name)?.toLowerCase();
  return raw !== undefined && OFF.includes(raw);
}

/** A port, or none for "off" (as saysOff reads it); `fallback` when unset (undefined: none). */
export function portOrOff(env: Env, name: string, fallback: number | undefined): number | undefined {
  if (saysOff(env, name) || (fallback === undefined && optional(env, name) === undefined)) return undefined;
  return int(env, name, fallback ?? 0, 0, 65_535);
}

/** "host:port,host:port" (an IPv6 host in brackets: "[::1]:6379"); `example` shows one entry in the error. */
export function hostPorts(name: string, value: string, example: string): { host: string; port: number }[] {
  return value.split(",").map((entry, i) => {
    const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(entry.trim());
    const port = Number(match?.[3]);
    if (!match || port < 1 || port > 65_535) {
      throw new ConfigError(`${name} entry ${i + 1} must be host:port (e.g. ${example}), got "${shownEntry(entry.trim())}"`);
    }
    return { host: match[1] ?? match[2]!, port };
  });
}

/**
 * An entry as a refusal may show it: credentials someone put in it (`user:password@host:port`, a URL's
 * userinfo) left out, as the Redis URL's are (probe 62: the password was printed in the start-up error).
 */
function shownEntry(entry: string): string {
  const at = entry.lastIndexOf("@");
  return at < 0 ? entry : `(credentials left out)@${entry.slice(at + 1)}`;
}

/** KAFKA_BROKERS as kafkajs takes it ("host:port" strings), each entry checked. */
export function kafkaBrokers(name: string, value: string): string[] {
  return hostPorts(name, value, "kafka-0.kafka:9092").map(hostPort);
}

/** One address as written in settings: an IPv6 host in brackets. */
export function hostPort(h: { host: string; port: number }): string {
  return h.host.includes(":") ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`;
}
