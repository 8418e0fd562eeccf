/* SPDX-License-Identifier: MIT */
/* A configured stream: its ring, the thread that decodes its source into the
 * ring, and its state as status tools and subscribers see it. */
#ifndef FBD_STREAM_H
#define FBD_STREAM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"
#include "framebus/framebus.h"
#include "protocol-private.h"

struct fbd_published;

struct fbd_stream {
	struct fbd_stream_config *config;
	/* Set for a stream a client publishes (published.c): no source thread,
	 * no local producer. */
	struct fbd_published *published;
	struct fbd_client *owner; /* the publishing client */
	/* Called from the source thread when the state changed; must be
	 * thread-safe (the daemon passes uv_async_send). */
	void (*notify)(void *data);
	void *notify_data;

	pthread_t thread;
	atomic_bool stop;
	/* Wakes the source thread's sleeps (backoff, pacing) on stop. */
	pthread_cond_t wake;

	pthread_mutex_t lock;  /* guards everything below */
	fb_producer *producer; /* set once, when the geometry is known */
	uint32_t width, height;
	uint32_t state;     /* enum fb_stream_state */
	bool state_changed; /* not yet told to subscribers */
	uint32_t retries;
	char detail[FB__ERROR_TEXT_MAX];

	/* Main thread only. */
	uint64_t last_published;
	uint64_t last_sample_ns;
	double fps;
};

/* Start decoding config's source in a thread of its own. */
int fbd_stream_start(const struct fbd_stream_config *config, void (*notify)(void *data),
		     void *notify_data, struct fbd_stream **ret_stream);

/* Stop the thread, end the ring for its subscribers and free everything. */
void fbd_stream_free(struct fbd_stream *stream);

/* The ring, or NULL while the source has not told its geometry yet. */
fb_producer *fbd_stream_producer(struct fbd_stream *stream);

/* Fill in a status message; also updates the fps estimate (main thread). */
void fbd_stream_describe(struct fbd_stream *stream, struct fb__msg_stream_info *info);

/* If the state changed since the last call, its new state and detail. */
bool fbd_stream_take_change(struct fbd_stream *stream, uint32_t *ret_state, char *detail,
			    size_t size);

/* Source thread: set the state (and why) and tell the main loop. */
void fbd_stream_set_state(struct fbd_stream *stream, uint32_t state, const char *detail);

/* Source thread: sleep up to ns, or less if the stream is stopping.
 * Returns false if it is stopping. */
bool fbd_stream_sleep(struct fbd_stream *stream, uint64_t ns);

/* Source thread: the ring for width x height, created on first use. */
int fbd_stream_ring(struct fbd_stream *stream, uint32_t width, uint32_t height,
		    fb_producer **ret_producer);

/* Source thread: decode the source into the ring once, from opening it until
 * it ends (returns 0) or fails (returns -errno, with the reason in why):
 * -ENOTSUP if this FFmpeg cannot decode its video, -ETIMEDOUT if it stalled. */
int fbd_source_run(struct fbd_stream *stream, char *why, size_t size);

#endif
