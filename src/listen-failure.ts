import { StartupError } from "./env.js";

// A listener that cannot start names the setting to fix: the port's variable
// when the port is taken or not allowed, HOST when the address is not one
// this machine has or does not resolve. Anything else is left as it is.

const HOST_CODES = new Set(["EADDRNOTAVAIL", "ENOTFOUND", "EAI_AGAIN", "EAI_FAIL", "EAI_NONAME", "EAFNOSUPPORT"]);
const PORT_CODES = new Set(["EADDRINUSE", "EACCES", "EPERM"]);

export function listenFailure(err: unknown, portVariable: string, host: string | undefined): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (code !== undefined && HOST_CODES.has(code)) return new StartupError(`HOST (${host ?? "every address"}) cannot be listened on: ${message}`);
  if (code !== undefined && PORT_CODES.has(code)) return new StartupError(`${portVariable} cannot be bound: ${message}`);
  // "bind" in a cluster worker (the primary binds for it), "listen" otherwise.
  const syscall = (err as NodeJS.ErrnoException | undefined)?.syscall;
  if (syscall === "listen" || syscall === "bind") return new StartupError(`${portVariable} cannot be bound: ${message}`);
  return err;
}
