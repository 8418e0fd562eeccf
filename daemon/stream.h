/* SPDX-License-Identifier: MIT */
/* A stream on the bus, whatever makes its frames: a name, a ring, a state
 * that status tools and subscribers see, and a small table of operations
 * that its back-end implements.  Two back-ends: decoded.c (a configured
 * source, decoded by a thread of its own) and published.c (a ring a client
 * made and produces into).  Nothing outside them asks which one a stream
 * has. */
#ifndef FBD_STREAM_H
#define FBD_STREAM_H

#include <pthread.h>
#include <stdbool.h>

#include "config.h"
#include "framebus/framebus.h"
#include "protocol-private.h"
#include "rates.h"

struct fbd_stream;
struct fbd_client;

/* A ring's counters, and its newest frame's times (CLOCK_MONOTONIC, 0:
 * none or unknown). */
struct fbd_counters {
	struct fb_ring_stats ring;
	uint64_t latest_capture_ns;
	uint64_t latest_publish_ns;
	/* A derived stream's parent frames it passed over: it was busy with an
	 * earlier one, or its fps limit. */
	bool derived;
	uint64_t skipped_busy, skipped_rate;
};

struct fbd_stream_ops {
	/* Add a subscriber to the ring: -EAGAIN while it has none yet. */
	int (*subscribe)(struct fbd_stream *stream, uint32_t mode, uint32_t max_holds,
			 struct fb_subscriber_fds *ret_fds, uint32_t *ret_ring_id);
	void (*unsubscribe)(struct fbd_stream *stream, uint32_t ring_id);
	/* Stop waiting for a queue subscriber that stalls a block ring: its
	 * producer treats it as a latest one from now on. */
	int (*unwait)(struct fbd_stream *stream, uint32_t ring_id);
	/* A subscriber's counters and timing, as its record shows them. */
	int (*subscriber_sample)(struct fbd_stream *stream, uint32_t ring_id,
				 struct fb__subscriber_sample *ret_sample);
	/* Zeros while there is no ring. */
	void (*counters)(struct fbd_stream *stream, struct fbd_counters *ret_counters);
	/* Called every second: whether the thread that makes its frames has
	 * shown no sign of life for too long even after the back-end tried to
	 * free it (it logs both).  NULL: there is no such thread. */
	bool (*wedged)(struct fbd_stream *stream, uint64_t now_ns);
	/* The newest frame's seq, 0: none.  NULL: the stream's numbers are
	 * not the daemon's to keep (a client's ring keeps its own). */
	uint64_t (*last_seq)(struct fbd_stream *stream);
	/* Free the stream.  end: its subscribers read what is left, then get
	 * -EPIPE (a reload removed it, its publisher withdrew it); otherwise
	 * (the daemon is stopping) they see their producer go, as if the
	 * daemon had died, and subscribe again to the next daemon. */
	void (*free)(struct fbd_stream *stream, bool end);
};

struct fbd_stream {
	const struct fbd_stream_ops *ops;
	char name[FB__NAME_MAX];
	char source[FB__NAME_MAX * 2]; /* what made it, for status: a url, "client:NAME" */
	uint32_t id;                   /* streams.c's, for DESTROY_STREAM */
	/* The configuration section it runs, or NULL: a client's stream. */
	const struct fbd_stream_config *config;
	struct fbd_client *owner; /* the client publishing it, or NULL */
	/* A derived stream (config->from): the stream it is subscribed to and
	 * that subscription's id there, while it is; streams.c's (main thread). */
	struct fbd_stream *parent;
	uint32_t parent_ring_id;
	/* Made on a client's request (fbd_streams_derive): not the
	 * configuration's, and removed once nobody subscribes to it.  creator:
	 * the client that asked first, while it is connected (its limit counts
	 * it). */
	bool on_demand;
	struct fbd_client *creator;
	/* Called from any thread when the state changed; must be thread-safe
	 * (streams.c passes uv_async_send). */
	void (*notify)(void *data);
	void *notify_data;

	pthread_mutex_t lock;         /* guards everything below */
	struct fb_ring_params params; /* width and height 0 until the ring exists */
	uint32_t state;               /* enum fb_stream_state */
	bool state_changed;           /* not yet told to subscribers */
	uint32_t retries;
	char detail[FB__ERROR_TEXT_MAX];

	/* Main thread only: frames published, sampled every second. */
	struct fbd_window rates;
	/* Main thread only: queue subscribers server.c found stalling it
	 * (block_timeout) since it started, and subscriptions it dropped for
	 * holding one frame past hold_timeout (Prometheus only). */
	uint32_t stalls;
	uint32_t hold_drops;
};

/* What every back-end does first: the common part, state starting. */
void fbd_stream_init(struct fbd_stream *stream, const struct fbd_stream_ops *ops, const char *name,
		     const struct fb_ring_params *params);
/* And last, in its free. */
void fbd_stream_cleanup(struct fbd_stream *stream);

/* Start decoding config's source in a thread of its own (decoded.c); for a
 * derived stream (config->from) the source is its parent's ring, which
 * fbd_decoded_feed() hands it.  Its frames are numbered on from last_seq
 * (the daemon before this one got that far; 0: from 1). */
int fbd_decoded_start(const struct fbd_stream_config *config, uint64_t last_seq,
		      struct fbd_stream **ret_stream);
/* Main thread: give a derived stream a subscriber of its parent's ring (it
 * takes it); it reads that until the ring ends or goes, then waits for the
 * next one.  from: the parent stream; if it decodes a source, the derived
 * stream scales from its decoder's pictures. */
void fbd_decoded_feed(struct fbd_stream *stream, fb_subscriber *parent, struct fbd_stream *from);

/* A stream for a ring a client made (published.c): checks the ring's memory
 * against params and that channel (the producer's, for its subscribers) is
 * a SOCK_SEQPACKET socket; takes the three descriptors, on failure too.  why
 * says what was wrong. */
int fbd_published_create(const char *name, const char *owner_label,
			 const struct fb_ring_params *params, int frame_fd, int control_fd,
			 int channel, char *why, size_t size, struct fbd_stream **ret_stream);

/* enum fb_stream_state, now. */
uint32_t fbd_stream_state(struct fbd_stream *stream);

/* The ring's parameters; width 0 while it has no ring. */
struct fb_ring_params fbd_stream_params(struct fbd_stream *stream);

/* Every second (main thread): sample what it published, for its rates. */
void fbd_stream_sample(struct fbd_stream *stream);

/* Fill in a status message (main thread): fps over the last second. */
void fbd_stream_describe(struct fbd_stream *stream, struct fb__msg_stream_info *info);

/* The same with its rate over the last 10 s and its newest frame's age. */
void fbd_stream_detail(struct fbd_stream *stream, struct fb__msg_stream_detail *detail);

/* If the state changed since the last call, its new state and detail. */
bool fbd_stream_take_change(struct fbd_stream *stream, uint32_t *ret_state, char *detail,
			    size_t size);

/* Any thread: set the state (and why) and notify. */
void fbd_stream_set_state(struct fbd_stream *stream, uint32_t state, const char *detail);

#endif
