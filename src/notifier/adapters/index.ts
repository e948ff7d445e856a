import type { Logger } from "pino";
import type { AdapterName, NotifierConfig } from "../config.js";
import type { MessageChannel } from "../render.js";
import { ConsoleAdapter } from "./console.js";
import { SmtpAdapter } from "./smtp.js";
import type { ChannelAdapter } from "./types.js";
import { WebhookAdapter } from "./webhook.js";

export type AdapterSet = Record<MessageChannel, ChannelAdapter>;

/** One adapter per channel as configured; channels naming the same adapter share one instance (one SMTP pool). */
export function buildAdapters(config: NotifierConfig, logger: Logger, consoleOut?: (line: string) => void): AdapterSet {
  const built = new Map<AdapterName, ChannelAdapter>();
  const get = (name: AdapterName): ChannelAdapter => {
    let adapter = built.get(name);
    if (!adapter) {
      adapter = make(name, config, consoleOut);
      built.set(name, adapter);
    }
    return adapter;
  };
  const set: AdapterSet = { sms: get(config.adapters.sms), email: get(config.adapters.email) };
  if (built.has("console")) logger.warn("console adapter active: codes and destinations are printed to stdout (development only)");
  return set;
}

export async function closeAdapters(set: AdapterSet): Promise<void> {
  await Promise.all([...new Set(Object.values(set))].map((a) => a.close()));
}

function make(name: AdapterName, config: NotifierConfig, consoleOut?: (line: string) => void): ChannelAdapter {
  switch (name) {
    case "console":
      // Belt and braces: config refuses this already.
      if (config.production) throw new Error("the console adapter is refused in production");
      return new ConsoleAdapter(consoleOut);
    case "smtp":
      if (!config.smtp) throw new Error("smtp adapter selected without smtp settings");
      return new SmtpAdapter(config.smtp);
    case "webhook":
      if (!config.webhook) throw new Error("webhook adapter selected without webhook settings");
      return new WebhookAdapter(config.webhook);
  }
}
