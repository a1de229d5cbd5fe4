/* runtime/ — admission control for a listener's sockets: a cap on the
 * open connections of a worker and a bound on the accept rate
 * (iol_listen_config.max_connections, .max_accept_rate). listener.c asks
 * before each accept; a "no" comes with how long to hold the socket's
 * handler off. Acceptor/worker thread of the socket only. */
#ifndef IOL_RUNTIME_ADMISSION_H
#define IOL_RUNTIME_ADMISSION_H

#include <stdbool.h>

typedef enum { IOL__ADMIT = 0, IOL__HOLD_CONNS, IOL__HOLD_RATE } iol__admit_verdict;

typedef struct iol__admission {
    long max_conns; /* per worker; 0: no cap */
    long low_conns; /* resume at or under this */
    bool over;      /* held for the cap since it was reached: resume at low_conns */
    bool at_cap;    /* the last look saw the cap (over latches on the second) */
    double rate;    /* accepts per second on this socket; 0: no bound */
    double burst;   /* bucket size */
    double tokens;
    double refilled_at;
} iol__admission;

/* Fills a from the listener's config; rate is this socket's share; now
 * NAN: the bucket's clock starts at the first check. */
void iol__admission_init(iol__admission *a, unsigned max_conns, unsigned low_conns, double rate, double now);
/* Whether one more connection may be accepted now, given the lowest
 * load among the workers it could go to. On a hold, *wait is how long to
 * wait before asking again. */
iol__admit_verdict iol__admission_check(iol__admission *a, long load, double now, double *wait);
/* One connection was accepted: takes its token. */
void iol__admission_took(iol__admission *a);
/* Whether a worker with this load may receive one more connection (the
 * cap alone, without hysteresis: for picking among workers). */
bool iol__admission_room(const iol__admission *a, long load);

#endif
