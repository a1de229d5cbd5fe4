/* bench/ — what a server process tree costs: CPU time and resident memory
 * summed over every process of one process group (a server started by
 * compare runs in its own group, nginx's workers included), read from
 * /proc. */
#ifndef IOL_BENCH_PROCTREE_H
#define IOL_BENCH_PROCTREE_H

#include <stdint.h>
#include <sys/types.h>

typedef struct proctree_usage {
    double cpu_ms;    /* user + system, every process of the group */
    double rss_kib;   /* resident set, every process of the group */
    unsigned procs;
} proctree_usage;

/* 0, or -ESRCH when no process of group pgid exists. */
int proctree_read(pid_t pgid, proctree_usage *out);

#endif
