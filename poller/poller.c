/* poller/ — picks a backend by name. */
#include "poller/poller.h"

#include <stdlib.h>
#include <string.h>

const iol__poller_ops *iol__poller_find(const char *name)
{
    static const iol__poller_ops *const all[] = { &iol__poller_epoll, &iol__poller_poll, &iol__poller_select,
#ifdef IOL_HAVE_ZMQ
                                                  &iol__poller_zmq,
#endif
#ifdef IOL_HAVE_URING
                                                  &iol__poller_uring,
#endif
    };
    if (!name) {
        name = getenv("IOL_POLLER");
        if (!name || !*name)
            return &iol__poller_epoll;
    }
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}
