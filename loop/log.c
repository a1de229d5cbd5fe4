#include "loop/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* Logging is rare, so a mutex keeps (fn, ud) consistent for readers. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static void (*log_fn)(int level, const char *msg, void *ud);
static void *log_ud;

static const char *level_name(int level)
{
    switch (level) {
    case IOL_LOG_DEBUG: return "DEBUG";
    case IOL_LOG_INFO: return "INFO";
    case IOL_LOG_WARNING: return "WARNING";
    default: return "ERROR";
    }
}

void iol_set_log_handler(void (*fn)(int level, const char *msg, void *ud), void *ud)
{
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_ud = ud;
    pthread_mutex_unlock(&log_lock);
}

bool iol__log_is_default(void)
{
    pthread_mutex_lock(&log_lock);
    bool dflt = log_fn == NULL;
    pthread_mutex_unlock(&log_lock);
    return dflt;
}

void iol__log(int level, const char *fmt, ...)
{
    pthread_mutex_lock(&log_lock);
    void (*fn)(int, const char *, void *) = log_fn;
    void *ud = log_ud;
    pthread_mutex_unlock(&log_lock);
    if (!fn && level < IOL_LOG_WARNING)
        return;

    char small[512];
    char *msg = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof small) {
        /* Long messages (backtraces) get a heap buffer; on failure the
         * truncated text is still better than nothing. */
        char *big = malloc((size_t)n + 1);
        if (big) {
            va_start(ap, fmt);
            vsnprintf(big, (size_t)n + 1, fmt, ap);
            va_end(ap);
            msg = big;
        }
    }
    if (fn)
        fn(level, msg, ud);
    else
        fprintf(stderr, "ioloop %s: %s\n", level_name(level), msg);
    if (msg != small)
        free(msg);
}
