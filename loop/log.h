/* loop/ — the library's logger (iol_set_log_handler routes it). */
#ifndef IOL_LOG_H
#define IOL_LOG_H

#include "ioloop.h"

/* Formats and hands the message to the log handler (default: WARNING and
 * above to stderr). Any thread; not async-signal-safe. */
void iol__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when the default handler is in effect (the watchdog may then write
 * straight to stderr from signal context). */
bool iol__log_is_default(void);

#endif
