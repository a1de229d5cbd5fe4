/* loop/ — the thread-local current loop and the process instance. */
#include "loop/loop_impl.h"
#include "loop/owner.h"
#include "loop/status.h"

#include <errno.h>
#include <pthread.h>

static __thread iol_loop *current_loop;
static __thread char thread_marker;

/* The process instance holds one reference; the lock orders creation. */
static pthread_mutex_t instance_lock = PTHREAD_MUTEX_INITIALIZER;
static iol_loop *instance_loop;

const void *iol__thread_id(void)
{
    return &thread_marker;
}

int iol__loop_owner_check(const iol_loop *loop)
{
    return iol__loop_check_owner(loop);
}

iol_loop *iol_loop_current(void)
{
    return current_loop;
}

int iol_loop_make_current(iol_loop *loop)
{
    if (loop && atomic_load(&loop->closed))
        return -ESHUTDOWN;
    current_loop = loop;
    return 0;
}

void iol_loop_clear_current(void)
{
    current_loop = NULL;
}

/* The instance, created with the status codes of the entry point that
 * asked first (loop/status.h). */
static iol_loop *instance_get(bool legacy_status)
{
    pthread_mutex_lock(&instance_lock);
    if (!instance_loop) {
        static const iol_loop_config cfg = { .make_current = IOL_CURRENT_NEVER };
        iol_loop *loop;
        if (iol_loop_new(&loop, &cfg) == 0) {
            /* The instance's reference is the creator's: nobody else has
             * one to drop. */
            loop->owner_ref = false;
            iol__loop_set_legacy_status(loop, legacy_status);
            instance_loop = loop;
        }
    }
    iol_loop *loop = instance_loop;
    pthread_mutex_unlock(&instance_lock);
    return loop;
}

iol_loop *iol_loop_instance(void)
{
    return instance_get(false);
}

iol_loop *iol__loop_instance_0_1(void)
{
    return instance_get(true);
}

bool iol_loop_initialized(void)
{
    pthread_mutex_lock(&instance_lock);
    bool initialized = instance_loop != NULL;
    pthread_mutex_unlock(&instance_lock);
    return initialized;
}

int iol_loop_install(iol_loop *loop)
{
    if (!loop)
        return -EINVAL;
    if (atomic_load(&loop->closed))
        return -ESHUTDOWN;
    pthread_mutex_lock(&instance_lock);
    int err = 0;
    if (instance_loop)
        err = -EEXIST;
    else
        instance_loop = iol_loop_ref(loop);
    pthread_mutex_unlock(&instance_lock);
    return err;
}

/* Takes the instance out under the lock; the caller drops its reference
 * outside it (the last unref may close the loop). */
static iol_loop *take_instance(iol_loop *only_if)
{
    pthread_mutex_lock(&instance_lock);
    iol_loop *loop = instance_loop;
    if (only_if && loop != only_if)
        loop = NULL;
    if (loop)
        instance_loop = NULL;
    pthread_mutex_unlock(&instance_lock);
    return loop;
}

void iol_loop_clear_instance(void)
{
    iol_loop_unref(take_instance(NULL));
}

void iol__loop_forget(iol_loop *loop)
{
    if (current_loop == loop)
        current_loop = NULL;
    iol_loop_unref(take_instance(loop));
}
