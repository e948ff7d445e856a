import { createTransport, type NodemailerError, type Transporter } from "nodemailer";
import { DeliveryError, type ChannelAdapter, type OutgoingMessage } from "./types.js";

// Email through any SMTP server (nodemailer). Reply codes decide retrying:
// 5xx is a permanent refusal of this message (nodemailer's `permanent`),
// 4xx and connection trouble are worth another attempt.

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

  constructor(settings: SmtpSettings) {
    // Timeouts given in the URL's query win over these. The logger stays off:
    // nodemailer's logger would print recipients and bodies.
    const t = settings.timeoutMs;
    this.transport = createTransport(
      { url: settings.url, connectionTimeout: t, greetingTimeout: t, socketTimeout: t, logger: false, requireTLS: settings.requireTls },
      { from: settings.from },
    );
  }

  async send(m: OutgoingMessage, signal: AbortSignal): Promise<void> {
    try {
      await this.transport.sendMail({ to: m.destination, subject: m.subject, text: m.text, signal, headers: { "X-OTP-Event-Id": m.eventId } });
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const e = err as NodemailerError;
      // Only the numeric code or error class: the server's text may quote the address.
      // A failed STARTTLS is connection trouble (nodemailer calls a refused one permanent: its 5xx reply).
      if (e.code === "ETLS") throw new DeliveryError("smtp ETLS");
      if (e.responseCode) throw new DeliveryError(`smtp ${e.responseCode}`, e.permanent === true);
      throw new DeliveryError(`smtp ${e.code ?? "error"}`);
    }
  }

  async close(): Promise<void> {
    this.transport.close();
  }
}
