import type { SecureContextOptions, Server } from "node:tls";
import { ChangedFiles, type ReloadTrigger } from "./changed-files.js";
import type { Logger } from "./log.js";
import { leafCertificate, readServerTls, type ServerTls } from "./tls-material.js";

// The listeners' certificate, key and client CA, kept in step with their
// files without a restart: cert-manager renews a certificate and kubelet
// swaps the Secret volume's files in every pod within a minute. When the files
// change (polled, or SIGHUP: ./changed-files.ts) they are checked as at
// start-up (src/tls-material.ts) and put in force on every listener
// (tls.Server#setSecureContext): new connections get the new certificate,
// open ones keep theirs. A set that does not check (a key that is not the
// certificate's, a file unreadable or cut short, a certificate expired or
// not valid yet) is refused with one error
// line and what is in force stays: a pod serving a still-valid certificate is
// better than one that cannot start.

/** What metrics see (src/metrics.ts): the certificate in force and each reload's outcome. */
export interface TlsObserver {
  /** The notAfter of the certificate new connections get, as Unix seconds. */
  inForce(notAfterSeconds: number): void;
  reload(outcome: "reloaded" | "refused"): void;
}

export class ServerCertificates {
  private inForce: ServerTls;
  private readonly servers = new Set<Server>();
  private readonly files: ChangedFiles;

  constructor(initial: ServerTls, private readonly log: Logger, private readonly observer?: TlsObserver) {
    this.inForce = initial;
    const { cert, key, ca } = initial.files;
    this.files = new ChangedFiles(
      ca === undefined ? [cert, key] : [cert, key, ca],
      (trigger) => this.load(trigger),
      (trigger, err, again) => {
        // ConfigError messages name the setting, never the contents; the files are named here (a key pair
        // that does not match said only the settings: probe 23).
        this.log.error({ trigger, reason: err.message, files: { TLS_CERT_FILE: cert, TLS_KEY_FILE: key, TLS_CA_FILE: ca } }, "TLS files not reloaded; the certificate in force stays");
        // The same refused files again (a SIGHUP with nothing changed): said, not counted twice (probe 76).
        if (!again) this.observer?.reload("refused");
      },
    );
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
    this.files.watch(intervalMs);
  }

  stop(): void {
    this.files.stop();
  }

  /** SIGHUP: read the files now; the outcome is logged whatever it is. */
  reload(): void {
    this.files.now();
  }

  /** Reads and checks the files and puts them in force; throws (a ConfigError naming the setting) to refuse them. */
  private load(trigger: ReloadTrigger): void {
    const next = readServerTls(this.inForce.files);
    if (contents(next) === contents(this.inForce)) {
      if (trigger === "SIGHUP") this.log.info({ trigger }, "TLS files unchanged; the certificate in force stays");
      return;
    }
    try {
      for (const server of this.servers) server.setSecureContext(contextOf(next));
    } catch (err) {
      // Not expected: readServerTls built a secure context from the same options.
      for (const server of this.servers) server.setSecureContext(contextOf(this.inForce));
      throw err;
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
