/* SPDX-License-Identifier: MIT */
/* The daemon's log.  Under systemd (JOURNAL_STREAM names our stderr) each
 * message goes to the journal with its priority and, where it is about one,
 * FRAMEBUS_STREAM= and FRAMEBUS_CLIENT= fields; otherwise it is one line on
 * stderr with its level in words. */
#ifndef FBD_LOG_H
#define FBD_LOG_H

#include <syslog.h>

/* Decide where messages go; call once, before logging. */
void fbd_log_init(void);
void fbd_log_set_level(int level);

/* A message about stream (or NULL) and client (or NULL). */
void fbd_log_about(int level, const char *stream, const char *client, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define fbd_log(level, ...) fbd_log_about(level, NULL, NULL, __VA_ARGS__)
#define fbd_error(...) fbd_log(LOG_ERR, __VA_ARGS__)
#define fbd_warning(...) fbd_log(LOG_WARNING, __VA_ARGS__)
#define fbd_info(...) fbd_log(LOG_INFO, __VA_ARGS__)
#define fbd_debug(...) fbd_log(LOG_DEBUG, __VA_ARGS__)

#endif
