// `npm run settings:known`: rewrites src/known-settings.ts from the settings the
// code reads (the scan test/docs/settings.test.ts also uses).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KNOWN_SETTINGS_FILE, knownSettingsSource, repoRoot } from '../test/support/settings.js';

writeFileSync(join(repoRoot, KNOWN_SETTINGS_FILE), knownSettingsSource());
process.stdout.write(`${KNOWN_SETTINGS_FILE} written\n`);
