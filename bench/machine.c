/* iol-bench — what machine a figure came from, for the JSON "machine". */
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench/bench.h"

void bench_machine_read(bench_machine *m)
{
    snprintf(m->cpu, sizeof m->cpu, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            /* x86 says "model name", some arm kernels only "Hardware"/"CPU part". */
            if (strncmp(line, "model name", 10) != 0)
                continue;
            char *colon = strchr(line, ':');
            if (!colon)
                continue;
            colon++;
            while (*colon == ' ' || *colon == '\t')
                colon++;
            colon[strcspn(colon, "\n")] = '\0';
            snprintf(m->cpu, sizeof m->cpu, "%s", colon);
            break;
        }
        fclose(f);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    m->cpus = n > 0 ? (int)n : 1;
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(m->kernel, sizeof m->kernel, "%s %s", u.sysname, u.release);
    else
        snprintf(m->kernel, sizeof m->kernel, "unknown");
}

void bench_pin_self(const bench_opts *o, unsigned index)
{
    if (!o->pin)
        return;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(index % (unsigned)(n > 0 ? n : 1), &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}
