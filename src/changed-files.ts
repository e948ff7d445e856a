import { readRegularFile, unreadableBecause } from "./regular-file.js";

// Files read at start-up that the service reloads without a restart (the
// listeners' TLS files, OTP_CLIENTS_FILE): kubelet updates a Secret volume in
// every pod within a minute (a new directory, then an atomic rename of the
// `..data` symlink the file names point through), and an operator may edit a
// file in place. Every OTP_RELOAD_CHECK_MS the files are read again by name
// (so a symlink swap is followed; fs.watch loses the files a swap replaces)
// and, when their contents differ from those last acted on, `load` runs; it
// throws to refuse them (what is in force stays). A refusal found by polling
// is reported only when the next poll finds the same contents again: kubelet's
// swap and a `cp` of two files each pass through a moment where a pair does
// not match or a file is cut short. Files refused at every poll, though their
// contents change each time (something rewriting them), are reported at the
// third such poll: no update takes that long to pass through. SIGHUP loads and
// reports at once.

/** Polls in a row refusing contents that changed each time, after which the refusal is reported anyway. */
const REPORT_AFTER_REFUSED_POLLS = 3;

export type ReloadTrigger = "SIGHUP" | "file change";

export class ChangedFiles {
  /** The files' contents as last acted on (loaded, or reported as refused). */
  private seen: string;
  /** Contents refused once by a poll: reported if the next poll finds them again. */
  private failedOnce: string | undefined;
  /** Polls in a row that found changed contents and refused them, none reported. */
  private refusedPolls = 0;
  /** The contents last reported as refused, while they are what was last acted on. */
  private refusedContents: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  /**
   * `startedWith`: the text the process acted on at start-up, when it read the files itself (one file:
   * its text); by default they are read now. Given, a change between start-up's reading and this moment
   * (the Redis and Kafka connections come between) is found by the first poll, not missed until the next.
   */
  constructor(
    private readonly paths: readonly string[],
    private readonly load: (trigger: ReloadTrigger) => void,
    /** `again`: these same contents were reported refused before (a SIGHUP with nothing changed): said again, not a new refusal to count. */
    private readonly refused: (trigger: ReloadTrigger, err: Error, again: boolean) => void,
    startedWith?: string,
  ) {
    this.seen = startedWith ?? snapshot(paths);
  }

  /** Polls every `intervalMs` (0: never; SIGHUP only). */
  watch(intervalMs: number): void {
    if (intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => this.poll(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** SIGHUP: load now, and report a refusal at once. */
  now(): void {
    this.failedOnce = undefined;
    this.attempt("SIGHUP", snapshot(this.paths), true);
  }

  /**
   * The files were acted on elsewhere (a reload the caller did itself); `actedOn`: the text it read (one
   * file). Read again here instead, a change between its reading and this one would count as acted on
   * and never be loaded (probe 68: a revoked key stayed accepted after a SIGHUP raced an edit).
   */
  settled(actedOn?: string): void {
    this.#actedOn(actedOn ?? snapshot(this.paths));
  }

  private poll(): void {
    const read = snapshot(this.paths);
    if (read === this.seen) {
      // Back at what was acted on (a refused edit undone): the refusals before it are no longer "in a row".
      this.failedOnce = undefined;
      this.refusedPolls = 0;
      return;
    }
    this.attempt("file change", read, read === this.failedOnce || this.refusedPolls + 1 >= REPORT_AFTER_REFUSED_POLLS);
  }

  private attempt(trigger: ReloadTrigger, read: string, report: boolean): void {
    try {
      this.load(trigger);
    } catch (err) {
      if (!report) {
        this.failedOnce = read;
        this.refusedPolls++;
        return;
      }
      const again = read === this.refusedContents;
      this.#actedOn(read);
      this.refusedContents = read;
      this.refused(trigger, err as Error, again);
      return;
    }
    this.#actedOn(read);
  }

  #actedOn(read: string): void {
    this.seen = read;
    this.failedOnce = undefined;
    this.refusedPolls = 0;
    this.refusedContents = undefined;
  }
}

/** The files' text as it is now; an unreadable file reads as its error (a state to compare, not to use). */
function snapshot(paths: readonly string[]): string {
  return paths
    .map((path) => {
      try {
        return readRegularFile(path);
      } catch (err) {
        return `\0unreadable ${unreadableBecause(err)}`;
      }
    })
    .join("\0");
}
