import { APIError, VigilError } from "./errors.js";

/** The API takes at most this many events in one batch. */
export const MAX_BATCH = 1000;

export type VigilEvent = Record<string, unknown> & { eventId: string };

export interface BatchStats {
  queued: number;
  sent: number;
  duplicates: number;
  rejected: number;
  dropped: number;
  retried: number;
}

export interface BatcherOptions {
  batchSize: number;
  lingerMs: number;
  maxQueue: number;
  retryPauseMs: number;
  onError?: (event: VigilEvent, error: Error) => void;
}

/**
 * Queues events and sends them in batches, one batch in flight at a time.
 * A batch leaves when `batchSize` events are queued or `lingerMs` after its
 * first event, whichever comes first. At most `maxQueue` events are held:
 * add() refuses more (counted as dropped) rather than grow without bound
 * while Vigil is away. Items the server did not store in time (`failed`)
 * and batches that could not be sent go back to the front and are retried
 * after a pause; items it refused (`rejected`) go to onError.
 */
export class Batcher {
  readonly stats: BatchStats = { queued: 0, sent: 0, duplicates: 0, rejected: 0, dropped: 0, retried: 0 };
  private q: VigilEvent[] = [];
  private inflight = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private sending: Promise<void> | undefined;
  private closed = false;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly send: (events: VigilEvent[], idempotencyKey: string) => Promise<unknown>,
    readonly opts: BatcherOptions,
  ) {
    opts.batchSize = Math.max(1, Math.min(opts.batchSize, MAX_BATCH));
  }

  add(event: VigilEvent): boolean {
    if (this.closed) throw new VigilError("vigil: client is closed");
    if (this.q.length + this.inflight >= this.opts.maxQueue) {
      this.stats.dropped++;
      return false;
    }
    this.q.push(event);
    this.stats.queued++;
    if (this.q.length >= this.opts.batchSize) this.kick();
    else this.arm(this.opts.lingerMs, true);
    return true;
  }

  pending(): number {
    return this.q.length + this.inflight;
  }

  /** Send everything queued now; true when it all left (stored or refused) in time. */
  async flush(timeoutMs?: number): Promise<boolean> {
    const done = new Promise<boolean>((resolve) => {
      if (this.pending() === 0) return resolve(true);
      this.waiters.push(() => resolve(true));
    });
    this.kick();
    if (timeoutMs === undefined) return done;
    let t: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((resolve) => (t = setTimeout(() => resolve(this.pending() === 0), timeoutMs)));
    try {
      return await Promise.race([done, late]);
    } finally {
      clearTimeout(t);
    }
  }

  async close(timeoutMs = 10_000): Promise<boolean> {
    const ok = await this.flush(timeoutMs);
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    return ok;
  }

  /** Schedules a send; ref'd for the linger (so events leave before exit), unref'd for retry pauses. */
  private arm(ms: number, ref: boolean): void {
    if (this.timer !== undefined || this.sending) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kick();
    }, ms);
    if (!ref) (this.timer as { unref?: () => void }).unref?.();
  }

  private kick(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.sending || this.closed) return;
    this.sending = this.drain().then((paused) => {
      this.sending = undefined;
      if (this.pending() === 0) this.settleWaiters();
      else if (paused) this.arm(this.opts.retryPauseMs, false);
      else if (this.q.length >= this.opts.batchSize || this.waiters.length > 0) this.kick();
      else this.arm(this.opts.lingerMs, true);
    });
  }

  private settleWaiters(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Sends full batches (all of the queue when flushing); true when it must pause. */
  private async drain(): Promise<boolean> {
    while (this.q.length > 0) {
      const batch = this.q.splice(0, this.opts.batchSize);
      this.inflight = batch.length;
      let pause = false;
      try {
        const res = await this.send(batch, randomId());
        pause = this.settle(batch, res);
      } catch (e) {
        if (e instanceof APIError) {
          // The whole batch was refused (bad request, forbidden…): retrying will not help.
          this.stats.rejected += batch.length;
          for (const ev of batch) this.report(ev, e);
        } else {
          this.putBack(batch);
          pause = true;
        }
      } finally {
        this.inflight = 0;
      }
      if (pause) return true;
      // A partial batch waits for its linger unless someone is flushing.
      if (this.q.length < this.opts.batchSize && this.waiters.length === 0) return false;
    }
    return false;
  }

  private putBack(items: VigilEvent[]): void {
    this.stats.retried += items.length;
    this.q.unshift(...items);
  }

  private settle(batch: VigilEvent[], res: unknown): boolean {
    const results = (res as { results?: unknown } | undefined)?.results;
    if (!Array.isArray(results)) {
      this.stats.sent += batch.length;
      return false;
    }
    const retry: VigilEvent[] = [];
    for (const r of results as Array<Record<string, unknown>>) {
      const i = r?.index;
      if (typeof i !== "number" || i < 0 || i >= batch.length) continue;
      const ev = batch[i];
      switch (r.status) {
        case "accepted":
          this.stats.sent++;
          break;
        case "duplicate":
          this.stats.duplicates++;
          break;
        case "failed":
          retry.push(ev);
          break;
        default: {
          this.stats.rejected++;
          const e = (r.error ?? {}) as { code?: string; message?: string; details?: [] };
          this.report(ev, new APIError(400, String(e.code ?? ""), String(e.message ?? "rejected"), e.details ?? []));
        }
      }
    }
    if (retry.length > 0) {
      this.putBack(retry);
      return true;
    }
    return false;
  }

  private report(ev: VigilEvent, err: Error): void {
    try {
      if (this.opts.onError) this.opts.onError(ev, err);
      else console.warn(`vigil: event ${ev.eventId} refused: ${err.message}`);
    } catch {
      // a callback's failure must not stop the sender
    }
  }
}

export function randomId(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  // RFC 4122 version 4 from Math.random: only where no Web Crypto exists.
  const h = Array.from({ length: 16 }, () => Math.floor(Math.random() * 256));
  h[6] = (h[6] & 0x0f) | 0x40;
  h[8] = (h[8] & 0x3f) | 0x80;
  const s = h.map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}
