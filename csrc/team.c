#include "team.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

/* More parts than this run partly on the caller (the team never grows past it). */
#define FF_TEAM_MAX 256

/* After a job, a worker watches for the next one this long before it sleeps,
 * and the caller watches for the workers' parts this long before it sleeps.
 * A step hands the team one product after another, microseconds apart, and
 * waking a sleeping thread takes tens of microseconds; 50 us of watching is
 * a fraction of a percent of a core once a fit ends. */
#define FF_SPIN_NS 50000LL

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Tell the core it is spinning (frees the pipeline for the other hyper-thread). */
static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Watch *word (read atomically, without the lock) while it equals `value`, for at
 * most FF_SPIN_NS. The caller then takes the lock and checks again, so a change
 * that comes later is still seen: watching only saves the sleep and the wake-up. */
static void watch_while_equal(const unsigned long *word, unsigned long value)
{
    long long until = now_ns() + FF_SPIN_NS;
    while (__atomic_load_n(word, __ATOMIC_ACQUIRE) == value && now_ns() < until)
        cpu_relax();
}

/* The same, while *word is not zero. */
static void watch_while_nonzero(const unsigned long *word)
{
    long long until = now_ns() + FF_SPIN_NS;
    while (__atomic_load_n(word, __ATOMIC_ACQUIRE) != 0 && now_ns() < until)
        cpu_relax();
}

static pthread_mutex_t team_in_use = PTHREAD_MUTEX_INITIALIZER;  /* one job at a time */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;         /* guards what follows */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t finished = PTHREAD_COND_INITIALIZER;
static int n_workers;                 /* team threads created so far: ids 1..n_workers */
static unsigned long generation;      /* bumped once per job (read without the lock while watching) */
static unsigned long born_at[FF_TEAM_MAX];  /* the generation a worker was created in */
static unsigned long pending;         /* parts of the current job still running on workers */
static ff_task job;
static void *job_arg;
static int job_parts;                 /* the job's number of parts */
static int job_workers;               /* workers 1..job_workers each run the part of their id */

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    pthread_mutex_lock(&lock);
    unsigned long seen = born_at[id];
    int worked = 0;  /* only a worker that had a part in the last job watches for the next */
    for (;;) {
        if (worked && generation == seen) {
            pthread_mutex_unlock(&lock);
            watch_while_equal(&generation, seen);
            pthread_mutex_lock(&lock);
        }
        while (generation == seen)
            pthread_cond_wait(&wake, &lock);
        seen = generation;
        worked = id <= job_workers;
        if (worked) {
            ff_task task = job;
            void *task_arg = job_arg;
            int count = job_parts;
            pthread_mutex_unlock(&lock);
            task(task_arg, id, count);
            pthread_mutex_lock(&lock);
            if (__atomic_sub_fetch(&pending, 1, __ATOMIC_ACQ_REL) == 0)
                pthread_cond_signal(&finished);
        }
    }
    return NULL;
}

/* Called with `lock` held. Returns how many workers exist afterwards. */
static int grow(int wanted)
{
    if (n_workers >= wanted || n_workers >= FF_TEAM_MAX - 1)
        return n_workers;  /* the usual case: no signal-mask system calls while holding the lock */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);  /* new threads inherit a full mask */
    while (n_workers < wanted && n_workers < FF_TEAM_MAX - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        int id = n_workers + 1;
        born_at[id] = generation;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, worker, (void *)(intptr_t)id);
        pthread_attr_destroy(&attr);
        if (failed)
            break;  /* the caller runs the parts no worker could take */
        n_workers = id;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return n_workers;
}

static void run_alone(ff_task task, void *arg, int count)
{
    for (int i = 0; i < count; i++)
        task(arg, i, count);
}

void ff_team_run(ff_task task, void *arg, int count)
{
    if (count <= 1 || pthread_mutex_trylock(&team_in_use) != 0) {
        run_alone(task, arg, count);
        return;
    }
    pthread_mutex_lock(&lock);
    int workers = grow(count - 1);
    int on_team = workers < count - 1 ? workers : count - 1;
    job = task;
    job_arg = arg;
    job_parts = count;
    job_workers = on_team;
    __atomic_store_n(&pending, (unsigned long)on_team, __ATOMIC_RELEASE);
    __atomic_store_n(&generation, generation + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);

    task(arg, 0, count);
    for (int i = on_team + 1; i < count; i++)  /* parts beyond the team's size */
        task(arg, i, count);

    watch_while_nonzero(&pending);  /* the workers' parts end about when part 0 does */
    pthread_mutex_lock(&lock);
    while (pending > 0)
        pthread_cond_wait(&finished, &lock);
    job_workers = 0;
    pthread_mutex_unlock(&lock);
    pthread_mutex_unlock(&team_in_use);
}

int ff_team_size(void)
{
    pthread_mutex_lock(&lock);
    int n = n_workers;
    pthread_mutex_unlock(&lock);
    return n;
}

/* A forked child has none of the parent's threads: start it with an empty team. */
static void after_fork_in_child(void)
{
    pthread_mutex_init(&team_in_use, NULL);
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&wake, NULL);
    pthread_cond_init(&finished, NULL);
    n_workers = 0;
    pending = 0;
    job_workers = 0;
}

__attribute__((constructor)) static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, after_fork_in_child);
}
