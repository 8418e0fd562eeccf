/* SPDX-License-Identifier: MIT */
/* framebusd's state, shared by main.c (lifecycle, signals, systemd),
 * server.c (the control socket and its clients) and streams.c (the set of
 * configured streams). */
#ifndef FBD_DAEMON_H
#define FBD_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <uv.h>

#include "config.h"
#include "prometheus.h"
#include "stream.h"

struct fbd_client;
struct fbd_metrics;

/* A stream's last frame number, from the daemon before this one. */
struct fbd_resume {
	char name[FB__NAME_MAX];
	uint64_t last_seq;
};

struct fbd_daemon {
	uv_loop_t *loop;
	struct fbd_config *config;
	const char *config_path; /* NULL: the embedded default */
	const char *socket_override;

	/* server.c; fdstore.c sets listen_fd to one systemd passed */
	int listen_fd;
	char *listen_name;  /* its name in LISTEN_FDNAMES; NULL: we bound it */
	bool socket_stored; /* in systemd's fd store: keep its path at stop */
	char *bound_path;   /* the path we bound and must unlink, or NULL */
	uv_poll_t listen_poll;
	struct fbd_client *clients;
	uint32_t n_clients;
	uint32_t next_client_id;
	uint32_t next_subscription_id;
	uint64_t refusal_logged_ns; /* connections refused: the last logged, */
	uint32_t refusals_unlogged; /* and how many since */

	/* streams.c: the table is its alone to change; others read it. */
	struct fbd_stream *streams[FBD_MAX_STREAMS];
	uint32_t n_streams;
	uint32_t next_stream_id;
	bool wedged;            /* a stream's thread is stuck beyond help: stop the watchdog */
	uv_async_t state_async; /* a stream changed state in another thread */
	/* Told every change of a stream's state on the main thread, and
	 * FB_STREAM_REMOVED (detail: why) just before a stream goes away. */
	struct fbd_metrics *metrics; /* metrics.c's, NULL: not serving */
	/* fdstore.c: what the last daemon left, until streams.c takes it. */
	struct fbd_resume resume[FBD_MAX_STREAMS];
	uint32_t n_resume;
	void (*stream_changed)(struct fbd_daemon *d, struct fbd_stream *stream, uint32_t state,
			       const char *detail);
};

/* fdstore.c: take what systemd passed (a listening socket, the last
 * daemon's state; anything else is dropped from the store, with a warning). */
void fbd_fdstore_load(struct fbd_daemon *d);
/* Store the listening socket we bound, if systemd has a store for us. */
void fbd_fdstore_keep_socket(struct fbd_daemon *d);
/* The last frame number the daemon before had for stream name, 0: none. */
uint64_t fbd_fdstore_take_seq(struct fbd_daemon *d, const char *name);
/* At a graceful stop: store every configured stream's last frame number. */
void fbd_fdstore_save(struct fbd_daemon *d);

/* server.c; sets d->stream_changed. */
int fbd_server_start(struct fbd_daemon *d);
void fbd_server_stop(struct fbd_daemon *d);
/* Every second: sample each subscription, for its rates and times. */
void fbd_server_sample(struct fbd_daemon *d);
/* Whether any client subscribes to stream. */
bool fbd_server_subscribed(struct fbd_daemon *d, const struct fbd_stream *stream);
/* The subscriptions' Prometheus metrics (metrics.c's helpers). */
void fbd_server_metrics(struct fbd_daemon *d, FILE *out);

/* metrics.c: /metrics over HTTP, if the configuration asks.  apply: start,
 * move or stop it as the configuration now says (start, reload); the loop
 * writes a page when a scrape asks. */
void fbd_metrics_apply(struct fbd_daemon *d);
void fbd_metrics_stop(struct fbd_daemon *d);
/* The text format's histogram of a subscriber's times (ring-private.h's
 * buckets, by whole octaves); prometheus.h has the rest of the format. */
void fbd_metric_histogram(FILE *out, const char *name, const char *labels, const uint32_t *buckets,
			  uint64_t sum_ns);

/* streams.c */
int fbd_streams_start(struct fbd_daemon *d);
/* Apply a new configuration: start, stop or restart only the streams whose
 * section changed.  Takes ownership of config. */
void fbd_streams_apply(struct fbd_daemon *d, struct fbd_config *config);
void fbd_streams_stop(struct fbd_daemon *d);
struct fbd_stream *fbd_streams_find(struct fbd_daemon *d, const char *name);
/* Put a stream (a client's) in the table, giving it its id: -EUSERS when the
 * table is full.  Takes the stream, on failure too. */
int fbd_streams_add(struct fbd_daemon *d, struct fbd_stream *stream);
/* The stream made from parent as spec says, for client: the one made for
 * an earlier request, or a new derived stream, on demand (its ring is made
 * now, so it can be subscribed at once).  -EINVAL for a spec it cannot
 * make, -EAGAIN while the parent has no ring, -EDQUOT past the limits,
 * -EEXIST for a name taken otherwise; why says what. */
int fbd_streams_derive(struct fbd_daemon *d, struct fbd_stream *parent,
		       const struct fb_derived *spec, struct fbd_client *client, char *why,
		       size_t size, struct fbd_stream **ret_stream);
/* If stream was made on demand and nobody subscribes to it any more (no
 * client, no stream derived from it), remove it; then its parent, if that
 * was made on demand too. */
void fbd_streams_forget(struct fbd_daemon *d, struct fbd_stream *stream);
/* Take a stream out of the table and free it; its subscribers are told
 * FB_STREAM_REMOVED with why. */
void fbd_streams_remove(struct fbd_daemon *d, struct fbd_stream *stream, const char *why);
/* Every second: sample each stream's rate, look for stuck stream threads
 * (their back-ends try to free them) and set d->wedged. */
void fbd_streams_watch(struct fbd_daemon *d);
/* One line for systemd's STATUS=. */
void fbd_streams_status(struct fbd_daemon *d, char *buf, size_t size);

#endif
