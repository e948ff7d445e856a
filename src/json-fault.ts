// JSON.parse's message quotes the text around the fault (`Unexpected token
// 'S', "{"id": SECRETR"... is not valid JSON`): in a request body that text
// can be a code, in a clients file a key. Only where the parse stopped is
// ever said, so a message built on these may go to a caller or a log.

/** " (at character N)" when V8's message says where, else ""; never the text. */
export function whereJsonStopped(err: unknown): string {
  const at = err instanceof Error ? /position (\d+)/.exec(err.message)?.[1] : undefined;
  return at === undefined ? "" : ` (at character ${at})`;
}

/**
 * What is wrong with a settings file that JSON.parse refused, and where (line and column), for the
 * operator who must fix it; never its text. V8 does not always give a position ("Unexpected token"
 * does not), so it is found here: every prefix of the text before the fault is a prefix of some JSON
 * (parsing it fails at its end, or succeeds), and every prefix past it fails before its end. Files only
 * (a few dozen parses of a small file): a request body is not parsed again.
 */
export function jsonFileFault(text: string, err: unknown): string {
  // Editors on Windows save one; "line 1, column 1" would send the operator looking at a `{` that is right.
  if (text.charCodeAt(0) === 0xfeff) return "it starts with a byte-order mark (save it as UTF-8 without one)";
  if (endedAt(err, text.length)) return "it ends before its JSON does";
  let [good, bad] = [0, text.length]; // text.slice(0, good) is not past the fault; text.slice(0, bad) is
  while (bad - good > 1) {
    const mid = (good + bad) >> 1;
    if (pastTheFault(text.slice(0, mid))) bad = mid;
    else good = mid;
  }
  const before = text.slice(0, bad - 1).split("\n");
  return `unexpected text at line ${before.length}, column ${before.at(-1)!.length + 1}`;
}

function pastTheFault(prefix: string): boolean {
  try {
    JSON.parse(prefix);
    return false;
  } catch (err) {
    return !endedAt(err, prefix.length);
  }
}

/** The parse failed only because the text ended ("Unexpected end of JSON input", or a position at its end). */
function endedAt(err: unknown, length: number): boolean {
  const message = err instanceof Error ? err.message : "";
  const at = /position (\d+)/.exec(message)?.[1];
  return /end of JSON input/.test(message) || (at !== undefined && Number(at) >= length);
}
