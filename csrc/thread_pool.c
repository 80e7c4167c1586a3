/* thread_pool.c: see thread_pool.h. One job at a time: its caller holds job_owner while workers take
 * chunks from a shared counter; which thread computes a chunk never changes the result. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity */
#endif
#include "thread_pool.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 64 /* workers are never reclaimed: keep what a huge num_threads can leave */
/* a worker's stack is at least this: a few-classes group takes up to about 90 KB of it (float16
 * rows of 48 classes with a softcap), most of musl's default of 128 KB (glibc's is 8 MB) */
#define WORKER_MIN_STACK_BYTES (1 << 20)

/* A thread that waits within a job (a worker for the prologue's end, the caller for the workers'
 * last chunks) checks for this long before it sleeps: a sleeping thread took 20-25 us to wake here
 * (a futex and an interrupt to an idle core of this VM), more than those waits usually last. Only
 * when the job has a CPU for each of its threads: else a spinning thread may hold the CPU of the
 * one it waits for. */
#define SPIN_NANOSECONDS 200000

static pthread_mutex_t job_owner = PTHREAD_MUTEX_INITIALIZER; /* held by the caller running a job */
static pthread_mutex_t state = PTHREAD_MUTEX_INITIALIZER;     /* guards everything below */
static pthread_cond_t job_posted = PTHREAD_COND_INITIALIZER;
static pthread_cond_t chunks_opened = PTHREAD_COND_INITIALIZER;
static pthread_cond_t job_finished = PTHREAD_COND_INITIALIZER;
static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;

static int n_started;           /* workers 1..n_started exist */
static uint64_t generation;     /* counts the jobs posted */
/* the two a waiting thread spins on: also read without the lock, atomically, by spin_until */
static int chunks_open;         /* the job's prologue is done: its chunks may start */
static int busy_helpers;        /* workers still on the current job */
static struct {
    pool_task task;
    pool_finish finish;
    void *context;
    int64_t n_chunks;
    int n_threads;
    int spins; /* its threads wait by spinning first (SPIN_NANOSECONDS) */
} job;
static int64_t next_chunk; /* taken with an atomic add */

static int64_t monotonic_nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static void pause_briefly(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* the CPUs this process may run on */
static int usable_cpus(void) {
#ifdef __linux__
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof cpus, &cpus) == 0) return CPU_COUNT(&cpus);
#endif
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)online : 1;
}

/* whether *value became wanted within SPIN_NANOSECONDS (at once, without job.spins) */
static int spin_until(const int *value, int wanted) {
    if (!job.spins) return __atomic_load_n(value, __ATOMIC_ACQUIRE) == wanted;
    const int64_t deadline = monotonic_nanoseconds() + SPIN_NANOSECONDS;
    do {
        for (int check = 0; check < 64; check++) {
            if (__atomic_load_n(value, __ATOMIC_ACQUIRE) == wanted) return 1;
            pause_briefly();
        }
    } while (monotonic_nanoseconds() < deadline);
    return 0;
}

static void run_chunks(int worker) {
    for (;;) {
        const int64_t chunk = __atomic_fetch_add(&next_chunk, 1, __ATOMIC_RELAXED);
        if (chunk >= job.n_chunks) return;
        job.task(job.context, worker, chunk);
    }
}

static void run_chunks_and_finish(int worker) {
    run_chunks(worker);
    if (job.finish) job.finish(job.context, worker);
}

static void *worker_main(void *argument) {
    const int worker = (int)(intptr_t)argument;
    uint64_t seen = 0;
    pthread_mutex_lock(&state);
    for (;;) {
        while (generation == seen) pthread_cond_wait(&job_posted, &state);
        seen = generation;
        if (worker >= job.n_threads) continue; /* not needed for this job */
        pthread_mutex_unlock(&state);
        if (!spin_until(&chunks_open, 1)) {
            pthread_mutex_lock(&state);
            while (!chunks_open) pthread_cond_wait(&chunks_opened, &state);
            pthread_mutex_unlock(&state);
        }
        run_chunks_and_finish(worker);
        pthread_mutex_lock(&state);
        if (__atomic_sub_fetch(&busy_helpers, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&job_finished);
    }
    return NULL;
}

/* the number of threads available for a job, starting workers as needed (fewer if creation fails) */
static int start_workers(int n_threads) {
    while (n_started < n_threads - 1) {
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        size_t stack_bytes = 0;
        if (pthread_attr_getstacksize(&attributes, &stack_bytes) == 0 && stack_bytes < WORKER_MIN_STACK_BYTES)
            pthread_attr_setstacksize(&attributes, WORKER_MIN_STACK_BYTES);
        const int failed = pthread_create(&thread, &attributes, worker_main, (void *)(intptr_t)(n_started + 1));
        pthread_attr_destroy(&attributes);
        if (failed) break;
        n_started++;
    }
    return n_started + 1 < n_threads ? n_started + 1 : n_threads;
}

/* fork: the child has none of the workers; it starts its own when it first needs them */
static void before_fork(void) {
    pthread_mutex_lock(&job_owner);
    pthread_mutex_lock(&state);
}

static void after_fork_in_parent(void) {
    pthread_mutex_unlock(&state);
    pthread_mutex_unlock(&job_owner);
}

static void after_fork_in_child(void) {
    n_started = 0;
    busy_helpers = 0;
    pthread_mutex_init(&state, NULL);
    pthread_mutex_init(&job_owner, NULL);
    pthread_cond_init(&job_posted, NULL);
    pthread_cond_init(&chunks_opened, NULL);
    pthread_cond_init(&job_finished, NULL);
}

static void install_fork_handlers(void) {
    pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

int pool_threads_for(int n_threads, int64_t n_chunks) {
    if (n_threads > n_chunks) n_threads = (int)n_chunks;
    if (n_threads > MAX_WORKERS) n_threads = MAX_WORKERS;
    return n_threads < 1 ? 1 : n_threads;
}

int pool_run_after(int n_threads, pool_prologue prologue, pool_task task, pool_finish finish, void *context,
                   int64_t n_chunks) {
    n_threads = pool_threads_for(n_threads, n_chunks);
    pthread_once(&fork_handlers_once, install_fork_handlers);
    if (n_threads <= 1 || pthread_mutex_trylock(&job_owner) != 0) {
        const int status = prologue ? prologue(context) : 0;
        for (int64_t chunk = 0; chunk < n_chunks && status == 0; chunk++) task(context, 0, chunk);
        if (finish) finish(context, 0);
        return status;
    }
    pthread_mutex_lock(&state);
    n_threads = start_workers(n_threads);
    job.task = task;
    job.finish = finish;
    job.context = context;
    job.n_chunks = n_chunks;
    job.n_threads = n_threads;
    job.spins = n_threads <= usable_cpus();
    next_chunk = 0;
    chunks_open = prologue == NULL;
    busy_helpers = n_threads - 1;
    generation++;
    pthread_cond_broadcast(&job_posted);
    pthread_mutex_unlock(&state);

    const int status = prologue ? prologue(context) : 0;
    if (prologue) {
        pthread_mutex_lock(&state);
        if (status != 0) job.n_chunks = 0;
        __atomic_store_n(&chunks_open, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&chunks_opened);
        pthread_mutex_unlock(&state);
    }
    run_chunks_and_finish(0);

    if (!spin_until(&busy_helpers, 0)) {
        pthread_mutex_lock(&state);
        while (busy_helpers > 0) pthread_cond_wait(&job_finished, &state);
        pthread_mutex_unlock(&state);
    }
    pthread_mutex_unlock(&job_owner);
    return status;
}

void pool_run(int n_threads, pool_task task, void *context, int64_t n_chunks) {
    pool_run_after(n_threads, NULL, task, NULL, context, n_chunks);
}
