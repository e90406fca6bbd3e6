/* fastfit's own thread team.
 *
 * Workers are created on first use, block all signals (Ctrl-C reaches the
 * Python thread), watch for the next job for 50 us after each one (a step's
 * products follow each other microseconds apart) and then sleep on a
 * condition variable: an idle team never spins, so it never takes a core from
 * BLAS or from another library, and nothing process-wide (no environment
 * variable, no other runtime's settings) is touched. One job runs at a time; a caller that finds
 * the team busy (another fit in another Python thread) runs its job's parts
 * itself, one after the other, which gives the same results. */
#ifndef FASTFIT_TEAM_H
#define FASTFIT_TEAM_H

/* Part `index` of `count` parts of a job. */
typedef void (*ff_task)(void *arg, int index, int count);

/* Run task(arg, i, count) for every i in [0, count): part 0 on the calling
 * thread, the others on team threads; returns when every part is done. */
void ff_team_run(ff_task task, void *arg, int count);

/* The number of team threads that exist now (for tests and show_config). */
int ff_team_size(void);

#endif
