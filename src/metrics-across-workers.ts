import cluster, { type Worker } from "node:cluster";
import type { AggregatorRegistry, PrometheusContentType, Registry } from "prom-client";
import type { Logger } from "./log.js";

// With OTP_WORKERS > 1 every worker counts in its own registry, and
// node:cluster hands each scrape of /metrics to whichever worker accepts the
// connection: one worker's numbers, a different set each scrape, which
// Prometheus reads as counter resets. So the worker that gets a scrape asks
// the primary over the cluster IPC channel; the primary gathers every
// worker's registry (prom-client's AggregatorRegistry.clusterMetrics()) and
// answers with one text for the whole service. How each metric's per-worker
// values combine is its `aggregator` (sum unless metrics.ts says otherwise).
// In a single process (OTP_WORKERS=1) a scrape reads the local registry, with
// no IPC. Both ends are here, as in workers.ts.
//
// prom-client is imported when first needed: the primary only supervises
// and would otherwise carry it (~20 MiB of RSS) whether or not anyone scrapes.

/**
 * How long a worker waits for the primary's answer before answering 503.
 * prom-client's primary gives up on a worker that does not answer after 5 s
 * and says so; this bounds a primary that says nothing at all.
 */
const ANSWER_TIMEOUT_MS = 6_000;

type MetricsRequest = { otp: "metrics-request"; id: number };
type MetricsAnswer = { otp: "metrics-answer"; id: number; text?: string; error?: string };

/** The whole service's metrics could not be gathered: answer 503, never one worker's partial numbers. */
export class ServiceMetricsUnavailable extends Error {}

/**
 * The primary's own count, added to every answer: a worker that keeps dying is restarted by the primary,
 * so the pod's restart count stays 0 and nothing else would show it.
 */
export interface PrimaryCounts {
  workerRestarts(): number;
}

function primaryText(counts: PrimaryCounts): string {
  return [
    "# HELP otp_worker_restarts_total Workers the primary restarted after one died (OTP_WORKERS > 1).",
    "# TYPE otp_worker_restarts_total counter",
    `otp_worker_restarts_total ${counts.workerRestarts()}`,
    "",
  ].join("\n");
}

/** A registry's metrics as prom-client's getMetricsAsJSON() gives them (what workers send the primary). */
type RegistryJson = Awaited<ReturnType<Registry["getMetricsAsJSON"]>>;

// prom-client's reply from a worker to the primary's request (lib/cluster.js).
const METRICS_REPLY = "prom-client:getMetricsRes";
type MetricsReply = { type: typeof METRICS_REPLY; metrics?: RegistryJson[]; error?: string };
const COUNTS = new Set(["counter", "histogram"]);

/**
 * What workers that died had counted, so the service's counters never go back: summed with the
 * live workers' they were a worker's share of every counter, and dropped with it Prometheus read
 * a reset, and rate() added the survivors' lifetime totals as new (probe 22). Each worker's
 * metrics as of the last scrape are kept; when it exits, its counters and histograms (never its
 * gauges: those describe a process that is gone) join these, summed into one set. What it
 * counted after the last scrape is lost with it: an undercount, never a step back.
 */
class RetiredCounts {
  readonly #lastScraped = new Map<number, RegistryJson[]>();
  #retired: RegistryJson = [];
  #merging: Promise<void> = Promise.resolve();

  constructor(private readonly prom: typeof import("prom-client")) {
    cluster.on("message", (worker: Worker, message: MetricsReply | undefined) => {
      if (message?.type === METRICS_REPLY && message.metrics) this.#lastScraped.set(worker.id, message.metrics);
    });
    cluster.on("exit", (worker: Worker) => {
      const last = this.#lastScraped.get(worker.id);
      this.#lastScraped.delete(worker.id);
      if (!last) return;
      const counts = last.flatMap((registry) => registry.filter((m) => COUNTS.has(String(m.type))));
      this.#merging = this.#merging.then(async () => {
        this.#retired = await this.prom.AggregatorRegistry.aggregate([this.#retired, counts]).getMetricsAsJSON();
      });
    });
  }

  /** The live workers' metrics of the scrape that just ended (`text`), with the retired counts added in. */
  async withRetired(text: string): Promise<string> {
    await this.#merging;
    if (this.#retired.length === 0) return text;
    const live = [...this.#lastScraped.values()].flat();
    return this.prom.AggregatorRegistry.aggregate([...live, this.#retired]).metrics();
  }
}

/** In the primary: answer workers' requests for the whole service's metrics. */
export function answerMetricsRequests(log: Logger, counts: PrimaryCounts): void {
  let aggregator: Promise<{ registry: AggregatorRegistry<PrometheusContentType>; retired: RetiredCounts }> | undefined;
  const gathering = (): NonNullable<typeof aggregator> =>
    (aggregator ??= import("prom-client").then((prom) => ({ registry: new prom.AggregatorRegistry(), retired: new RetiredCounts(prom) })));
  cluster.on("message", (worker: Worker, message: MetricsRequest | undefined) => {
    if (message?.otp !== "metrics-request") return;
    const reply = (answer: Omit<MetricsAnswer, "otp" | "id">): void => {
      if (worker.isConnected()) worker.send({ otp: "metrics-answer", id: message.id, ...answer } satisfies MetricsAnswer);
    };
    gathering().then(({ registry, retired }) => registry.clusterMetrics().then((text) => retired.withRetired(text))).then(
      (text) => reply({ text: `${text.endsWith("\n") ? text : `${text}\n`}${primaryText(counts)}` }),
      (err: unknown) => {
        const reason = err instanceof Error ? err.message : String(err);
        log.warn({ reason }, "metrics not gathered from every worker; the scrape is answered 503");
        reply({ error: reason });
      },
    );
  });
}

let contributing = false;

/**
 * In a worker: the registries it contributes when the primary gathers metrics
 * (none until the service's registry exists, so a worker still starting
 * answers with nothing rather than keeping the primary waiting). No-op outside
 * a cluster.
 */
export async function contributeMetrics(registries: Registry[]): Promise<void> {
  if (!cluster.isWorker) return;
  const { AggregatorRegistry } = await import("prom-client");
  AggregatorRegistry.setRegistries(registries);
  if (contributing) return;
  contributing = true;
  // Constructing one is what makes prom-client answer the primary's requests in a worker.
  new AggregatorRegistry();
}

let nextId = 0;
const waiting = new Map<number, (answer: MetricsAnswer) => void>();

/** The text for a scrape: in a cluster worker, the whole service's (asked of the primary); otherwise this process's registry. */
export function serviceMetricsText(local: Registry): Promise<string> {
  if (!cluster.isWorker || !process.send) return local.metrics();
  if (waiting.size === 0) process.on("message", onAnswer);
  const id = nextId++;
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => settle({ otp: "metrics-answer", id, error: `the primary did not answer within ${ANSWER_TIMEOUT_MS} ms` }), ANSWER_TIMEOUT_MS);
    function settle(answer: MetricsAnswer): void {
      if (!waiting.delete(id)) return;
      clearTimeout(timer);
      if (waiting.size === 0) process.off("message", onAnswer);
      if (answer.text !== undefined) resolve(answer.text);
      else reject(new ServiceMetricsUnavailable(answer.error ?? "no answer"));
    }
    waiting.set(id, settle);
    const request: MetricsRequest = { otp: "metrics-request", id };
    process.send!(request, undefined, {}, (err: Error | null) => {
      if (err) settle({ otp: "metrics-answer", id, error: `the primary could not be asked: ${err.message}` });
    });
  });
}

function onAnswer(message: MetricsAnswer | undefined): void {
  if (message?.otp === "metrics-answer") waiting.get(message.id)?.(message);
}
