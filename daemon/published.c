/* SPDX-License-Identifier: MIT */
/* The stream back-end for a ring a client made and produces into; the
 * daemon owns its subscribers.  For each subscriber it creates the record and
 * wake pipe, sends them down the producer's channel and announces them in
 * the ring's control page (ring.md, "remote producers"), and gives the
 * subscriber the ring.  When the producer goes away it ends every
 * subscription itself. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "protocol-private.h"
#include "ring-private.h"
#include "stream.h"

struct remote_sub {
	uint32_t id; /* 0: unused */
	struct fb__subscriber_slot slot;
};

struct published {
	struct fbd_stream base;
	int channel; /* the producer's, to send it registrations */
	uint64_t slot_mask;
	const struct fb__ring_header *hdr;
	struct fb__control *ctl;
	int frame_fd;
	int control_fd;
	uint32_t next_sub_id;
	struct remote_sub subs[FB_MAX_SUBSCRIBERS];
};

static struct published *published(struct fbd_stream *st)
{
	return (struct published *)st;
}

/* Tell the producer, then announce it in the control page: the producer
 * reads its channel at its next claim that sees the count move.  The
 * channel does not block: a producer that stopped reading it costs this
 * subscription, not the daemon. */
static int tell_producer(struct published *pub, uint32_t opcode, const struct remote_sub *rs,
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

static int published_subscribe(struct fbd_stream *st, uint32_t mode, uint32_t max_holds,
			       struct fb_subscriber_fds *ret_fds, uint32_t *ret_ring_id)
{
	struct published *pub = published(st);
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

static struct remote_sub *find(struct published *pub, uint32_t ring_id)
{
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++)
		if (pub->subs[i].id == ring_id)
			return &pub->subs[i];
	return NULL;
}

static void published_unsubscribe(struct fbd_stream *st, uint32_t ring_id)
{
	struct published *pub = published(st);
	struct remote_sub *rs = find(pub, ring_id);

	if (!rs)
		return;
	/* Its slots are free now, whenever the producer reads the removal,
	 * which it is told of first: a producer woken for the space finds it
	 * announced. */
	tell_producer(pub, FB__OP_REMOVE_SUBSCRIBER, rs, 0, 0);
	fb__subscriber_slot_revoke(&rs->slot, pub->ctl);
	fb__subscriber_slot_close(&rs->slot);
	rs->id = 0;
}

/* Through the record, which the producer reads at every claim: nothing to
 * send down its channel. */
static int published_unwait(struct fbd_stream *st, uint32_t ring_id)
{
	struct published *pub = published(st);
	struct remote_sub *rs = find(pub, ring_id);
	if (!rs)
		return -ENOENT;
	fb__subscriber_slot_unwait(&rs->slot, pub->ctl);
	return 0;
}

static int published_subscriber_sample(struct fbd_stream *st, uint32_t ring_id,
				       struct fb__subscriber_sample *ret_sample)
{
	struct published *pub = published(st);
	struct remote_sub *rs = find(pub, ring_id);
	if (!rs)
		return -ENOENT;
	fb__subscriber_slot_sample(&rs->slot, pub->hdr, rs->slot.record->mode, pub->slot_mask,
				   FB__PACKED_SEQ(atomic_load(&pub->hdr->latest)), ret_sample);
	return 0;
}

static void published_counters(struct fbd_stream *st, struct fbd_counters *ret_counters)
{
	struct published *pub = published(st);
	uint32_t n = 0;
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++)
		n += pub->subs[i].id != 0;
	*ret_counters = (struct fbd_counters){
	    .ring =
		{
		    .published = atomic_load_explicit(&pub->hdr->published, memory_order_relaxed),
		    .dropped = atomic_load_explicit(&pub->hdr->dropped, memory_order_relaxed),
		    .subscribers = n,
		},
	};
	fb__ring_latest_times(pub->hdr, &ret_counters->latest_capture_ns,
			      &ret_counters->latest_publish_ns);
}

static void published_free(struct fbd_stream *st, bool end)
{
	struct published *pub = published(st);

	/* The producer may be dead and cannot set closed in the ring (it alone
	 * can write there): end every subscription through its record.  Not
	 * when the daemon stops: the publisher lives on and, publishing again
	 * to the next daemon, revokes them; they subscribe again. */
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++) {
		struct remote_sub *rs = &pub->subs[i];
		if (!rs->id)
			continue;
		if (end)
			fb__subscriber_slot_end(&rs->slot);
		fb__subscriber_slot_close(&rs->slot);
	}
	if (pub->hdr)
		munmap((void *)pub->hdr, sizeof(*pub->hdr));
	if (pub->ctl)
		munmap(pub->ctl, sizeof(*pub->ctl));
	close(pub->frame_fd);
	close(pub->control_fd);
	close(pub->channel);
	fbd_stream_cleanup(st);
	free(pub);
}

static const struct fbd_stream_ops published_ops = {
    .subscribe = published_subscribe,
    .unsubscribe = published_unsubscribe,
    .unwait = published_unwait,
    .subscriber_sample = published_subscriber_sample,
    .counters = published_counters,
    .free = published_free,
};

/* Check what the client sent: the ring's memory against params, and the
 * channel. */
static int check(struct published *pub, const struct fb_ring_params *params, char *why, size_t size)
{
	struct fb_ring_params got;
	struct fb__ring_geometry geo;
	int type = 0;
	socklen_t len = sizeof(type);
	int r;

	if (getsockopt(pub->channel, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    type != SOCK_SEQPACKET || fcntl(pub->channel, F_SETFL, O_NONBLOCK) < 0) {
		snprintf(why, size,
			 "its third descriptor is not a SOCK_SEQPACKET socket for the "
			 "producer's subscribers");
		return -EINVAL;
	}
	r = fb__ring_map_readonly(pub->frame_fd, true, &got, &geo, &pub->hdr);
	if (r < 0) {
		snprintf(why, size, "the ring's memory failed the checks: %s", fb_strerror(r));
		return r;
	}
	if (memcmp(&got, params, sizeof(got))) {
		snprintf(why, size, "the ring's memory does not match the parameters sent");
		return -EINVAL;
	}
	pub->ctl = fb__map_shared_page(pub->control_fd, sizeof(*pub->ctl), FB__CONTROL_MAGIC, &r);
	if (!pub->ctl) {
		snprintf(why, size, "the ring's control page failed the checks: %s",
			 fb_strerror(r));
		return r;
	}
	return 0;
}

int fbd_published_create(const char *name, const char *owner_label,
			 const struct fb_ring_params *params, int frame_fd, int control_fd,
			 int channel, char *why, size_t size, struct fbd_stream **ret_stream)
{
	struct published *pub = calloc(1, sizeof(*pub));
	int r;

	if (!pub) {
		close(frame_fd);
		close(control_fd);
		close(channel);
		snprintf(why, size, "out of memory");
		return -ENOMEM;
	}
	fbd_stream_init(&pub->base, &published_ops, name, params);
	pub->frame_fd = frame_fd;
	pub->control_fd = control_fd;
	pub->channel = channel;
	pub->slot_mask = params->slots == 64 ? UINT64_MAX : (UINT64_C(1) << params->slots) - 1;
	snprintf(pub->base.source, sizeof(pub->base.source), "client:%s", owner_label);
	r = check(pub, params, why, size);
	if (r < 0) {
		published_free(&pub->base, true);
		return r;
	}
	pub->base.state = FB_STREAM_RUNNING;
	*ret_stream = &pub->base;
	return 0;
}
