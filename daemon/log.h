/* SPDX-License-Identifier: MIT */
/* The daemon's log: one line per event on stderr, prefixed with its level
 * in the form journald reads ("<6>"), or in words on a terminal. */
#ifndef FBD_LOG_H
#define FBD_LOG_H

#include <syslog.h>

void fbd_log_set_level(int level);
void fbd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define fbd_error(...) fbd_log(LOG_ERR, __VA_ARGS__)
#define fbd_warning(...) fbd_log(LOG_WARNING, __VA_ARGS__)
#define fbd_info(...) fbd_log(LOG_INFO, __VA_ARGS__)
#define fbd_debug(...) fbd_log(LOG_DEBUG, __VA_ARGS__)

#endif
