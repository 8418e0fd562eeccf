/* SPDX-License-Identifier: MIT */
/* The subscriber side of a ring: attach, acquire, release.  Nothing the
 * producer wrote is trusted before it is checked.  See docs/ring.md. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "ring-private.h"

/* How many times an acquire retries after losing a race with the producer
 * before it reports nothing available; every retry sees a newer frame. */
#define MAX_ATTEMPTS (2 * FB_MAX_SLOTS)
/* How long a blocking acquire watches for a frame before it sleeps, and the
 * longest sleep after which frames still count as streaming in (worth
 * watching for): 20,000 frames a second and more. */
#define SPIN_NS 5000u
#define STREAMING_GAP_NS 50000u
/* How long a wait sleeps before it looks whether the producer still exists. */
#define PRODUCER_CHECK_NS 250000000u
/* Wake-ahead for paced streams (a camera): a CPU that slept a whole frame
 * interval wakes ~10 us slower than one that slept a few hundred
 * microseconds (docs/ring.md, "Wake-ahead").  So a wait for the next frame
 * of a regular stream first sleeps until WAKE_AHEAD_NS before the frame is
 * due, then sleeps again: no spinning, one more wake-up per frame.  Only for
 * streams slower than PACED_MIN_NS a frame whose intervals keep within 1/8
 * of their average (learn_pace), and not when its frames keep it busy
 * (BUSY_NS) and the ring has more subscribers than it has CPUs (crowded). */
#define WAKE_AHEAD_NS 300000u
#define PACED_MIN_NS 2000000u
#define PACED_RUN 4u
#define BUSY_NS 100000u

struct fb_subscriber {
	struct fb_subscriber_fds fds;
	struct fb__ring_geometry geo;
	const struct fb__ring_header *hdr;
	struct fb__control *ctl;
	struct fb__record *rec;
	uint32_t slots;
	uint32_t meta_max;
	uint32_t mode;
	uint32_t max_holds;
	/* Our own copy of rec->held.  Atomic because fb_subscriber_release()
	 * may run in another thread while acquire waits; each side only ever
	 * changes the bits of slots it owns at that moment. */
	_Atomic uint64_t held;
	uint64_t cursor;                /* the next seq to read */
	struct fb__subscription origin; /* how its client made it; token 0: none */
	char name[FB_NAME_MAX + 1];     /* the ring's, copied at attach */
	bool streaming; /* frames come fast: the last acquire slept briefly or not */
	/* The stream's pace, from its frames' publish times (wake-ahead). */
	uint64_t last_publish_ns;
	uint64_t interval_ns;
	uint32_t on_time; /* how many recent intervals were on time */
	/* Timing (ring-private.h, struct fb__record): when each held frame
	 * was taken (0: not timed), and the publish time of the last timed. */
	uint64_t acquired_ns[FB_MAX_SLOTS];
	uint64_t last_timed_ns;
	/* How long it held the last timed frame (set by release, which may
	 * run in another thread than acquire). */
	_Atomic uint64_t held_for_ns;
	struct fb_frame frames[FB_MAX_SLOTS];
};

static bool is_pipe(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

FB_EXPORT int fb_subscriber_attach(const struct fb_subscriber_fds *fds,
				   fb_subscriber **ret_subscriber)
{
	struct fb_subscriber *s;
	int r;

	if (!fds || !ret_subscriber)
		return -EINVAL;
	if (!is_pipe(fds->wake_fd))
		return -EBADF;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;

	struct fb_ring_params params;
	r = fb__ring_map_readonly(fds->frame_fd, false, &params, &s->geo, &s->hdr);
	if (r < 0)
		goto fail;
	s->slots = params.slots;
	s->meta_max = params.meta_max;
	s->ctl = fb__map_shared_page(fds->control_fd, sizeof(*s->ctl), FB__CONTROL_MAGIC, &r);
	if (!s->ctl)
		goto fail;
	s->rec = fb__map_shared_page(fds->record_fd, sizeof(*s->rec), FB__RECORD_MAGIC, &r);
	if (!s->rec)
		goto fail;
	s->mode = s->rec->mode;
	s->max_holds = s->rec->max_holds;
	if ((s->mode != FB_MODE_LATEST && s->mode != FB_MODE_QUEUE) || s->max_holds < 1 ||
	    s->max_holds >= s->slots) {
		r = -EPROTO;
		goto fail;
	}
	if (fcntl(fds->wake_fd, F_SETFL, 0) < 0) { /* blocking: see drain_wakes() */
		r = -errno;
		goto fail;
	}
	s->cursor = atomic_load(&s->rec->cursor);
	/* The producer's word, bounded: it may write there at any time. */
	memcpy(s->name, s->hdr->name, strnlen(s->hdr->name, FB_NAME_MAX));

	const uint8_t *meta = (const uint8_t *)s->hdr + s->geo.meta_offset;
	const uint8_t *data = (const uint8_t *)s->hdr + s->geo.data_offset;
	for (uint32_t i = 0; i < s->slots; i++) {
		struct fb_frame *f = &s->frames[i];
		fb__frame_set_planes(f, &s->geo.layout, (uint8_t *)data + s->geo.slot_size * i);
		f->meta = (uint8_t *)meta + (uint64_t)s->meta_max * i;
		f->slot = i;
	}
	s->fds = *fds;
	*ret_subscriber = s;
	return 0;
fail:
	if (s->rec)
		munmap(s->rec, sizeof(*s->rec));
	if (s->ctl)
		munmap(s->ctl, sizeof(*s->ctl));
	if (s->hdr)
		munmap((void *)s->hdr, s->geo.total_size);
	free(s);
	return r;
}

/* The producer may be waiting for a slot this subscriber just gave up or
 * consumed: pairs with its store of producer_waiting and load of our record. */
static void notify_space(struct fb_subscriber *s)
{
	if (atomic_load(&s->ctl->producer_waiting)) {
		atomic_fetch_add(&s->ctl->space, 1);
		fb__futex_wake(&s->ctl->space);
	}
}

/* Hold slot if it still contains frame seq.  The store of the hold and the
 * load of the state (both seq_cst) pair with the producer's claim. */
static bool hold(struct fb_subscriber *s, uint32_t slot, uint64_t seq)
{
	uint64_t bit = UINT64_C(1) << slot;

	if (atomic_load(&s->held) & bit)
		return false; /* we hold an older frame there, so seq is not in it */
	atomic_fetch_or(&s->rec->held, bit);
	if (atomic_load(&s->hdr->slot[slot].state) == FB__SLOT_PUBLISHED(seq)) {
		atomic_fetch_or(&s->held, bit);
		return true;
	}
	atomic_fetch_and(&s->rec->held, ~bit);
	notify_space(s);
	return false;
}

/* The oldest frame still in the ring with a seq of at least from.  Returns
 * 1 and the frame, 0 if there is none, -EAGAIN if a frame that old is being
 * claimed and may come back: look again. */
static int find_oldest(const struct fb_subscriber *s, uint64_t from, uint64_t *ret_seq,
		       uint32_t *ret_slot)
{
	uint64_t best = UINT64_MAX;
	uint32_t best_slot = 0;

	for (uint32_t i = 0; i < s->slots; i++) {
		uint64_t st = atomic_load_explicit(&s->hdr->slot[i].state, memory_order_relaxed);
		uint64_t seq = st >> 1;
		if (st == FB__SLOT_EMPTY || st == FB__SLOT_WRITING || seq < from)
			continue;
		if (st & 1)
			return -EAGAIN;
		if (seq < best) {
			best = seq;
			best_slot = i;
		}
	}
	if (best == UINT64_MAX)
		return 0;
	*ret_seq = best;
	*ret_slot = best_slot;
	return 1;
}

/* Learn the stream's pace from consecutive frames' publish times (the
 * producer's word: a wrong one only moves our wake-ahead).  The interval is
 * a running average of the intervals that fit it; one late frame halves the
 * run of on-time ones, a new rate empties it and is learnt afresh. */
static void learn_pace(struct fb_subscriber *s, const struct fb_frame *f)
{
	uint64_t t = f->monotonic_ns;

	if (f->missed == 0 && s->last_publish_ns && t > s->last_publish_ns) {
		uint64_t d = t - s->last_publish_ns;
		uint64_t off = d > s->interval_ns ? d - s->interval_ns : s->interval_ns - d;
		if (off <= s->interval_ns / 8) {
			s->interval_ns = s->interval_ns - s->interval_ns / 8 + d / 8;
			if (s->on_time < 2 * PACED_RUN)
				s->on_time++;
		} else if ((s->on_time /= 2) == 0) {
			s->interval_ns = d;
		}
	} else {
		s->on_time = 0;
	}
	s->last_publish_ns = t;
}

/* Whether the frame's wake-up will find the CPUs taken anyway: the ring has
 * more subscribers than this thread has CPUs to run on, and each frame
 * keeps this subscriber busy for a while (it held the last one BUSY_NS or
 * more: the others are likely alike).  Then every subscriber woken ahead
 * crowds the CPUs just before the frame, and the frame's wake-ups queue
 * behind the others' work whatever state the CPUs were in (docs/ring.md,
 * "Wake-ahead").  Subscribers that are quick with their frames gain from it
 * however many they are.  A producer that does not say how many it serves
 * (0: an older library) counts as one. */
static bool crowded(const struct fb_subscriber *s)
{
	uint32_t n = atomic_load_explicit(&s->hdr->subscribers, memory_order_relaxed);
	cpu_set_t cpus;

	if (n <= 1 || atomic_load_explicit(&s->held_for_ns, memory_order_relaxed) < BUSY_NS)
		return false;
	if (sched_getaffinity(0, sizeof(cpus), &cpus) < 0)
		return false; /* more CPUs than a cpu_set_t holds */
	return n > (uint32_t)CPU_COUNT(&cpus);
}

/* When a wait that starts at now should wake ahead of the next frame, or 0
 * (also once it woke ahead: it is then less than WAKE_AHEAD_NS before due). */
static uint64_t wake_ahead_at(const struct fb_subscriber *s, uint64_t now)
{
	if (s->on_time < PACED_RUN || s->interval_ns < PACED_MIN_NS || crowded(s))
		return 0;
	uint64_t due = s->last_publish_ns + s->interval_ns;
	if (now + WAKE_AHEAD_NS >= due)
		return 0;
	return due - WAKE_AHEAD_NS;
}

/* Take the next frame if there is one.  *ret_latest is the value of latest
 * it last saw, for a caller that then waits for it to change. */
static int try_acquire(struct fb_subscriber *s, const struct fb_frame **ret_frame,
		       uint64_t *ret_latest)
{
	bool scan = false;

	for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
		uint64_t latest = atomic_load(&s->hdr->latest);
		uint64_t want = FB__PACKED_SEQ(latest);
		uint32_t slot = FB__PACKED_SLOT(latest);

		*ret_latest = latest;
		if (want < s->cursor)
			return -EAGAIN;
		if (s->mode == FB_MODE_QUEUE) {
			uint64_t e = atomic_load_explicit(&s->hdr->log[s->cursor % s->slots],
							  memory_order_acquire);
			want = s->cursor;
			slot = FB__PACKED_SLOT(e);
			/* Not in the log: overwritten, or being overwritten. */
			if (scan || FB__PACKED_SEQ(e) != want) {
				int found = find_oldest(s, want, &want, &slot);
				if (found == 0) /* only frames being rewritten */
					return -EAGAIN;
				if (found < 0)
					continue;
			}
		}
		if (slot >= s->slots)
			return -EPROTO;
		if (!hold(s, slot, want)) {
			/* The newest frame's slot is being rewritten: nothing to
			 * read until that write is published. */
			if (s->mode == FB_MODE_LATEST && atomic_load(&s->hdr->latest) == latest)
				return -EAGAIN;
			scan = true;
			continue;
		}

		const struct fb__slot *meta = &s->hdr->slot[slot];
		struct fb_frame *f = &s->frames[slot];
		f->seq = want;
		f->source_seq = meta->source_seq;
		f->pts = meta->pts;
		f->monotonic_ns = meta->monotonic_ns;
		f->realtime_ns = meta->realtime_ns;
		f->flags = meta->flags;
		f->meta_size = meta->meta_size;
		f->trace = (struct fb_trace *)&meta->trace;
		f->missed = want - s->cursor;
		/* A discontinuity in the frames it skipped is its own. */
		uint64_t d = atomic_load_explicit(&s->hdr->discontinuity_seq, memory_order_relaxed);
		if (d >= s->cursor && d < want)
			f->flags |= FB_FRAME_DISCONTINUITY;
		if (f->meta_size > s->meta_max) {
			fb_subscriber_release(s, f);
			return -EPROTO;
		}
		s->cursor = want + 1;
		atomic_store(&s->rec->cursor, s->cursor);
		atomic_store_explicit(
		    &s->rec->taken, atomic_load_explicit(&s->rec->taken, memory_order_relaxed) + 1,
		    memory_order_relaxed);
		s->acquired_ns[slot] = 0;
		if (f->monotonic_ns - s->last_timed_ns >= FB__TIMING_GAP_NS) {
			uint64_t now = fb__now_ns(CLOCK_MONOTONIC);
			fb__timing_add(s->rec->wait, &s->rec->wait_ns,
				       now > f->monotonic_ns ? now - f->monotonic_ns : 0);
			s->acquired_ns[slot] = now;
			s->last_timed_ns = f->monotonic_ns;
		}
		learn_pace(s, f);
		if (s->mode == FB_MODE_QUEUE) {
			if (f->missed)
				atomic_fetch_add_explicit(&s->rec->missed, f->missed,
							  memory_order_relaxed);
			notify_space(s);
		}
		*ret_frame = f;
		return 0;
	}
	return -EAGAIN;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/* Watch latest for a few microseconds before sleeping: a frame that comes
 * that soon then costs neither the producer a write() nor us a wake-up,
 * which is what lets a fast stream run at millions of frames a second.  At
 * camera rates it costs SPIN_NS of CPU per frame. */
static bool spin_for_change(const struct fb_subscriber *s, uint64_t seen_latest)
{
	uint64_t start = fb__now_ns(CLOCK_MONOTONIC);

	for (unsigned i = 1;; i++) {
		if (atomic_load_explicit(&s->hdr->latest, memory_order_relaxed) != seen_latest)
			return true;
		if (i % 32 == 0 && fb__now_ns(CLOCK_MONOTONIC) - start > SPIN_NS)
			return false;
		cpu_relax();
	}
}

/* Whether the ring's producer is gone: every write end of the wake pipe is
 * closed (the producer holds one, and framebusd one for the rings of its
 * clients), so no frame and no end of stream can come any more. */
static bool producer_gone(const struct fb_subscriber *s)
{
	struct pollfd pfd = {.fd = s->fds.wake_fd, .events = POLLIN};
	return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP);
}

/* Empty the wake pipe without blocking, before an event loop re-arms it.
 * Returns false if the producer is gone (the pipe is empty and has no
 * writer left): the descriptor would stay readable for ever. */
static bool drain_wakes(struct fb_subscriber *s)
{
	char buf[64];
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};

	ssize_t n = preadv2(s->fds.wake_fd, &iov, 1, -1, RWF_NOWAIT);
	if (n > 0 || (n < 0 && errno != EOPNOTSUPP))
		return !producer_gone(s);
	if (n == 0)
		return false;
	/* Kernels that do not honour RWF_NOWAIT on a pipe. */
	struct pollfd pfd = {.fd = s->fds.wake_fd, .events = POLLIN};
	if (poll(&pfd, 1, 0) == 1 && read(s->fds.wake_fd, buf, sizeof(buf)) == 0)
		return false;
	return !producer_gone(s);
}

FB_EXPORT int fb_subscriber_acquire(fb_subscriber *s, int timeout_ms,
				    const struct fb_frame **ret_frame)
{
	uint64_t deadline = 0, latest;
	bool slept_long = false, lost = false;
	int r;

	if (!s || !ret_frame)
		return -EINVAL;
	if ((uint32_t)__builtin_popcountll(atomic_load(&s->held)) >= s->max_holds)
		return -EDQUOT;
	if (timeout_ms > 0)
		deadline = fb__now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000u;
	for (;;) {
		if (atomic_load(&s->rec->revoked))
			return -ECANCELED;
		bool closed = atomic_load(&s->hdr->closed) || atomic_load(&s->rec->ended);
		r = try_acquire(s, ret_frame, &latest);
		if (r != -EAGAIN) {
			s->streaming = r == 0 && !slept_long;
			return r;
		}
		if (closed)
			return -EPIPE;
		if (lost)
			return -EOWNERDEAD;
		if (deadline && fb__now_ns(CLOCK_MONOTONIC) >= deadline)
			return -ETIMEDOUT;
		/* Watch before sleeping only while frames come faster than we
		 * take them (the last acquire did not sleep): at camera rates a
		 * watch just keeps a core from the producer, which on a small
		 * host still has other subscribers to wake. */
		if (timeout_ms != 0 && s->streaming && spin_for_change(s, latest))
			continue;
		/* Nothing new: ask to be woken, then look once more so that a
		 * frame published meanwhile does not wait for the next one.
		 * An event loop's pipe must be emptied before arming, or it
		 * would stay readable with nothing to read. */
		uint32_t how = timeout_ms == 0 ? FB__ARMED_PIPE : FB__ARMED_FUTEX;
		bool gone = how == FB__ARMED_PIPE && !drain_wakes(s);
		atomic_store(&s->rec->armed, how);
		r = try_acquire(s, ret_frame, &latest);
		if (r != -EAGAIN) {
			s->streaming = r == 0 && !slept_long;
			return r;
		}
		/* The end of the stream (or our removal) pairs the same way
		 * with the arming: the producer stores closed, then takes
		 * armed; we store armed, then load closed. */
		if (atomic_load(&s->hdr->closed) || atomic_load(&s->rec->ended) ||
		    atomic_load(&s->rec->revoked))
			continue;
		if (gone)
			return -EOWNERDEAD;
		if (timeout_ms == 0)
			return -EAGAIN;
		/* Sleep in slices: a producer that died cannot wake us, so
		 * after a wait that timed out look whether it is still there. */
		uint64_t slept_at = fb__now_ns(CLOCK_MONOTONIC);
		uint64_t until = slept_at + PRODUCER_CHECK_NS;
		if (deadline && deadline < until)
			until = deadline;
		uint64_t ahead = wake_ahead_at(s, slept_at);
		bool waking_ahead = ahead && ahead < until;
		if (waking_ahead)
			until = ahead;
		r = fb__futex_wait(&s->rec->armed, FB__ARMED_FUTEX, until);
		slept_long |= fb__now_ns(CLOCK_MONOTONIC) - slept_at > STREAMING_GAP_NS;
		if (r == -EINTR)
			return r;
		lost = r == -ETIMEDOUT && !waking_ahead && producer_gone(s);
	}
}

FB_EXPORT int fb_subscriber_release(fb_subscriber *s, const struct fb_frame *frame)
{
	if (!s || !frame || frame < s->frames || frame >= s->frames + s->slots)
		return -EINVAL;
	uint64_t bit = UINT64_C(1) << (frame - s->frames);
	if (!(atomic_load(&s->held) & bit))
		return -EINVAL;
	/* Before the slot is ours no more (another thread may take it again). */
	uint64_t taken = s->acquired_ns[frame - s->frames];
	/* The record first: then the holds the producer sees are always ours
	 * (plus the one hold() may be trying), never more than max_holds, which
	 * the producer would take for a hostile subscriber and ignore.  Clearing
	 * ours first let a concurrent acquire pass its -EDQUOT check and add a
	 * hold while the record still had the released one. */
	atomic_fetch_and(&s->rec->held, ~bit);
	if (!(atomic_fetch_and(&s->held, ~bit) & bit))
		return -EINVAL;
	notify_space(s);
	if (taken) { /* a timed frame */
		uint64_t now = fb__now_ns(CLOCK_MONOTONIC);
		fb__timing_add(s->rec->busy, &s->rec->busy_ns, now > taken ? now - taken : 0);
		atomic_store_explicit(&s->held_for_ns, now > taken ? now - taken : 0,
				      memory_order_relaxed);
	}
	return 0;
}

FB_EXPORT void fb_subscriber_free(fb_subscriber *s)
{
	if (!s)
		return;
	atomic_store(&s->rec->held, 0);
	notify_space(s);
	munmap(s->rec, sizeof(*s->rec));
	munmap(s->ctl, sizeof(*s->ctl));
	munmap((void *)s->hdr, s->geo.total_size);
	fb_subscriber_fds_close(&s->fds);
	free(s);
}

FB_EXPORT const struct fb_layout *fb_subscriber_get_layout(const fb_subscriber *s)
{
	return s ? &s->geo.layout : NULL;
}

FB_EXPORT uint32_t fb_subscriber_get_meta_max(const fb_subscriber *s)
{
	return s ? s->meta_max : 0;
}

FB_EXPORT uint32_t fb_subscriber_get_slots(const fb_subscriber *s)
{
	return s ? s->slots : 0;
}

FB_EXPORT const struct fb_frame *fb_subscriber_get_slot(const fb_subscriber *s, uint32_t slot)
{
	return s && slot < s->slots ? &s->frames[slot] : NULL;
}

FB_EXPORT const char *fb_subscriber_get_name(const fb_subscriber *s)
{
	return s ? s->name : "";
}

FB_EXPORT uint32_t fb_subscriber_get_mode(const fb_subscriber *s)
{
	return s ? s->mode : 0;
}

FB_EXPORT int fb_subscriber_get_fd(const fb_subscriber *s)
{
	return s ? s->fds.wake_fd : -EINVAL;
}

FB_EXPORT uint32_t fb_subscriber_get_held(const fb_subscriber *s)
{
	return s ? (uint32_t)__builtin_popcountll(atomic_load(&s->held)) : 0;
}

FB_EXPORT uint32_t fb_subscriber_get_max_holds(const fb_subscriber *s)
{
	return s ? s->max_holds : 0;
}

void fb__subscriber_set_origin(fb_subscriber *s, const struct fb__subscription *origin)
{
	s->origin = *origin;
}

const struct fb__subscription *fb__subscriber_get_origin(const fb_subscriber *s)
{
	return &s->origin;
}

void fb__subscriber_go_on_from(fb_subscriber *s, const fb_subscriber *old)
{
	struct stat now, was;
	if (fstat(s->fds.frame_fd, &now) < 0 || fstat(old->fds.frame_fd, &was) < 0 ||
	    now.st_dev != was.st_dev || now.st_ino != was.st_ino || old->cursor <= s->cursor)
		return;
	s->cursor = old->cursor;
	atomic_store(&s->rec->cursor, s->cursor);
}

int fb__subscriber_get_end(const fb_subscriber *s)
{
	if (atomic_load(&s->rec->revoked))
		return -ECANCELED;
	if (atomic_load(&s->hdr->closed) || atomic_load(&s->rec->ended))
		return -EPIPE;
	return producer_gone(s) ? -EOWNERDEAD : 0;
}
