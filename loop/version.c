/* loop/ — the library's version at run time, and the size promise of the
 * config structs (include/ioloop.h, "Config structs"): a field added past
 * the reserve would change a struct's size, which these asserts refuse. */
#include "ioloop.h"

_Static_assert(sizeof(iol_loop_config) == 128, "iol_loop_config outgrew its reserve");
_Static_assert(sizeof(iol_runtime_config) == 256, "iol_runtime_config outgrew its reserve");
_Static_assert(sizeof(iol_listen_config) == 256, "iol_listen_config outgrew its reserve");

unsigned iol_version(void)
{
    return IOL_VERSION_HEX;
}

const char *iol_version_string(void)
{
    return IOL_VERSION_STRING;
}
