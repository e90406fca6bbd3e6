#include "team.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

/* More parts than this run partly on the caller (the team never grows past it). */
#define FF_TEAM_MAX 256

static pthread_mutex_t team_in_use = PTHREAD_MUTEX_INITIALIZER;  /* one job at a time */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;         /* guards what follows */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t finished = PTHREAD_COND_INITIALIZER;
static int n_workers;                 /* team threads created so far: ids 1..n_workers */
static unsigned long generation;      /* bumped once per job */
static unsigned long born_at[FF_TEAM_MAX];  /* the generation a worker was created in */
static int pending;                   /* parts of the current job still running on workers */
static ff_task job;
static void *job_arg;
static int job_parts;                 /* the job's number of parts */
static int job_workers;               /* workers 1..job_workers each run the part of their id */

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    pthread_mutex_lock(&lock);
    unsigned long seen = born_at[id];
    for (;;) {
        while (generation == seen)
            pthread_cond_wait(&wake, &lock);
        seen = generation;
        if (id <= job_workers) {
            ff_task task = job;
            void *task_arg = job_arg;
            int count = job_parts;
            pthread_mutex_unlock(&lock);
            task(task_arg, id, count);
            pthread_mutex_lock(&lock);
            if (--pending == 0)
                pthread_cond_signal(&finished);
        }
    }
    return NULL;
}

/* Called with `lock` held. Returns how many workers exist afterwards. */
static int grow(int wanted)
{
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
    pending = on_team;
    generation++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);

    task(arg, 0, count);
    for (int i = on_team + 1; i < count; i++)  /* parts beyond the team's size */
        task(arg, i, count);

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
