// Text someone else wrote, shown in our answers, logs and events: cut short
// and made unable to pass for something else.
//
// Text the caller sent (a JSON key, a content type, a query parameter) is
// named back in refusals so they can see what was wrong, but cut short: it is
// their text, of any length, and an answer should not grow with it. And shown
// as text that cannot pass for something else: control, bidi and other format
// characters, lone surrogates, private-use and unassigned code points become
// U+FFFD (a key of "x\u202e\n..." must not rewrite an admin page's error line:
// probe 33), and the cut falls between code points, never inside a pair.
// A notifier's delivery status (its reason and adapter) goes the same way
// into logs and audit events (probe 41: a 1 MB reason made an audit event no
// broker would take).

const MAX_SHOWN = 64;
const UNSHOWABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]/gu;

export function shown(text: string, max = MAX_SHOWN): string {
  // Array.from of a megabyte is a megabyte of strings: look at a bounded prefix only.
  const points = Array.from(text.length > 2 * max + 2 ? text.slice(0, 2 * max + 2) : text);
  const cut = points.length > max ? `${points.slice(0, max).join("")}…` : text;
  return cut.replace(UNSHOWABLE, "\uFFFD");
}
