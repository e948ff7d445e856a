import { createTransport, type NodemailerError, type Transporter } from "nodemailer";
import { DeliveryError, type ChannelAdapter, type OutgoingMessage } from "./types.js";

// Email through any SMTP server (nodemailer). Reply codes decide retrying:
// 5xx is a permanent refusal of this message (nodemailer's `permanent`),
// 4xx and connection trouble are worth another attempt.
// A failure with no reply (the connection lost or silent) may come after the
// server had the whole message: SMTP cannot tell "lost after the final dot"
// from "delivered" (RFC 1047). Unless it came before anything could be sent
// (no connection, no greeting, TLS or login refused), it may have arrived, and
// is never reported FAILED, which would void a code the person may hold
// (probe 91: a message received whole, three times, then its code voided). A
// connection lost before the greeting or during the envelope counts as such
// too: nodemailer reports it as it does one lost after the final dot.

// Failures that leave no doubt nothing was sent: nodemailer's codes, and the system's under ECONNECTION / ESOCKET.
const NOT_SENT_CODES = new Set(["EDNS", "ETLS", "EAUTH", "ENOAUTH", "EENVELOPE", "ECONFIG", "EPROTOCOL"]);
const NOT_CONNECTED = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL"]);
// Connecting, the greeting, and the STARTTLS upgrade (nodemailer bounds it by what is left of the connect time).
const BEFORE_GREETING = new Set(["CONNECT_TIMEOUT", "GREETING_TIMEOUT", "UPGRADE_TIMEOUT"]);
// The server's certificate refused (smtps:// or STARTTLS): only a handshake checks one, so nothing was sent
// (probe 93: an expired certificate made every email "may have arrived"). Not other TLS errors: a bad record
// can come after the final dot as well as before (probe 96).
const CERTIFICATE_REFUSED = /CERT|SIGNATURE|ISSUER|^ERR_TLS_CERT_ALTNAME_INVALID$/;

function notSent(e: { code?: string; originalCode?: string; timeoutType?: string }): boolean {
  return (
    NOT_SENT_CODES.has(e.code ?? "") ||
    NOT_CONNECTED.has(e.originalCode ?? "") ||
    BEFORE_GREETING.has(e.timeoutType ?? "") ||
    (e.code === "ESOCKET" && CERTIFICATE_REFUSED.test(e.originalCode ?? ""))
  );
}

export interface SmtpSettings {
  /** smtp://user:pass@host:port or smtps://... (nodemailer's URL options apply). */
  url: string;
  from: string;
  timeoutMs: number;
  /** smtp:// only after STARTTLS (never in clear when the server does not offer it, or someone strips it). */
  requireTls: boolean;
}

export class SmtpAdapter implements ChannelAdapter {
  readonly name = "smtp" as const;
  private readonly transport: Transporter;
  private readonly timeoutMs: number;

  constructor(settings: SmtpSettings) {
    this.timeoutMs = settings.timeoutMs;
    // Timeouts given in the URL's query win over these. The logger stays off:
    // nodemailer's logger would print recipients and bodies.
    // Connecting and the greeting within 80% of the timeout: a server that never greets is told apart
    // (nothing sent) before the whole attempt's limit, which says "may have arrived" (probe 93: with the
    // same time, the limit came first), and a greeting held back for seconds, as Postfix's postscreen
    // does, still leaves the rest its time (probe 96: with half, a greeting at 6 s of 10 failed).
    const t = settings.timeoutMs;
    const setup = Math.max(1, Math.floor(t * 0.8));
    this.transport = createTransport(
      { url: settings.url, connectionTimeout: setup, greetingTimeout: setup, socketTimeout: t, logger: false, requireTLS: settings.requireTls },
      { from: settings.from },
    );
  }

  async send(m: OutgoingMessage, signal: AbortSignal): Promise<void> {
    // The whole attempt within the timeout: nodemailer's own timeouts are per phase and idle time, so a
    // server answering a line every few seconds held one attempt (its claim, its slot) for as long as it
    // liked (probe 91: 30 s against a 10 s setting).
    const limit = AbortSignal.timeout(this.timeoutMs);
    try {
      await this.transport.sendMail({ to: m.destination, subject: m.subject, text: m.text, signal: AbortSignal.any([signal, limit]), headers: { "X-OTP-Event-Id": m.eventId } });
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      // Given up part-way: the message may be with the server already.
      if (limit.aborted) throw new DeliveryError("smtp timeout", false, true);
      const e = err as NodemailerError & { originalCode?: string; timeoutType?: string };
      // Only the numeric code or error class: the server's text may quote the address.
      // A failed STARTTLS is connection trouble (nodemailer calls a refused one permanent: its 5xx reply).
      if (e.code === "ETLS") throw new DeliveryError("smtp ETLS");
      if (e.responseCode) throw new DeliveryError(`smtp ${e.responseCode}`, e.permanent === true);
      throw new DeliveryError(`smtp ${e.code ?? "error"}`, false, !notSent(e));
    }
  }

  async close(): Promise<void> {
    this.transport.close();
  }
}
