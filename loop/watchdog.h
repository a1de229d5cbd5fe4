/* loop/ — the blocking watchdog of one loop (internal).
 * Signal threshold: a per-thread POSIX timer (SIGEV_THREAD_ID, SIGALRM)
 * armed when an iteration starts its work, disarmed before polling.
 * Log threshold: each callback/handler/timeout is timed; a slow one is
 * logged with a backtrace taken while it still ran (same timer signal) and
 * again with its duration once it returns. */
#ifndef IOL_WATCHDOG_H
#define IOL_WATCHDOG_H

#include <stdbool.h>

typedef struct iol__watchdog iol__watchdog;

/* 0 or -ENOMEM. Creates no timer yet (that happens on the loop thread). */
int iol__watchdog_new(iol__watchdog **out);
void iol__watchdog_free(iol__watchdog *w);

/* Owner thread. seconds <= 0 disables. 0 or -errno (timer_create). */
int iol__watchdog_set_signal(iol__watchdog *w, double seconds, void (*action)(int signo));
int iol__watchdog_set_log(iol__watchdog *w, double seconds);
/* Cheap check the loop makes before calling the hooks below. */
bool iol__watchdog_enabled(const iol__watchdog *w);

/* Loop thread, around iol_loop_start (binds the timer to this thread). */
void iol__watchdog_thread_enter(iol__watchdog *w);
void iol__watchdog_thread_exit(iol__watchdog *w);
/* Loop thread: after poll returns / before poll starts. */
void iol__watchdog_iteration_begin(iol__watchdog *w);
void iol__watchdog_iteration_end(iol__watchdog *w);
/* Loop thread: around one callback, timeout or handler; fn is the function
 * about to run (named in the log message). */
void iol__watchdog_call_begin(iol__watchdog *w, const void *fn);
void iol__watchdog_call_end(iol__watchdog *w);

#endif
