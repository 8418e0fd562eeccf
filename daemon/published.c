/* SPDX-License-Identifier: MIT */
/* Streams that clients publish: the client made the ring and produces into
 * it; the daemon owns its subscribers.  For each subscriber it creates the
 * record and wake pipe, hands them to the producer over the producer's socket
 * and announces them in the ring's control page (ring.md, "remote
 * producers"), and gives the subscriber the ring.  When the producer goes away
 * it ends every subscription itself. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "protocol-private.h"
#include "published.h"

struct remote_sub {
	uint32_t id; /* 0: unused */
	struct fb__subscriber_slot slot;
};

struct fbd_published {
	int channel; /* the producer's channel, to send it registrations */
	uint32_t id;
	struct fb_ring_params params;
	struct fb__ring_geometry geo;
	const struct fb__ring_header *hdr;
	struct fb__control *ctl;
	int frame_fd;
	int control_fd;
	uint32_t next_sub_id;
	struct remote_sub subs[FB_MAX_SUBSCRIBERS];
};

int fbd_published_create(const char *name, const char *owner_label, uint32_t id,
			 const struct fb_ring_params *params, int frame_fd, int control_fd,
			 int channel, char *why, size_t size, struct fbd_stream **ret_stream)
{
	struct fbd_published *pub = calloc(1, sizeof(*pub));
	struct fbd_stream *st = calloc(1, sizeof(*st));
	struct fbd_stream_config *cfg = calloc(1, sizeof(*cfg));
	struct fb_ring_params got;
	int r;

	if (!pub || !st || !cfg) {
		r = -ENOMEM;
		snprintf(why, size, "out of memory");
		goto fail;
	}
	pub->frame_fd = frame_fd;
	pub->control_fd = control_fd;
	pub->channel = channel;
	int type = 0;
	socklen_t len = sizeof(type);
	if (getsockopt(channel, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_SEQPACKET ||
	    fcntl(channel, F_SETFL, O_NONBLOCK) < 0) {
		r = -EINVAL;
		snprintf(why, size, "its third descriptor is not a SOCK_SEQPACKET socket for the "
				    "producer's subscribers");
		goto fail;
	}
	r = fb__ring_map_readonly(frame_fd, true, &got, &pub->geo, &pub->hdr);
	if (r < 0) {
		snprintf(why, size, "the ring's memory failed the checks: %s", fb_strerror(r));
		goto fail;
	}
	if (memcmp(&got, params, sizeof(got))) {
		r = -EINVAL;
		snprintf(why, size, "the ring's memory does not match the parameters sent");
		goto fail;
	}
	pub->ctl = fb__map_shared_page(control_fd, sizeof(*pub->ctl), FB__CONTROL_MAGIC, &r);
	if (!pub->ctl) {
		snprintf(why, size, "the ring's control page failed the checks: %s",
			 fb_strerror(r));
		goto fail;
	}
	pub->id = id;
	pub->params = *params;

	/* A stream object with no source thread: what status, subscribe and
	 * the stream list need. */
	snprintf(cfg->name, sizeof(cfg->name), "%s", name);
	char url[FB__NAME_MAX + 40];
	snprintf(url, sizeof(url), "client:%s", owner_label);
	cfg->url = strdup(url);
	cfg->width = params->width;
	cfg->height = params->height;
	cfg->format = params->format;
	cfg->slots = params->slots;
	cfg->policy = params->policy;
	cfg->meta_max = params->meta_max;
	st->config = cfg;
	st->published = pub;
	st->state = FB_STREAM_RUNNING;
	st->width = params->width;
	st->height = params->height;
	pthread_mutex_init(&st->lock, NULL);
	*ret_stream = st;
	return 0;
fail:
	if (pub) {
		if (pub->hdr)
			munmap((void *)pub->hdr, sizeof(*pub->hdr));
		if (pub->ctl)
			munmap(pub->ctl, sizeof(*pub->ctl));
	}
	close(frame_fd);
	close(control_fd);
	close(channel);
	free(pub);
	free(st);
	free(cfg);
	return r;
}

uint64_t fbd_published_memory(const struct fbd_stream *st)
{
	return st->published->geo.total_size;
}

uint32_t fbd_published_id(const struct fbd_stream *st)
{
	return st->published->id;
}

/* Tell the producer, then announce it in the control page: the producer
 * reads its channel at its next claim that sees the count move.  The
 * channel does not block: a producer that stopped reading it costs this
 * subscription, not the daemon. */
static int tell_producer(struct fbd_published *pub, uint32_t opcode, const struct remote_sub *rs,
			 uint32_t mode, uint32_t max_holds)
{
	struct fb__msg_registration m = {
	    .subscriber_id = rs->id, .mode = mode, .max_holds = max_holds};
	int fds[3] = {rs->slot.record_fd, rs->slot.wake_fd, rs->slot.wake_read_fd};
	int r = fb__msg_send(pub->channel, opcode, 0, &m, sizeof(m), fds,
			     opcode == FB__OP_ADD_SUBSCRIBER ? 3 : 0);
	if (r >= 0)
		atomic_fetch_add(&pub->ctl->registrations, 1);
	return r;
}

int fbd_published_subscribe(struct fbd_stream *st, uint32_t mode, uint32_t max_holds,
			    struct fb_subscriber_fds *ret_fds, uint32_t *ret_ring_id)
{
	struct fbd_published *pub = st->published;
	struct remote_sub *rs = NULL;
	struct fb_subscriber_fds fds = {-1, -1, -1, -1};
	int r;

	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS && !rs; i++)
		if (!pub->subs[i].id)
			rs = &pub->subs[i];
	if (!rs)
		return -EUSERS;
	uint64_t latest = FB__PACKED_SEQ(atomic_load(&pub->hdr->latest));
	r = fb__subscriber_slot_create(mode, max_holds, latest, &rs->slot);
	if (r < 0)
		return r;
	rs->id = ++pub->next_sub_id ? pub->next_sub_id : ++pub->next_sub_id;
	r = fb__subscriber_slot_fds(&rs->slot, pub->frame_fd, pub->control_fd, &fds);
	if (r == 0)
		r = tell_producer(pub, FB__OP_ADD_SUBSCRIBER, rs, mode, max_holds);
	if (r < 0) {
		fb_subscriber_fds_close(&fds);
		fb__subscriber_slot_close(&rs->slot);
		rs->id = 0;
		return r;
	}
	/* The producer has its copies now; we keep the record mapped (to
	 * release a vanished subscriber's holds at once) and the pipe's write
	 * end (to wake subscribers if the producer dies). */
	close(rs->slot.record_fd);
	rs->slot.record_fd = -1;
	*ret_fds = fds;
	*ret_ring_id = rs->id;
	return 0;
}

static struct remote_sub *find(struct fbd_published *pub, uint32_t ring_id)
{
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++)
		if (pub->subs[i].id == ring_id)
			return &pub->subs[i];
	return NULL;
}

void fbd_published_unsubscribe(struct fbd_stream *st, uint32_t ring_id)
{
	struct fbd_published *pub = st->published;
	struct remote_sub *rs = find(pub, ring_id);

	if (!rs)
		return;
	/* Free its slots now, whenever the producer reads the removal: no hold,
	 * and a cursor past every frame (what it never read pins nothing). */
	atomic_store(&rs->slot.record->held, 0);
	atomic_store(&rs->slot.record->cursor, UINT64_MAX);
	atomic_store(&rs->slot.record->revoked, 1);
	fb__subscriber_slot_wake(&rs->slot, atomic_exchange(&rs->slot.record->armed, 0));
	if (atomic_load(&pub->ctl->producer_waiting)) {
		atomic_fetch_add(&pub->ctl->space, 1);
		fb__futex_wake(&pub->ctl->space);
	}
	tell_producer(pub, FB__OP_REMOVE_SUBSCRIBER, rs, 0, 0);
	fb__subscriber_slot_close(&rs->slot);
	rs->id = 0;
}

int fbd_published_subscriber_stats(struct fbd_stream *st, uint32_t ring_id,
				   struct fb_subscriber_stats *ret)
{
	struct remote_sub *rs = find(st->published, ring_id);
	if (!rs)
		return -ENOENT;
	const struct fb__record *rec = rs->slot.record;
	uint64_t cursor = atomic_load(&rec->cursor);
	uint64_t last = FB__PACKED_SEQ(atomic_load(&st->published->hdr->latest));
	*ret = (struct fb_subscriber_stats){
	    .mode = rec->mode,
	    .held = (uint32_t)__builtin_popcountll(atomic_load(&rec->held)),
	    .next_seq = cursor,
	    .lag = last >= cursor ? last - cursor + 1 : 0,
	    .missed = atomic_load(&rec->missed),
	};
	return 0;
}

void fbd_published_counters(const struct fbd_stream *st, uint64_t *ret_published,
			    uint64_t *ret_dropped, uint32_t *ret_subscribers)
{
	const struct fbd_published *pub = st->published;
	uint32_t n = 0;
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++)
		n += pub->subs[i].id != 0;
	*ret_published = atomic_load_explicit(&pub->hdr->published, memory_order_relaxed);
	*ret_dropped = atomic_load_explicit(&pub->hdr->dropped, memory_order_relaxed);
	*ret_subscribers = n;
}

void fbd_published_free(struct fbd_stream *st)
{
	struct fbd_published *pub = st->published;

	/* The producer may be dead and cannot set closed in the ring (it alone
	 * can write there): end every subscription through its record. */
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++) {
		struct remote_sub *rs = &pub->subs[i];
		if (!rs->id)
			continue;
		atomic_store(&rs->slot.record->ended, 1);
		fb__subscriber_slot_wake(&rs->slot, atomic_exchange(&rs->slot.record->armed, 0));
		fb__subscriber_slot_wake(&rs->slot, FB__ARMED_FUTEX);
		fb__subscriber_slot_wake(&rs->slot, FB__ARMED_PIPE);
		fb__subscriber_slot_close(&rs->slot);
	}
	munmap((void *)pub->hdr, sizeof(*pub->hdr));
	munmap(pub->ctl, sizeof(*pub->ctl));
	close(pub->frame_fd);
	close(pub->control_fd);
	close(pub->channel);
	free(pub);
	pthread_mutex_destroy(&st->lock);
	fbd_stream_config_free(st->config);
	free(st);
}
