/* runtime/ — admission control (see admission.h).
 *
 * The cap counts what the HANDOFF balancing counts (listener.c,
 * worker_load): fds with handlers on the worker's loop, less the
 * runtime's own, plus handoffs on their way. When it is reached the
 * socket's handler is removed, so connections wait in the kernel's
 * backlog (and past it, SYNs are dropped and retried by the clients)
 * instead of costing fds and memory here; it comes back once the load is
 * at or under the low mark (hysteresis: a server at its cap does not
 * flap between accepting one and pausing). The load is looked at again
 * every CAP_RECHECK seconds while held: connections end without telling
 * the runtime, so there is nothing to wait on, and 10 ms is far below
 * what a client in a backlog notices and far above the cost of a look.
 *
 * The rate is a token bucket: `rate` tokens a second, at most `burst`
 * saved up (a tenth of a second's worth, at least one), one per accept.
 * With no token the socket is held until the next one is due. */
#include "runtime/admission.h"

#define CAP_RECHECK 0.010
#define BURST_SECONDS 0.1

void iol__admission_init(iol__admission *a, unsigned max_conns, unsigned low_conns, double rate, double now)
{
    a->max_conns = (long)max_conns;
    if (max_conns == 0)
        a->low_conns = 0;
    else if (low_conns == 0 || low_conns >= max_conns)
        a->low_conns = (long)max_conns - (long)(max_conns / 8 > 0 ? max_conns / 8 : 1);
    else
        a->low_conns = (long)low_conns;
    a->over = false;
    a->at_cap = false;
    a->rate = rate > 0 ? rate : 0;
    a->burst = a->rate * BURST_SECONDS < 1 ? 1 : a->rate * BURST_SECONDS;
    a->tokens = a->burst;
    a->refilled_at = now; /* NAN: at the first check */
}

bool iol__admission_room(const iol__admission *a, long load)
{
    return a->max_conns == 0 || load < a->max_conns;
}

iol__admit_verdict iol__admission_check(iol__admission *a, long load, double now, double *wait)
{
    if (a->max_conns > 0) {
        /* The hysteresis latches only on a load seen at the cap twice,
         * CAP_RECHECK apart: the load is a snapshot that counts a handoff
         * being delivered twice for an instant (listener.c, worker_load),
         * and a latch on such a phantom at cap - 1 would hold accepting
         * until the load fell to the low mark. One look costs a 10 ms
         * hold at most; the second sees the delivery done. */
        if (a->over && load <= a->low_conns) {
            a->over = false;
            a->at_cap = false;
        } else if (!a->over && load >= a->max_conns) {
            a->over = a->at_cap;
            a->at_cap = true;
            *wait = CAP_RECHECK;
            return IOL__HOLD_CONNS;
        } else if (!a->over) {
            a->at_cap = false;
        }
        if (a->over) {
            *wait = CAP_RECHECK;
            return IOL__HOLD_CONNS;
        }
    }
    if (a->rate > 0) {
        if (a->refilled_at != a->refilled_at) /* NAN: the first check */
            a->refilled_at = now;
        if (now > a->refilled_at) {
            a->tokens += (now - a->refilled_at) * a->rate;
            if (a->tokens > a->burst)
                a->tokens = a->burst;
            a->refilled_at = now;
        }
        if (a->tokens < 1) {
            *wait = (1 - a->tokens) / a->rate;
            return IOL__HOLD_RATE;
        }
    }
    return IOL__ADMIT;
}

void iol__admission_took(iol__admission *a)
{
    if (a->rate > 0)
        a->tokens -= 1;
}
