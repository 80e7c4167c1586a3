/* thread_pool.h: one persistent pool of worker threads, started on first use and kept for the life of
 * the process (re-started in a forked child), that runs the chunks of one job at a time. */
#ifndef THREAD_POOL_H
#define THREAD_POOL_H

#include <stdint.h>

typedef void (*pool_task)(void *context, int worker, int64_t chunk);
typedef int (*pool_prologue)(void *context);
typedef void (*pool_finish)(void *context, int worker);

/* Runs task(context, worker, chunk) for every chunk in [0, n_chunks) on up to n_threads threads, the
 * calling thread being worker 0; worker (< n_threads) tells a thread's own scratch space apart. Returns
 * when every chunk is done. A caller that finds the pool busy with another caller's job runs all its
 * chunks itself, so concurrent callers never wait for each other. */
void pool_run(int n_threads, pool_task task, void *context, int64_t n_chunks);

/* pool_run, with prologue(context) run first on the calling thread while the workers wake (which
 * takes them tens of microseconds), before any chunk starts: the serial set-up of a job costs nothing
 * then. A prologue that returns nonzero cancels the chunks; pool_run_after returns what it returned.
 * finish(context, worker), if not NULL, runs on every thread of the job after its last chunk (also
 * when it had none): what a worker's chunks left to do, before the job is reported done. */
int pool_run_after(int n_threads, pool_prologue prologue, pool_task task, pool_finish finish, void *context,
                   int64_t n_chunks);

/* How many threads pool_run would use for n_chunks chunks when asked for n_threads (at most). */
int pool_threads_for(int n_threads, int64_t n_chunks);

#endif
