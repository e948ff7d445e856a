// What loadConfig says when it refuses an environment (a ConfigError's message); fails the test if it accepts it.
import { expect } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';

export function configRefusal(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('config was accepted');
}
