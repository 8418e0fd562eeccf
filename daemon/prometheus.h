/* SPDX-License-Identifier: MIT */
/* Prometheus metrics, for framebusd (metrics.c) and framebus-output: the
 * text format (exposition format 0.0.4) and /metrics over HTTP, served by
 * libmicrohttpd from a thread of its own. */
#pragma once

#include <stdio.h>
#include <sys/socket.h>

/* A family's HELP and TYPE lines; a label name="value", escaped. */
void fbd_metric_family(FILE *out, const char *name, const char *type, const char *help);
void fbd_metric_label(FILE *out, const char *name, const char *value);

/* Writes the page of one scrape, from the server's thread: malloc'd text
 * (not NUL-terminated) and its size, or NULL when out of memory. */
typedef char *fbd_prom_page_fn(void *data, size_t *ret_size);
/* A line libmicrohttpd has to say (a connection it dropped...). */
typedef void fbd_prom_log_fn(const char *line);

struct fbd_prom_server;

/* Serves http://addr/metrics (page's text), a pointer to it at / and 404
 * or 405 for anything else, as program (in those answers).  0, or -errno
 * when it cannot (the address not this host's, the port in use). */
int fbd_prom_serve(const char *program, const struct sockaddr_storage *addr, fbd_prom_page_fn *page,
		   void *data, fbd_prom_log_fn *log, struct fbd_prom_server **ret);
/* Stops serving: returns once no request is being answered.  NULL: nothing. */
void fbd_prom_stop(struct fbd_prom_server *s);
