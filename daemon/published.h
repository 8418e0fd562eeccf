/* SPDX-License-Identifier: MIT */
/* Streams that clients publish (fb_client_publish). */
#ifndef FBD_PUBLISHED_H
#define FBD_PUBLISHED_H

#include "ring-private.h"
#include "stream.h"

/* A stream for a ring a client made: checks the ring's memory against
 * params and that channel (the producer's, for its subscribers) is a
 * SOCK_SEQPACKET socket; takes the three descriptors (closed on failure
 * too).  why says what was wrong. */
int fbd_published_create(const char *name, const char *owner_label, uint32_t id,
			 const struct fb_ring_params *params, int frame_fd, int control_fd,
			 int channel, char *why, size_t size, struct fbd_stream **ret_stream);
/* Ends every subscription (they read what is left, then -EPIPE). */
void fbd_published_free(struct fbd_stream *stream);

uint64_t fbd_published_memory(const struct fbd_stream *stream);
uint32_t fbd_published_id(const struct fbd_stream *stream);

int fbd_published_subscribe(struct fbd_stream *stream, uint32_t mode, uint32_t max_holds,
			    struct fb_subscriber_fds *ret_fds, uint32_t *ret_ring_id);
void fbd_published_unsubscribe(struct fbd_stream *stream, uint32_t ring_id);
int fbd_published_subscriber_stats(struct fbd_stream *stream, uint32_t ring_id,
				   struct fb_subscriber_stats *ret_stats);
void fbd_published_counters(const struct fbd_stream *stream, uint64_t *ret_published,
			    uint64_t *ret_dropped, uint32_t *ret_subscribers);

#endif
