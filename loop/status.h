/*
 * loop/status.h — the status codes a loop hands to callbacks.
 *
 * A loop created through a 0.1 entry point (a program built against the
 * old header) gets the 0.1 codes: every layer that hands a status to the
 * application passes it through iol__loop_status first, so the library
 * itself only ever produces the new codes (include/ioloop.h, "Status
 * codes").
 */
#ifndef IOL_LOOP_STATUS_H
#define IOL_LOOP_STATUS_H

#include <stdbool.h>

#include "ioloop.h"

/* Declares a 0.1 entry point: exported under the old name `name`, which
 * a program built against the 0.1 header links to (this header binds new
 * programs to the *_v2 names). */
#define IOL__EXPORT_0_1(name) __asm__(name) __attribute__((visibility("default")))


/* status as the application of loop expects it: the new codes as they
 * are, or their 0.1 form (-EPIPE, -EHOSTUNREACH, -EKEYREJECTED) on a loop
 * created through a 0.1 entry point. Any thread. */
int iol__loop_status(const iol_loop *loop, int status);

/* Marks loop as created for a 0.1 program (a runtime's worker loops
 * follow the runtime's entry point). Creator, before the loop is shared. */
void iol__loop_set_legacy_status(iol_loop *loop, bool legacy);

int iol__loop_new_0_1(iol_loop **out, const iol_loop_config *cfg) IOL__EXPORT_0_1("iol_loop_new");
iol_loop *iol__loop_instance_0_1(void) IOL__EXPORT_0_1("iol_loop_instance");
int iol__runtime_new_0_1(iol_runtime **out, const iol_runtime_config *cfg) IOL__EXPORT_0_1("iol_runtime_new");

#endif
