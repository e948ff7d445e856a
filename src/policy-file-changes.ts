import { ChangedFiles, type ReloadTrigger } from "./changed-files.js";
import { policyFileText, policyFromText, type Config } from "./config.js";
import type { Logger } from "./log.js";

// OTP_POLICY_FILE is read at start-up only: purposes shape what is already
// stored (a verification's attempts and lifetime, the budgets its sends
// spent), and every pod must answer alike, so a policy takes effect by a
// rolling restart, never pod by pod as each one notices a file. What an
// operator must not be left to guess (probe 65: an edit and a SIGHUP did
// nothing, silently, and a bad edit showed only when new pods would not
// start) is said as soon as the file changes, polled as the clients file is,
// or on SIGHUP: that it changed and needs a restart, or that it no longer
// checks and a new process would refuse to start, naming what is wrong.

/** What the file on disk is to the policy in force: the same, changed (in force after a restart), or refused (a new process would not start). */
export type PolicyFileState = "as-in-force" | "changed" | "refused";

export function watchPolicyFile(config: Config, log: Logger, intervalMs: number, observe?: (state: PolicyFileState) => void): ChangedFiles | undefined {
  const path = config.policyFile;
  if (path === undefined) return undefined;
  const named = { setting: "OTP_POLICY_FILE", path };
  // Whether the last line said the file differs from the policy in force (so its undoing is said too).
  let differs = false;
  const check = (trigger: ReloadTrigger): void => {
    const text = policyFileText(path);
    if (text === config.policyText) {
      if (trigger === "SIGHUP" || differs) log.info({ trigger, ...named }, "policy file as at start-up: the policy in force is the file's");
      differs = false;
      observe?.("as-in-force");
      return;
    }
    differs = true;
    policyFromText(path, text, config.defaults);
    log.warn({ trigger, ...named }, "policy file changed: it is read at start-up only, so the policy in force stays until a restart (a rolling restart puts it in force)");
    observe?.("changed");
  };
  const files = new ChangedFiles([path], check, (trigger, err) => {
    log.error({ trigger, ...named, err: err.message }, "policy file changed and does not check: a new process would refuse to start; the policy in force stays");
    observe?.("refused");
  }, config.policyText);
  observe?.("as-in-force");
  files.watch(intervalMs);
  return files;
}
