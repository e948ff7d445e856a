// The words around a code: one short message per channel and locale. SMS is
// a single sentence (it must fit one segment with any purpose name); email
// gets a subject and a plain-text body. Unknown locales fall back to English.

export type MessageChannel = "sms" | "email";

export interface RenderInput {
  channel: MessageChannel;
  purpose: string;
  code: string;
  /** BCP 47 tag as the caller sent it ("de", "de-AT", "en_GB", ""). */
  locale: string;
  /** Unknown (0 or undefined): the expiry sentence is left out. */
  expiresAtMs: number | undefined;
  nowMs: number;
}

export interface Rendered {
  /** Email only. */
  subject: string | undefined;
  text: string;
}

interface Words {
  /** `purpose` undefined: no purpose named (NOTIFIER_PURPOSE_NAMES), the language's own generic words. */
  codeIs(purpose: string | undefined, code: string): string;
  expiresIn(minutes: number): string;
  subject(purpose: string | undefined): string;
  ignore: string;
}

const WORDS: Record<string, Words> = {
  en: {
    codeIs: (p, c) => `Your ${p ?? "verification"} code is ${c}.`,
    expiresIn: (m) => `It expires in ${m} ${m === 1 ? "minute" : "minutes"}.`,
    subject: (p) => `Your ${p ?? "verification"} code`,
    ignore: "If you did not ask for this code, ignore this message. Never share it with anyone.",
  },
  de: {
    codeIs: (p, c) => (p === undefined ? `Ihr Bestätigungscode lautet ${c}.` : `Ihr Code für ${p} lautet ${c}.`),
    expiresIn: (m) => `Er ist ${m} ${m === 1 ? "Minute" : "Minuten"} gültig.`,
    subject: (p) => (p === undefined ? "Ihr Bestätigungscode" : `Ihr Code für ${p}`),
    ignore: "Wenn Sie diesen Code nicht angefordert haben, ignorieren Sie diese Nachricht. Geben Sie ihn niemals weiter.",
  },
};

export const LOCALES = Object.keys(WORDS);

/** The language we have words for: "de-AT" → "de", anything unknown → "en". */
export function languageOf(locale: string): string {
  const primary = locale.trim().toLowerCase().split(/[-_]/)[0] ?? "";
  return Object.hasOwn(WORDS, primary) ? primary : "en";
}

/** Purpose names are identifiers ("password_reset"); people read "password reset". Undefined: none to name. */
export function purposeLabel(purpose: string): string | undefined {
  return purpose.replace(/[_.-]+/g, " ").trim() || undefined;
}

export function render(input: RenderInput): Rendered {
  const words = WORDS[languageOf(input.locale)]!;
  const purpose = purposeLabel(input.purpose);
  const sentences = [words.codeIs(purpose, input.code)];
  if (input.expiresAtMs && input.expiresAtMs > 0) {
    // Rounded up: "expires in 0 minutes" would read as already expired.
    const minutes = Math.max(1, Math.ceil((input.expiresAtMs - input.nowMs) / 60_000));
    sentences.push(words.expiresIn(minutes));
  }
  if (input.channel === "sms") return { subject: undefined, text: sentences.join(" ") };
  return { subject: words.subject(purpose), text: `${sentences.join("\n\n")}\n\n${words.ignore}\n` };
}
