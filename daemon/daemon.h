/* SPDX-License-Identifier: MIT */
/* framebusd's state, shared by main.c (lifecycle, signals, systemd),
 * server.c (the control socket and its clients) and streams.c (the set of
 * configured streams). */
#ifndef FBD_DAEMON_H
#define FBD_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "config.h"
#include "stream.h"

struct fbd_client;

struct fbd_daemon {
	uv_loop_t *loop;
	struct fbd_config *config;
	const char *config_path; /* NULL: the embedded default */
	const char *socket_override;

	/* server.c */
	int listen_fd;
	bool socket_activated;
	char *bound_path; /* the path we bound and must unlink, or NULL */
	uv_poll_t listen_poll;
	struct fbd_client *clients;
	uint32_t n_clients;
	uint32_t next_client_id;
	uint32_t next_subscription_id;

	/* streams.c */
	struct fbd_stream *streams[FBD_MAX_STREAMS];
	uint32_t n_streams;
	uv_async_t state_async; /* a source thread changed a stream's state */
};

/* server.c */
int fbd_server_start(struct fbd_daemon *d);
void fbd_server_stop(struct fbd_daemon *d);
/* Tell every client subscribed to stream (or all, for stream NULL) that it
 * changed state. */
void fbd_server_stream_event(struct fbd_daemon *d, struct fbd_stream *stream, uint32_t state,
			     const char *detail);
/* End every subscription to stream before it goes away; they are told
 * FB_STREAM_REMOVED with detail. */
void fbd_server_forget_stream(struct fbd_daemon *d, struct fbd_stream *stream, const char *detail);

/* streams.c */
int fbd_streams_start(struct fbd_daemon *d);
/* Apply a new configuration: start, stop or restart only the streams whose
 * section changed.  Takes ownership of config. */
void fbd_streams_apply(struct fbd_daemon *d, struct fbd_config *config);
void fbd_streams_stop(struct fbd_daemon *d);
struct fbd_stream *fbd_streams_find(struct fbd_daemon *d, const char *name);
/* One line for systemd's STATUS=. */
void fbd_streams_status(struct fbd_daemon *d, char *buf, size_t size);

#endif
