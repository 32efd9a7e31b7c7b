/** The API takes at most this many events in one batch. */
export declare const MAX_BATCH = 1000;
export type VigilEvent = Record<string, unknown> & {
    eventId: string;
};
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
export declare class Batcher {
    private readonly send;
    readonly opts: BatcherOptions;
    readonly stats: BatchStats;
    private q;
    private inflight;
    private timer;
    private sending;
    private closed;
    private waiters;
    constructor(send: (events: VigilEvent[], idempotencyKey: string) => Promise<unknown>, opts: BatcherOptions);
    add(event: VigilEvent): boolean;
    pending(): number;
    /** Send everything queued now; true when it all left (stored or refused) in time. */
    flush(timeoutMs?: number): Promise<boolean>;
    close(timeoutMs?: number): Promise<boolean>;
    /** Schedules a send; ref'd for the linger (so events leave before exit), unref'd for retry pauses. */
    private arm;
    private kick;
    private settleWaiters;
    /** Sends full batches (all of the queue when flushing); true when it must pause. */
    private drain;
    private putBack;
    private settle;
    private report;
}
export declare function randomId(): string;
