/* bench/ — process-group CPU and RSS from /proc (see proctree.h). */
#include "bench/proctree.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Fields of /proc/PID/stat after the command (which may hold spaces and
 * parentheses, hence the last ')'): state is field 3, pgrp 5, utime 14,
 * stime 15, rss 24 (pages). */
static int read_stat(const char *pid, long *pgrp, double *cpu_ticks, long *rss_pages)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long utime, stime;
    long rss;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     * cutime cstime priority nice threads itrealvalue starttime vsize rss */
    if (sscanf(p + 2, "%*c %*d %ld %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u %*u %ld",
               pgrp, &utime, &stime, &rss) != 4)
        return -1;
    *cpu_ticks = (double)utime + (double)stime;
    *rss_pages = rss;
    return 0;
}

int proctree_read(pid_t pgid, proctree_usage *out)
{
    static long ticks, page;
    if (!ticks) {
        ticks = sysconf(_SC_CLK_TCK);
        page = sysconf(_SC_PAGESIZE);
    }
    *out = (proctree_usage){0};
    DIR *d = opendir("/proc");
    if (!d)
        return -errno;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        long pgrp, rss;
        double cpu;
        if (read_stat(e->d_name, &pgrp, &cpu, &rss) < 0 || pgrp != pgid)
            continue;
        out->cpu_ms += cpu * 1000.0 / (double)ticks;
        out->rss_kib += (double)rss * (double)page / 1024.0;
        out->procs++;
    }
    closedir(d);
    return out->procs ? 0 : -ESRCH;
}
