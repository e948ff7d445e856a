import { readFileSync } from "node:fs";
import type { SecureContextOptions, Server } from "node:tls";
import type { Logger } from "./log.js";
import { leafCertificate, readServerTls, type ServerTls } from "./tls-material.js";

// The listeners' certificate, key and client CA, kept in step with their
// files without a restart: cert-manager renews a certificate and kubelet
// swaps the Secret volume's files in every pod within a minute (a new
// directory, then an atomic rename of the `..data` symlink the file names
// point through); a Docker secret or a hand-edited file changes in place.
// Every OTP_TLS_RELOAD_CHECK_MS the three files are read again (by name, so a
// symlink swap is followed; fs.watch would lose the files a swap replaces) and,
// when their contents changed, checked as at start-up (src/tls-material.ts)
// and put in force on every listener (tls.Server#setSecureContext): new
// connections get the new certificate, open ones keep theirs. SIGHUP
// (main.ts) does the same at once. A pair that does not check (a key that is
// not the certificate's, a file unreadable or half-written) is refused with
// one error line and what is in force stays: a pod serving a still-valid
// certificate is better than one that cannot start. A poll seeing such a state
// reports it only when the next poll sees it again (kubelet's swap and a `cp`
// of two files each have a moment where the pair does not match).

export type ReloadTrigger = "SIGHUP" | "file change";

/** What metrics see (src/metrics.ts): the certificate in force and each reload's outcome. */
export interface TlsObserver {
  /** The notAfter of the certificate new connections get, as Unix seconds. */
  inForce(notAfterSeconds: number): void;
  reload(outcome: "reloaded" | "refused"): void;
}

export class ServerCertificates {
  private inForce: ServerTls;
  private readonly servers = new Set<Server>();
  /** The files' contents as last acted on (put in force or reported as refused). */
  private seen: string;
  /** Contents that failed once on a poll: reported if the next poll finds them again. */
  private failedOnce: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(initial: ServerTls, private readonly log: Logger, private readonly observer?: TlsObserver) {
    this.inForce = initial;
    this.seen = contents(initial);
    observer?.inForce(notAfterOf(initial));
  }

  /** Client certificates are required (TLS_CA_FILE set at start-up; a reload keeps that choice). */
  get mtls(): boolean {
    return this.inForce.ca !== undefined;
  }

  /** The options of the secure context in force, for a server being created. */
  contextOptions(): SecureContextOptions {
    return contextOf(this.inForce);
  }

  /** A listener whose new connections use the certificate in force from now on. */
  follow(server: Server): void {
    this.servers.add(server);
    server.once("close", () => this.servers.delete(server));
  }

  /** Polls the files every `intervalMs` (0: never; SIGHUP only). */
  watch(intervalMs: number): void {
    if (intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => this.poll(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** SIGHUP: read the files now; the outcome is logged whatever it is. */
  reload(): void {
    this.failedOnce = undefined;
    this.tryFiles("SIGHUP", snapshot(this.inForce.files), true);
  }

  private poll(): void {
    const now = snapshot(this.inForce.files);
    if (now === this.seen) return;
    this.tryFiles("file change", now, now === this.failedOnce);
  }

  private tryFiles(trigger: ReloadTrigger, read: string, reportFailure: boolean): void {
    let next: ServerTls;
    try {
      next = readServerTls(this.inForce.files);
    } catch (err) {
      if (!reportFailure) {
        this.failedOnce = read;
        return;
      }
      this.seen = read;
      this.failedOnce = undefined;
      // ConfigError messages name the setting and the path, never the contents.
      this.refused(trigger, err);
      return;
    }
    this.failedOnce = undefined;
    this.seen = contents(next);
    if (contents(next) === contents(this.inForce)) {
      if (trigger === "SIGHUP") this.log.info({ trigger }, "TLS files unchanged; the certificate in force stays");
      return;
    }
    const options = contextOf(next);
    try {
      for (const server of this.servers) server.setSecureContext(options);
    } catch (err) {
      // Not expected: readServerTls built a secure context from the same options.
      this.refused(trigger, err);
      for (const server of this.servers) server.setSecureContext(contextOf(this.inForce));
      return;
    }
    this.inForce = next;
    const leaf = leafCertificate(next.cert);
    this.log.info(
      { trigger, certificateSha256: leaf.fingerprint256, notAfter: new Date(leaf.validTo).toISOString() },
      "TLS certificate reloaded; new connections use it",
    );
    this.observer?.inForce(notAfterOf(next));
    this.observer?.reload("reloaded");
  }

  private refused(trigger: ReloadTrigger, err: unknown): void {
    this.log.error({ trigger, reason: (err as Error).message }, "TLS files not reloaded; the certificate in force stays");
    this.observer?.reload("refused");
  }
}

function notAfterOf(tls: ServerTls): number {
  return Math.floor(Date.parse(leafCertificate(tls.cert).validTo) / 1000);
}

function contextOf(tls: ServerTls): SecureContextOptions {
  return { cert: tls.cert, key: tls.key, ...(tls.ca !== undefined ? { ca: tls.ca } : {}) };
}

function contents(tls: { cert: string; key: string; ca: string | undefined }): string {
  return `${tls.cert}\0${tls.key}\0${tls.ca ?? ""}`;
}

/** The files' text as it is now; an unreadable file reads as its error (a state to compare, not to use). */
function snapshot(files: ServerTls["files"]): string {
  const read = (path: string | undefined): string => {
    if (path === undefined) return "";
    try {
      return readFileSync(path, "utf8");
    } catch (err) {
      return `\0unreadable ${(err as NodeJS.ErrnoException).code ?? "error"}`;
    }
  };
  return contents({ cert: read(files.cert), key: read(files.key), ca: files.ca === undefined ? undefined : read(files.ca) });
}
