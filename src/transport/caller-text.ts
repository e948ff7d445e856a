// Text the caller sent (a JSON key, a content type, a query parameter) is
// named back in refusals so they can see what was wrong, but cut short: it is
// their text, of any length, and an answer should not grow with it. And shown
// as text that cannot pass for something else: control, bidi and other format
// characters, lone surrogates, private-use and unassigned code points become
// U+FFFD (a key of "x\u202e\n..." must not rewrite an admin page's error line:
// probe 33), and the cut falls between code points, never inside a pair.

const MAX_SHOWN = 64;
const UNSHOWABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/gu;

export function shown(text: string): string {
  const points = Array.from(text);
  const cut = points.length > MAX_SHOWN ? `${points.slice(0, MAX_SHOWN).join("")}…` : text;
  return cut.replace(UNSHOWABLE, "\uFFFD");
}
