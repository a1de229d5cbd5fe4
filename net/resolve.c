/*
 * net/resolve.c — numeric parsing at once, getaddrinfo on the executor
 * (see resolve.h). getaddrinfo may block for seconds on a slow DNS server;
 * the loop thread never calls it.
 */
#include "net/resolve.h"

#include <errno.h>
#include <stddef.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

struct iol__resolve_job {
    /* 2 at start: the executor's function and the loop side. acq_rel on
     * the decrement: whoever frees sees every write the other side made
     * to the job (the executor's results, the loop side's take). */
    atomic_int refs;
    iol_future *future; /* the loop side's reference */
    uint16_t port;
    int status;         /* written by the executor before the future resolves */
    iol__address *addrs;
    size_t count;
    char host[];
};

static void job_unref(iol__resolve_job *job)
{
    if (atomic_fetch_sub_explicit(&job->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(job->addrs);
    free(job);
}

/* getaddrinfo's errors as -errno: a name that does not exist (or has no
 * address of a usable family) is IOL_ENONAME, a DNS failure that may
 * pass (EAI_AGAIN) -EAGAIN. */
static int resolve_gai_error(int gai, int saved_errno)
{
    switch (gai) {
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_AGAIN:
        return -EAGAIN;
    case EAI_SYSTEM:
        return saved_errno ? -saved_errno : -EIO;
    case EAI_NONAME:
    case EAI_FAIL:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return IOL_ENONAME;
    default:
        return -EINVAL;
    }
}

static int lookup(const char *host, uint16_t port, int flags, iol__address **out, size_t *count)
{
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = flags | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    errno = 0;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return gai == EAI_NONAME && (flags & AI_NUMERICHOST) ? -EAGAIN : resolve_gai_error(gai, errno);
    size_t n = 0;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
        n++;
    iol__address *addrs = calloc(n ? n : 1, sizeof(*addrs));
    if (!addrs) {
        freeaddrinfo(res);
        return -ENOMEM;
    }
    size_t i = 0;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(addrs[i].addr))
            continue;
        memcpy(&addrs[i].addr, ai->ai_addr, ai->ai_addrlen);
        addrs[i].len = ai->ai_addrlen;
        i++;
    }
    freeaddrinfo(res);
    if (i == 0) {
        free(addrs);
        return IOL_ENONAME;
    }
    *out = addrs;
    *count = i;
    return 0;
}

int iol__resolve_numeric(const char *host, uint16_t port, iol__address **out, size_t *count)
{
    return lookup(host, port, AI_NUMERICHOST, out, count);
}

int iol__resolve_unix(const char *path, iol__address **out, size_t *count)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n == 0)
        return -EINVAL;
    if (n >= sizeof(sun.sun_path))
        return -ENAMETOOLONG;
    memcpy(sun.sun_path, path, n + 1);
    iol__address *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    memcpy(&a->addr, &sun, sizeof(sun));
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    *out = a;
    *count = 1;
    return 0;
}

/* On an executor thread. The result travels in the job, not the future. */
static int resolve_on_executor(void *arg, void **result)
{
    iol__resolve_job *job = arg;
    *result = NULL;
    job->status = lookup(job->host, job->port, 0, &job->addrs, &job->count);
    job_unref(job);
    return 0;
}

int iol__resolve_start(iol_loop *loop, const char *host, uint16_t port, void (*done)(iol_future *f, void *arg),
                       void *arg, iol__resolve_job **out)
{
    size_t len = strlen(host) + 1;
    iol__resolve_job *job = calloc(1, sizeof(*job) + len);
    if (!job)
        return -ENOMEM;
    memcpy(job->host, host, len);
    job->port = port;
    atomic_init(&job->refs, 2);
    int r = iol_loop_run_in_executor(loop, NULL, resolve_on_executor, job, &job->future);
    if (r < 0) {
        free(job);
        return r;
    }
    r = iol_loop_add_future(loop, job->future, done, arg);
    if (r < 0) {
        /* The lookup runs anyway and lets go of its half. */
        iol__resolve_job_release(job);
        return r;
    }
    *out = job;
    return 0;
}

int iol__resolve_take(iol__resolve_job *job, iol__address **out, size_t *count)
{
    /* The future resolved after the executor's writes (its lock orders
     * them before this loop callback). */
    if (job->status < 0)
        return job->status;
    *out = job->addrs;
    *count = job->count;
    job->addrs = NULL;
    return 0;
}

void iol__resolve_job_release(iol__resolve_job *job)
{
    iol_future_unref(job->future);
    job_unref(job);
}
