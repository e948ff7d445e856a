import { closeSync, constants, fstatSync, openSync, readFileSync } from "node:fs";

// Files named by settings (TLS, clients, policy, a password file) are read on
// the event loop: at start-up and by every reload poll (./changed-files.ts).
// Reading a path that is not a regular file can block there for good, a FIFO
// until something writes to it (probe 100: a FIFO at OTP_CLIENTS_FILE stopped
// the whole process, /healthz included, for good). So the path is opened
// without blocking, and read only when it is a regular file.

/** The text of the regular file at `path`; throws an errno error (ENOENT, EACCES...) or "not a regular file". */
export function readRegularFile(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stat = fstatSync(fd);
    if (stat.isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
    if (!stat.isFile()) throw new Error("not a regular file");
    return readFileSync(fd, "utf8");
  } finally {
    closeSync(fd);
  }
}

/** How a refusal names why the file could not be read: its errno code, or the reason above. */
export function unreadableBecause(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}
