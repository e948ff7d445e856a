// Text the caller sent (a JSON key, a content type, a query parameter) is
// named back in refusals so they can see what was wrong, but cut short: it is
// their text, of any length, and an answer should not grow with it.

const MAX_SHOWN = 64;

export function shown(text: string): string {
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}…` : text;
}
