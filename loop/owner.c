/* loop/ — the thread rule for layers above the loop (see loop/owner.h). */
#include "loop/owner.h"

#include "loop/loop_impl.h"

int iol__loop_owner_check(const iol_loop *loop)
{
    if (!loop)
        return -EINVAL;
    return iol__loop_check_owner(loop);
}
