import { messageJson } from "./message-json.js";
import type { ChannelAdapter, OutgoingMessage } from "./types.js";

/**
 * The dev path: one JSON line per delivery on stdout, with `destination` and
 * `code` in clear, so a developer can log in with no SMS or mail provider.
 * Config refuses it in production. It writes with process.stdout directly
 * because the logger redacts exactly these fields.
 */
export class ConsoleAdapter implements ChannelAdapter {
  readonly name = "console" as const;

  constructor(private readonly out: (line: string) => void = (line) => process.stdout.write(line + "\n")) {}

  async send(m: OutgoingMessage): Promise<void> {
    this.out(
      JSON.stringify({
        level: "info",
        time: Date.now(),
        msg: "delivery (console adapter; not for production)",
        adapter: "console",
        ...messageJson(m),
      }),
    );
  }

  async close(): Promise<void> {}
}
