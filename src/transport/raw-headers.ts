// Both listeners read headers through node, which keeps only the first of a
// repeated `authorization` (HTTP/1.1 and HTTP/2 alike): the raw name/value
// list is the one place every value is still there.

/** Every value of header `name` (lower case) in a raw name/value list, in order. */
export function headerValues(raw: readonly string[], name: string): string[] {
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) values.push(raw[i + 1]!);
  return values;
}
