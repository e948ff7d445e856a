import { randomInt } from "node:crypto";

export type CodeAlphabet = "numeric" | "alphanumeric";

// Alphanumeric codes leave out characters people confuse when reading or
// typing them: 0/O, 1/I/L, and U/V. Codes are compared upper-cased.
const ALPHABETS: Record<CodeAlphabet, string> = {
  numeric: "0123456789",
  alphanumeric: "23456789ABCDEFGHJKMNPQRSTWXYZ",
};

/** A fresh code. crypto.randomInt draws uniformly (rejection sampling), so there is no modulo bias. */
export function generateCode(length: number, alphabet: CodeAlphabet): string {
  const chars = ALPHABETS[alphabet];
  let code = "";
  for (let i = 0; i < length; i++) code += chars[randomInt(chars.length)];
  return code;
}

/** The form a typed code is compared in, or null when it cannot be a code of this alphabet. */
export function canonicalCode(typed: string, alphabet: CodeAlphabet): string | null {
  const code = alphabet === "alphanumeric" ? typed.toUpperCase() : typed;
  for (const ch of code) if (!ALPHABETS[alphabet].includes(ch)) return null;
  return code;
}
