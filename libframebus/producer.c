/* SPDX-License-Identifier: MIT */
/* The producer side of a ring: it owns the ring, picks slots, publishes and
 * wakes subscribers.  See docs/ring.md for the protocol. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "protocol-private.h"
#include "ring-private.h"

#define CONTROL_SIZE 4096u
/* A blocked producer re-checks the ring at least this often even without a
 * post on the space semaphore: a hostile subscriber that clears
 * producer_waiting can cost latency, never a wedge. */
#define WAIT_SLICE_NS 50000000ull

struct sub_entry {
	struct fb__subscriber_slot slot; /* slot.record NULL: entry unused */
	uint32_t mode;
	uint32_t max_holds;
	uint32_t generation;
	uint32_t remote_id; /* the daemon's id, for a remote registration */
};

struct fb_producer {
	/* Held by every call but while waiting for space: the subscriber table
	 * may change (add, remove) from another thread than the one writing. */
	pthread_mutex_t lock;
	struct fb_ring_params params;
	struct fb__ring_geometry geo;
	int frame_fd;
	int control_fd;
	struct fb__ring_header *hdr;
	struct fb__control *ctl;
	uint8_t *meta;
	uint8_t *data;
	uint64_t slot_mask;
	uint64_t slot_seq[FB_MAX_SLOTS]; /* our copy of what each slot holds; 0: nothing */
	uint64_t last_seq;
	uint64_t published;
	uint64_t dropped;
	int current; /* slot handed out by acquire, -1: none */
	/* A producer whose subscribers the daemon adds (fb_client_publish)
	 * reads them from its end of this channel when control->registrations
	 * moves; -1: none. */
	int channel;
	uint32_t registrations_seen;
	struct fb_frame frame;
	uint32_t n_subs;
	struct sub_entry subs[FB_MAX_SUBSCRIBERS];
};

static uint64_t slot_bit(uint32_t slot)
{
	return UINT64_C(1) << slot;
}

/* Every slot some subscriber holds.  A record claiming more holds than its
 * subscriber may have is ignored: it can only hurt that subscriber. */
static uint64_t held_slots(const struct fb_producer *p)
{
	uint64_t all = 0;
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++) {
		const struct sub_entry *s = &p->subs[i];
		if (!s->slot.record)
			continue;
		uint64_t h = atomic_load(&s->slot.record->held) & p->slot_mask;
		if ((uint32_t)__builtin_popcountll(h) <= s->max_holds)
			all |= h;
	}
	return all;
}

/* The oldest frame some queue subscriber has not read yet. */
static uint64_t min_queue_cursor(const struct fb_producer *p)
{
	uint64_t min = UINT64_MAX;
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++) {
		const struct sub_entry *s = &p->subs[i];
		if (!s->slot.record || s->mode != FB_MODE_QUEUE ||
		    atomic_load_explicit(&s->slot.record->unwaited, memory_order_relaxed))
			continue;
		uint64_t c = atomic_load(&s->slot.record->cursor);
		if (c < min)
			min = c;
	}
	return min;
}

static void read_registrations(struct fb_producer *p);

/* Take slot for writing unless a subscriber holds it.  The store of WRITING
 * and the following load of the holds pair with a subscriber's store of its
 * hold and load of the state (both seq_cst): one of the two sides sees the
 * other, so a slot is never written while a subscriber reads it. */
static bool claim(struct fb_producer *p, uint32_t slot)
{
	uint64_t seq = p->slot_seq[slot];
	uint64_t old = seq ? FB__SLOT_PUBLISHED(seq) : FB__SLOT_EMPTY;

	/* CLAIMING(seq) tells a queue subscriber scanning for frame seq that
	 * it may come back, so it must look again rather than skip it. */
	atomic_store(&p->hdr->slot[slot].state, seq ? FB__SLOT_CLAIMING(seq) : FB__SLOT_WRITING);
	/* A subscriber the daemon registered may hold the slot already: take
	 * in every registration announced before our claim (ring.md, "remote
	 * producers") before looking at the holds. */
	if (p->channel >= 0) {
		uint32_t announced = atomic_load(&p->ctl->registrations);
		if (announced != p->registrations_seen) {
			p->registrations_seen = announced;
			read_registrations(p);
		}
	}
	if (!(held_slots(p) & slot_bit(slot))) {
		atomic_store_explicit(&p->hdr->slot[slot].state, FB__SLOT_WRITING,
				      memory_order_relaxed);
		return true;
	}
	atomic_store(&p->hdr->slot[slot].state, old);
	return false;
}

/* Claim the free slot in mask with the highest (newest) or lowest (oldest)
 * seq; -1 if none can be claimed. */
static int claim_by_age(struct fb_producer *p, uint64_t mask, bool newest)
{
	while (mask) {
		uint32_t best = (uint32_t)__builtin_ctzll(mask);
		for (uint64_t m = mask; m; m &= m - 1) {
			uint32_t i = (uint32_t)__builtin_ctzll(m);
			if (newest ? p->slot_seq[i] > p->slot_seq[best]
				   : p->slot_seq[i] < p->slot_seq[best])
				best = i;
		}
		if (claim(p, best))
			return (int)best;
		mask &= ~slot_bit(best);
	}
	return -1;
}

/* Claim a free slot; -1 if none is free.  First the most recently used of
 * the slots every queue subscriber has read, but not the newest frame, which
 * latest subscribers may still want: while readers keep up, the stream
 * cycles through two or three slots that stay in the CPU caches and the TLB
 * rather than through the whole ring.  Then the newest frame's slot if it
 * was read.  A drop ring then overwrites the oldest unread frame, the one its
 * queue subscribers can best spare; a block ring never overwrites one. */
static int pick_slot(struct fb_producer *p)
{
	uint64_t free = p->slot_mask & ~held_slots(p);
	uint64_t cursor = min_queue_cursor(p), read = 0, newest = 0;

	for (uint32_t i = 0; i < p->params.slots; i++) {
		if (p->slot_seq[i] >= cursor)
			continue;
		if (p->last_seq && p->slot_seq[i] == p->last_seq)
			newest = slot_bit(i);
		else
			read |= slot_bit(i);
	}
	int slot = claim_by_age(p, free & read, true);
	if (slot < 0)
		slot = claim_by_age(p, free & newest, true);
	if (slot < 0 && p->params.policy == FB_POLICY_DROP)
		slot = claim_by_age(p, free & ~read & ~newest, false);
	return slot;
}

/* Wait for a slot to become free, until deadline_ns (0: forever).  Called
 * and returns with p->lock held. */
static int wait_for_slot(struct fb_producer *p, uint64_t deadline_ns)
{
	for (;;) {
		uint64_t now = fb__now_ns(CLOCK_MONOTONIC);
		if (deadline_ns && now >= deadline_ns)
			return -ETIMEDOUT;
		uint64_t until = now + WAIT_SLICE_NS;
		if (deadline_ns && deadline_ns < until)
			until = deadline_ns;

		/* Read the word before announcing the wait: a post after this
		 * read changes it, and the futex wait returns at once. */
		uint32_t seen = atomic_load(&p->ctl->space);
		atomic_store(&p->ctl->producer_waiting, 1);
		int slot = pick_slot(p);
		if (slot < 0) {
			pthread_mutex_unlock(&p->lock);
			(void)fb__futex_wait(&p->ctl->space, seen, until);
			pthread_mutex_lock(&p->lock);
			slot = pick_slot(p);
		}
		atomic_store(&p->ctl->producer_waiting, 0);
		if (slot >= 0)
			return slot;
	}
}

FB_EXPORT int fb_producer_new(const struct fb_ring_params *params, fb_producer **ret_producer)
{
	struct fb_producer *p;
	int r;

	if (!params || !ret_producer)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	p->frame_fd = p->control_fd = p->channel = -1;
	p->current = -1;
	p->params = *params;
	r = fb__ring_geometry_compute(params, &p->geo);
	if (r < 0)
		goto fail;
	p->slot_mask = params->slots == 64 ? UINT64_MAX : slot_bit(params->slots) - 1;

	r = fb__memfd_create("framebus-ring", p->geo.total_size, true);
	if (r < 0)
		goto fail;
	p->frame_fd = r;
	p->hdr = fb__map(p->frame_fd, p->geo.total_size, true);
	if (!p->hdr) {
		r = -errno;
		goto fail;
	}
	/* Only this mapping may ever write the ring: seal it now. */
	if (fcntl(p->frame_fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0) {
		r = -errno;
		goto fail;
	}
	p->meta = (uint8_t *)p->hdr + p->geo.meta_offset;
	p->data = (uint8_t *)p->hdr + p->geo.data_offset;
	/* Large frames in huge pages where the host allows it: fewer TLB
	 * misses for every reader.  A refusal changes nothing else. */
	(void)madvise(p->data, p->geo.slot_size * params->slots, MADV_HUGEPAGE);

	*p->hdr = (struct fb__ring_header){
		.magic = FB__RING_MAGIC,
		.version = FB__RING_VERSION,
		.header_size = sizeof(struct fb__ring_header),
		.width = params->width,
		.height = params->height,
		.format = params->format,
		.slots = params->slots,
		.policy = params->policy,
		.meta_max = params->meta_max,
		.meta_offset = p->geo.meta_offset,
		.data_offset = p->geo.data_offset,
		.slot_size = p->geo.slot_size,
		.total_size = p->geo.total_size,
	};

	r = fb__memfd_create("framebus-control", CONTROL_SIZE, false);
	if (r < 0)
		goto fail;
	p->control_fd = r;
	p->ctl = fb__map(p->control_fd, CONTROL_SIZE, true);
	if (!p->ctl) {
		r = -errno;
		goto fail;
	}
	p->ctl->magic = FB__CONTROL_MAGIC;
	p->ctl->version = FB__RING_VERSION;
	*ret_producer = p;
	return 0;
fail:
	fb_producer_free(p);
	return r;
}

static void drop_sub(struct fb_producer *p, struct sub_entry *s, bool revoke);

FB_EXPORT int fb_producer_end(fb_producer *p)
{
	if (!p)
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	atomic_store(&p->hdr->closed, 1);
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++)
		if (p->subs[i].slot.record)
			fb__subscriber_slot_wake_all(&p->subs[i].slot);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

FB_EXPORT void fb_producer_free(fb_producer *p)
{
	if (p && p->hdr)
		fb_producer_end(p);
	fb__producer_abandon(p);
}

void fb__producer_abandon(fb_producer *p)
{
	if (!p)
		return;
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++)
		if (p->subs[i].slot.record)
			drop_sub(p, &p->subs[i], false);
	if (p->ctl)
		munmap(p->ctl, CONTROL_SIZE);
	if (p->hdr)
		munmap(p->hdr, p->geo.total_size);
	if (p->control_fd >= 0)
		close(p->control_fd);
	if (p->channel >= 0)
		close(p->channel);
	if (p->frame_fd >= 0)
		close(p->frame_fd);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

FB_EXPORT const struct fb_layout *fb_producer_get_layout(const fb_producer *p)
{
	return p ? &p->geo.layout : NULL;
}

FB_EXPORT int fb_producer_acquire(fb_producer *p, int timeout_ms, struct fb_frame **ret_frame)
{
	int slot;

	if (!p || !ret_frame)
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	slot = p->current >= 0 ? -EBUSY : atomic_load(&p->hdr->closed) ? -EPIPE : pick_slot(p);
	if (slot == -1) {
		if (p->params.policy == FB_POLICY_DROP) {
			atomic_store_explicit(&p->hdr->dropped, ++p->dropped, memory_order_relaxed);
			slot = -ENOBUFS;
		} else if (timeout_ms == 0) {
			slot = -ETIMEDOUT;
		} else {
			uint64_t deadline = timeout_ms < 0 ? 0
							   : fb__now_ns(CLOCK_MONOTONIC) +
								     (uint64_t)timeout_ms * 1000000u;
			slot = wait_for_slot(p, deadline);
		}
	}
	if (slot < 0) {
		pthread_mutex_unlock(&p->lock);
		return slot;
	}

	p->current = slot;
	p->slot_seq[slot] = 0; /* its old frame is gone */
	struct fb_frame *f = &p->frame;
	memset(f, 0, sizeof(*f));
	fb__frame_set_planes(f, &p->geo.layout, p->data + p->geo.slot_size * (uint64_t)slot);
	f->meta = p->meta + (uint64_t)p->params.meta_max * (uint64_t)slot;
	f->slot = (uint32_t)slot;
	/* The old frame's trace goes with it (its hops need no clearing). */
	f->trace = &p->hdr->slot[slot].trace;
	memset(f->trace, 0, offsetof(struct fb_trace, hops));
	*ret_frame = f;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

FB_EXPORT int fb_producer_publish(fb_producer *p, struct fb_frame *frame)
{
	if (!p || frame != &p->frame || frame->meta_size > p->params.meta_max)
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	if (p->current < 0) {
		pthread_mutex_unlock(&p->lock);
		return -EINVAL;
	}

	uint32_t slot = (uint32_t)p->current;
	struct fb__slot *s = &p->hdr->slot[slot];
	uint64_t seq = ++p->last_seq;

	frame->seq = seq;
	frame->monotonic_ns = fb__now_ns(CLOCK_MONOTONIC);
	frame->realtime_ns = fb__now_ns(CLOCK_REALTIME);
	s->pts = frame->pts;
	s->monotonic_ns = frame->monotonic_ns;
	s->realtime_ns = frame->realtime_ns;
	s->source_seq = frame->source_seq;
	s->flags = frame->flags;
	s->meta_size = frame->meta_size;
	if (s->trace.n_hops > FB_TRACE_HOPS)
		s->trace.n_hops = FB_TRACE_HOPS;
	atomic_store_explicit(&s->state, FB__SLOT_PUBLISHED(seq), memory_order_release);
	atomic_store_explicit(&p->hdr->log[seq % p->params.slots], FB__PACK(seq, slot),
			      memory_order_release);
	atomic_store_explicit(&p->hdr->published, ++p->published, memory_order_relaxed);
	p->slot_seq[slot] = seq;
	p->current = -1;

	atomic_store_explicit(&p->hdr->latest_capture_ns, s->trace.capture_ns,
			      memory_order_relaxed);
	if (frame->flags & FB_FRAME_DISCONTINUITY)
		atomic_store_explicit(&p->hdr->discontinuity_seq, seq, memory_order_relaxed);
	atomic_store_explicit(&p->hdr->latest_publish_ns, frame->monotonic_ns,
			      memory_order_relaxed);
	/* seq_cst store, then a seq_cst exchange of every armed word: pairs
	 * with a subscriber's store of armed and load of latest (ring.md,
	 * wake-ups). */
	atomic_store(&p->hdr->latest, FB__PACK(seq, slot));
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++) {
		struct sub_entry *e = &p->subs[i];
		/* Neither way of waking can block: FUTEX_WAKE never waits,
		 * and the pipe's write end is non-blocking and ours alone. */
		if (e->slot.record)
			fb__subscriber_slot_wake(&e->slot, atomic_exchange(&e->slot.record->armed,
									    FB__ARMED_NONE));
	}
	pthread_mutex_unlock(&p->lock);
	return 0;
}

FB_EXPORT int fb_producer_discard(fb_producer *p, struct fb_frame *frame)
{
	if (!p || frame != &p->frame)
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	int r = p->current < 0 ? -EINVAL : 0;
	if (r == 0) {
		/* Its old frame may be half overwritten: the slot goes back empty. */
		atomic_store(&p->hdr->slot[p->current].state, FB__SLOT_EMPTY);
		p->current = -1;
	}
	pthread_mutex_unlock(&p->lock);
	return r;
}

/* Put slot in a free entry.  Called with p->lock held. */
static int insert_sub(struct fb_producer *p, const struct fb__subscriber_slot *slot, uint32_t mode,
		      uint32_t max_holds, uint32_t remote_id, uint32_t *ret_id)
{
	uint32_t i;
	for (i = 0; i < FB_MAX_SUBSCRIBERS && p->subs[i].slot.record; i++)
		;
	if (i == FB_MAX_SUBSCRIBERS)
		return -EUSERS;
	p->subs[i] = (struct sub_entry){
		.slot = *slot,
		.mode = mode,
		.max_holds = max_holds,
		.generation = (p->subs[i].generation + 1) & 0xffffffu,
		.remote_id = remote_id,
	};
	p->subs[i].slot.record_fd = -1; /* the mapping is all we keep */
	p->n_subs++;
	atomic_store_explicit(&p->hdr->subscribers, p->n_subs, memory_order_relaxed);
	*ret_id = p->subs[i].generation << 8 | i;
	return 0;
}

/* Where a new subscriber starts: the newest frame, so it sees the current
 * picture at once and a queue subscriber pins nothing older; or the next
 * one if the newest frame's slot is being rewritten, or none was published
 * yet. */
static uint64_t first_seq(const struct fb_producer *p)
{
	uint64_t latest = atomic_load(&p->hdr->latest);
	uint64_t seq = FB__PACKED_SEQ(latest);
	if (!seq || p->current == (int)FB__PACKED_SLOT(latest))
		seq = p->last_seq + 1;
	return seq;
}

FB_EXPORT int fb_producer_add_subscriber(fb_producer *p, uint32_t mode, uint32_t max_holds,
					 struct fb_subscriber_fds *ret_fds, uint32_t *ret_id)
{
	struct fb_subscriber_fds fds = {-1, -1, -1, -1};
	struct fb__subscriber_slot slot;
	int r;

	if (!p || !ret_fds || !ret_id)
		return -EINVAL;
	if (mode != FB_MODE_LATEST && mode != FB_MODE_QUEUE)
		return -EINVAL;
	if (max_holds < 1 || max_holds >= p->params.slots)
		return -EINVAL;
	if (p->n_subs >= FB_MAX_SUBSCRIBERS)
		return -EUSERS;

	pthread_mutex_lock(&p->lock);
	r = fb__subscriber_slot_create(mode, max_holds, first_seq(p), &slot);
	if (r < 0) {
		pthread_mutex_unlock(&p->lock);
		return r;
	}
	fds.frame_fd = fcntl(p->frame_fd, F_DUPFD_CLOEXEC, 3);
	fds.control_fd = fcntl(p->control_fd, F_DUPFD_CLOEXEC, 3);
	fds.record_fd = fcntl(slot.record_fd, F_DUPFD_CLOEXEC, 3);
	fds.wake_fd = fcntl(slot.wake_read_fd, F_DUPFD_CLOEXEC, 3);
	r = fds.frame_fd < 0 || fds.control_fd < 0 || fds.record_fd < 0 || fds.wake_fd < 0
		    ? -errno
		    : insert_sub(p, &slot, mode, max_holds, 0, ret_id);
	pthread_mutex_unlock(&p->lock);
	if (r < 0) {
		fb__subscriber_slot_close(&slot);
		fb_subscriber_fds_close(&fds);
		return r;
	}
	close(slot.record_fd);
	*ret_fds = fds;
	return 0;
}

static struct sub_entry *find_sub(const fb_producer *p, uint32_t id)
{
	uint32_t i = id & 0xffu;
	if (!p || i >= FB_MAX_SUBSCRIBERS || !p->subs[i].slot.record ||
	    p->subs[i].generation != id >> 8)
		return NULL;
	return (struct sub_entry *)&p->subs[i];
}

/* Forget a subscriber: its holds and cursor leave every later decision, so
 * whatever it held is free again.  revoke tells a subscriber still alive
 * (its next acquire fails with -ECANCELED); at the end of the stream it is
 * not told, and reads what is left. */
static void drop_sub(struct fb_producer *p, struct sub_entry *s, bool revoke)
{
	if (revoke)
		fb__subscriber_slot_revoke(&s->slot, p->ctl);
	fb__subscriber_slot_close(&s->slot);
	p->n_subs--;
	atomic_store_explicit(&p->hdr->subscribers, p->n_subs, memory_order_relaxed);
}

FB_EXPORT int fb_producer_remove_subscriber(fb_producer *p, uint32_t id)
{
	if (!p)
		return -EINVAL;
	pthread_mutex_lock(&p->lock);
	struct sub_entry *s = find_sub(p, id);
	if (s)
		drop_sub(p, s, true);
	pthread_mutex_unlock(&p->lock);
	return s ? 0 : -ENOENT;
}

int fb__producer_unwait_subscriber(fb_producer *p, uint32_t id)
{
	pthread_mutex_lock(&p->lock);
	struct sub_entry *s = find_sub(p, id);
	int r = !s ? -ENOENT : s->mode != FB_MODE_QUEUE ? -EINVAL : 0;
	if (r == 0)
		fb__subscriber_slot_unwait(&s->slot, p->ctl);
	pthread_mutex_unlock(&p->lock);
	return r;
}

FB_EXPORT void fb_producer_get_stats(const fb_producer *p, struct fb_ring_stats *ret_stats)
{
	if (!p || !ret_stats)
		return;
	pthread_mutex_lock((pthread_mutex_t *)&p->lock);
	*ret_stats = (struct fb_ring_stats){
		.published = p->published,
		.dropped = p->dropped,
		.subscribers = p->n_subs,
		.held = (uint32_t)__builtin_popcountll(held_slots(p)),
	};
	pthread_mutex_unlock((pthread_mutex_t *)&p->lock);
}

int fb__producer_get_subscriber_sample(fb_producer *p, uint32_t id,
				       struct fb__subscriber_sample *ret_sample)
{
	pthread_mutex_lock(&p->lock);
	const struct sub_entry *s = find_sub(p, id);
	if (s)
		fb__subscriber_slot_sample(&s->slot, p->hdr, s->mode, p->slot_mask, p->last_seq,
					   ret_sample);
	pthread_mutex_unlock(&p->lock);
	return s ? 0 : -ENOENT;
}

FB_EXPORT int fb_producer_get_subscriber_stats(const fb_producer *p, uint32_t id,
					       struct fb_subscriber_stats *ret_stats)
{
	struct fb__subscriber_sample sample;
	if (!p || !ret_stats)
		return -EINVAL;
	int r = fb__producer_get_subscriber_sample((fb_producer *)p, id, &sample);
	if (r == 0)
		*ret_stats = sample.stats;
	return r;
}

void fb__producer_get_latest_times(fb_producer *p, uint64_t *ret_capture_ns,
				   uint64_t *ret_publish_ns)
{
	fb__ring_latest_times(p->hdr, ret_capture_ns, ret_publish_ns);
}

/* Take in a subscriber the daemon created: its record, the write end of its
 * wake pipe and a read end.  Takes the descriptors, on failure too. */
static int register_remote(fb_producer *p, const struct fb__msg_registration *m, int record_fd,
			   int wake_fd, int wake_read_fd)
{
	struct fb__subscriber_slot slot = {.record_fd = -1, .wake_fd = wake_fd,
					   .wake_read_fd = wake_read_fd};
	uint32_t id;
	int r = 0;

	if ((m->mode != FB_MODE_LATEST && m->mode != FB_MODE_QUEUE) || m->max_holds < 1 ||
	    m->max_holds >= p->params.slots || m->subscriber_id == 0)
		r = -EPROTO;
	if (r == 0) {
		struct stat st;
		if (fstat(wake_fd, &st) < 0 || !S_ISFIFO(st.st_mode) ||
		    fcntl(wake_fd, F_SETFL, O_NONBLOCK) < 0)
			r = -EPROTO;
	}
	if (r == 0 && !(slot.record = fb__map_shared_page(record_fd, sizeof(struct fb__record),
							   FB__RECORD_MAGIC, &r)))
		r = r ? r : -EPROTO;
	if (r == 0)
		r = insert_sub(p, &slot, m->mode, m->max_holds, m->subscriber_id, &id);
	close(record_fd);
	if (r < 0) {
		if (slot.record)
			munmap(slot.record, sizeof(struct fb__record));
		close(wake_fd);
		close(wake_read_fd);
	}
	return r;
}

/* Take in every subscriber the daemon added or removed since the last look.
 * Called from a claim, with p->lock held.  Whatever else arrives is dropped:
 * nothing the daemon sends may stop the producer. */
static void read_registrations(struct fb_producer *p)
{
	struct fb__msg m;

	for (;;) {
		int r = fb__msg_recv(p->channel, &m);
		if (r == -EPROTO)
			continue; /* malformed, its descriptors closed */
		if (r < 0)
			break; /* none left, or the daemon hung up */
		if (m.header.opcode == FB__OP_ADD_SUBSCRIBER) {
			register_remote(p, &m.body.registration, m.fds[0], m.fds[1], m.fds[2]);
			continue;
		}
		fb__msg_close_fds(&m);
		if (m.header.opcode != FB__OP_REMOVE_SUBSCRIBER)
			continue;
		for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++)
			if (p->subs[i].slot.record &&
			    p->subs[i].remote_id == m.body.registration.subscriber_id)
				drop_sub(p, &p->subs[i], false);
	}
}

int fb__producer_open_channel(fb_producer *p, int *ret_daemon_end)
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) < 0)
		return -errno;
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < FB_MAX_SUBSCRIBERS; i++)
		if (p->subs[i].slot.record && p->subs[i].remote_id)
			drop_sub(p, &p->subs[i], true);
	if (p->channel >= 0)
		close(p->channel);
	p->channel = pair[0];
	pthread_mutex_unlock(&p->lock);
	*ret_daemon_end = pair[1];
	return 0;
}

int fb__producer_continue(fb_producer *p, uint64_t last_seq)
{
	pthread_mutex_lock(&p->lock);
	int r = p->last_seq || last_seq >= UINT64_MAX >> 9 ? -EINVAL : 0;
	if (r == 0)
		p->last_seq = last_seq;
	pthread_mutex_unlock(&p->lock);
	return r;
}

uint64_t fb__producer_get_last_seq(fb_producer *p)
{
	pthread_mutex_lock(&p->lock);
	uint64_t seq = p->last_seq;
	pthread_mutex_unlock(&p->lock);
	return seq;
}

void fb__producer_set_name(fb_producer *p, const char *name)
{
	pthread_mutex_lock(&p->lock);
	strncpy(p->hdr->name, name, sizeof(p->hdr->name) - 1);
	pthread_mutex_unlock(&p->lock);
}

int fb__producer_get_fds(const fb_producer *p, int *ret_frame_fd, int *ret_control_fd)
{
	*ret_frame_fd = p->frame_fd;
	*ret_control_fd = p->control_fd;
	return 0;
}
