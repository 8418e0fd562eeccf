/* SPDX-License-Identifier: MIT */
/* The Prometheus text format and its HTTP endpoint (prometheus.h), shared by
 * framebusd's metrics.c and framebus-output. */
#define _GNU_SOURCE
#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "prometheus.h"

/* Scrapers served at once, and how long one may take to send its request. */
#define MAX_CONNECTIONS 16
#define CONNECTION_TIMEOUT_S 10

struct fbd_prom_server {
	struct MHD_Daemon *mhd;
	char *program;
	fbd_prom_page_fn *page;
	void *data;
	fbd_prom_log_fn *log;
};

static const char CONTENT_TYPE[] = "text/plain; version=0.0.4; charset=utf-8";

void fbd_metric_family(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void fbd_metric_label(FILE *out, const char *name, const char *value)
{
	fprintf(out, "%s=\"", name);
	for (const char *c = value; *c;) {
		size_t plain = strcspn(c, "\\\"\n");
		fwrite(c, 1, plain, out);
		c += plain;
		if (*c) {
			fputs(*c == '\n' ? "\\n" : *c == '"' ? "\\\"" : "\\\\", out);
			c++;
		}
	}
	fputc('"', out);
}

/* body is the response's: copied (MUST_COPY) or taken (MUST_FREE). */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
			     void *body, size_t size, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(size, body, mode);
	if (!r) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result text_reply(struct MHD_Connection *conn, unsigned status, const char *fmt,
				  ...) __attribute__((format(printf, 3, 4)));

static enum MHD_Result text_reply(struct MHD_Connection *conn, unsigned status, const char *fmt,
				  ...)
{
	char text[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	return reply(conn, status, "text/plain; charset=utf-8", text,
		     n < 0                      ? 0
		     : (size_t)n < sizeof(text) ? (size_t)n
						: sizeof(text) - 1,
		     MHD_RESPMEM_MUST_COPY);
}

/* libmicrohttpd's thread: one call per request (a request with a body is
 * answered before it is read). */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **state)
{
	struct fbd_prom_server *s = cls;
	(void)version;
	(void)upload;
	(void)upload_size;
	(void)state;

	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return text_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
				  "%s metrics: only GET and HEAD\n", s->program);
	if (!strcmp(url, "/"))
		return text_reply(conn, MHD_HTTP_OK, "%s: Prometheus metrics at /metrics\n",
				  s->program);
	if (strcmp(url, "/metrics"))
		return text_reply(conn, MHD_HTTP_NOT_FOUND,
				  "%s metrics: no such page (the metrics are at /metrics)\n",
				  s->program);
	size_t size = 0;
	char *text = s->page(s->data, &size);
	if (!text)
		return text_reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
				  "%s metrics: out of memory\n", s->program);
	return reply(conn, MHD_HTTP_OK, CONTENT_TYPE, text, size, MHD_RESPMEM_MUST_FREE);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct fbd_prom_server *s = cls;
	char line[256];
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	if (s->log)
		s->log(line);
}

static void server_free(struct fbd_prom_server *s)
{
	free(s->program);
	free(s);
}

int fbd_prom_serve(const char *program, const struct sockaddr_storage *addr, fbd_prom_page_fn *page,
		   void *data, fbd_prom_log_fn *log, struct fbd_prom_server **ret)
{
	struct fbd_prom_server *s = calloc(1, sizeof(*s));
	if (!s || !(s->program = strdup(program))) {
		free(s);
		return -ENOMEM;
	}
	s->page = page;
	s->data = data;
	s->log = log;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
			 (log ? MHD_USE_ERROR_LOG : 0) |
			 (addr->ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
	errno = 0;
	s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, addr,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s, MHD_OPTION_END);
	if (!s->mhd) {
		int e = errno ? errno : EADDRINUSE;
		server_free(s);
		return -e;
	}
	*ret = s;
	return 0;
}

void fbd_prom_stop(struct fbd_prom_server *s)
{
	if (!s)
		return;
	MHD_stop_daemon(s->mhd); /* joins its thread */
	server_free(s);
}
