/* SPDX-License-Identifier: MIT */
/* What both sides of a ring share: its geometry and its memory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ring-private.h"

#define PAGE 4096u

static uint64_t align_up64(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

int fb__ring_geometry_compute(const struct fb_ring_params *params,
			      struct fb__ring_geometry *ret_geometry)
{
	struct fb__ring_geometry g = {0};
	int r;

	if (!params)
		return -EINVAL;
	if (params->slots < FB_MIN_SLOTS || params->slots > FB_MAX_SLOTS)
		return -EINVAL;
	if (params->policy != FB_POLICY_DROP && params->policy != FB_POLICY_BLOCK)
		return -EINVAL;
	if (params->meta_max > FB_MAX_META)
		return -EINVAL;
	if (params->format == FB_FORMAT_RESULTS && params->meta_max == 0)
		return -EINVAL; /* a record has nowhere to go */
	for (size_t i = 0; i < sizeof(params->reserved_) / sizeof(params->reserved_[0]); i++)
		if (params->reserved_[i])
			return -EINVAL;
	r = fb_layout_compute(params->width, params->height, params->format, &g.layout);
	if (r < 0)
		return r;

	/* Dimensions are bounded by FB_MAX_DIMENSION, so none of this can
	 * overflow 64 bits: at most 64 slots of 16384 * 16384 * 4 bytes. */
	g.meta_offset = align_up64(sizeof(struct fb__ring_header), FB__CACHELINE);
	g.data_offset =
	    align_up64(g.meta_offset + (uint64_t)params->meta_max * params->slots, PAGE);
	g.slot_size = align_up64(g.layout.frame_size, PAGE);
	g.total_size = g.data_offset + g.slot_size * params->slots;
	*ret_geometry = g;
	return 0;
}

/* Bytes the kernel says it could hand out without swapping, or UINT64_MAX if
 * it does not say. */
static uint64_t memory_available(void)
{
	unsigned long long kib = 0;
	char line[128];
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return UINT64_MAX;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
			break;
	fclose(f);
	return kib ? kib * 1024u : UINT64_MAX;
}

int fb__memfd_create(const char *name, uint64_t size, bool allow_sealing_writes)
{
	int fd, r;

	/* Allocating shared memory past what the host has does not fail
	 * cleanly: it wakes the OOM killer.  Refuse such a ring up front. */
	if (size > memory_available())
		return -ENOMEM;
	fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0)
		goto fail;
	/* Reserve the memory now: a host short of it fails here, not with a
	 * SIGBUS in some client later.  posix_fallocate returns the error. */
	r = posix_fallocate(fd, 0, (off_t)size);
	if (r != 0) {
		errno = r;
		goto fail;
	}
	if (fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | (allow_sealing_writes ? 0 : F_SEAL_SEAL)) < 0)
		goto fail;
	return fd;
fail:
	r = -errno;
	close(fd);
	return r;
}

int64_t fb__memfd_check(int fd, uint64_t min_size, bool read_only)
{
	int want = F_SEAL_SHRINK | F_SEAL_GROW;
	struct stat st;
	int seals;

	if (fd < 0)
		return -EBADF;
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0)
		return errno == EINVAL ? -EBADF : -errno; /* EINVAL: not a memfd */
	if (read_only && !(seals & (F_SEAL_FUTURE_WRITE | F_SEAL_WRITE)))
		return -EBADF;
	if ((seals & want) != want)
		return -EBADF;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < min_size)
		return -EBADF;
	/* Every page allocated, as fb__memfd_create leaves it: mapping a
	 * sparse memfd a peer made would make us allocate its memory. */
	if ((uint64_t)st.st_blocks * 512u < (uint64_t)st.st_size)
		return -EBADF;
	return st.st_size;
}

int fb__ring_map_readonly(int fd, bool header_only, struct fb_ring_params *ret_params,
			  struct fb__ring_geometry *ret_geometry,
			  const struct fb__ring_header **ret_header)
{
	const struct fb__ring_header *h;
	struct fb__ring_geometry g;
	struct fb_ring_params params;
	int64_t size;
	int r = 0;

	size = fb__memfd_check(fd, sizeof(struct fb__ring_header), true);
	if (size < 0)
		return (int)size;
	/* The header alone first: its numbers decide how much to map. */
	h = mmap(NULL, sizeof(*h), PROT_READ, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED)
		return -errno;
	params = (struct fb_ring_params){
	    .width = h->width,
	    .height = h->height,
	    .format = h->format,
	    .slots = h->slots,
	    .policy = h->policy,
	    .meta_max = h->meta_max,
	};
	if (h->magic != FB__RING_MAGIC || h->version != FB__RING_VERSION ||
	    h->header_size != sizeof(*h) || fb__ring_geometry_compute(&params, &g) < 0 ||
	    h->meta_offset != g.meta_offset || h->data_offset != g.data_offset ||
	    h->slot_size != g.slot_size || h->total_size != g.total_size ||
	    (uint64_t)size != g.total_size)
		r = -EPROTO;
	if (r < 0 || header_only) {
		if (r < 0)
			munmap((void *)h, sizeof(*h));
		else
			*ret_header = h;
		if (r == 0) {
			*ret_params = params;
			*ret_geometry = g;
		}
		return r;
	}
	munmap((void *)h, sizeof(*h));
	h = fb__map(fd, g.total_size, false);
	if (!h)
		return -errno;
	*ret_params = params;
	*ret_geometry = g;
	*ret_header = h;
	return 0;
}

void *fb__map_shared_page(int fd, size_t size, uint32_t magic, int *ret_error)
{
	int64_t r = fb__memfd_check(fd, size, false);
	uint32_t *p;

	if (r < 0) {
		*ret_error = (int)r;
		return NULL;
	}
	p = fb__map(fd, size, true);
	if (!p) {
		*ret_error = -errno;
		return NULL;
	}
	if (p[0] != magic || p[1] != FB__RING_VERSION) {
		munmap(p, size);
		*ret_error = -EPROTO;
		return NULL;
	}
	return p;
}

int fb__subscriber_slot_create(uint32_t mode, uint32_t max_holds, uint64_t first_seq,
			       struct fb__subscriber_slot *ret_slot)
{
	struct fb__subscriber_slot s = {.record_fd = -1, .wake_fd = -1, .wake_read_fd = -1};
	int pipe_fds[2], r;

	r = fb__memfd_create("framebus-record", FB__RECORD_SIZE, false);
	if (r < 0)
		return r;
	s.record_fd = r;
	s.record = fb__map(s.record_fd, FB__RECORD_SIZE, true);
	if (!s.record)
		goto fail;
	/* The pollable wake fd for event loops: a pipe, not an eventfd, so
	 * that the producer alone holds the end it writes and no subscriber can
	 * make that write block (an eventfd is one open file for both sides,
	 * whose counter and flags a subscriber controls).  Blocking acquires do
	 * not use it: they sleep on a futex in the record. */
	if (pipe2(pipe_fds, O_CLOEXEC) < 0)
		goto fail;
	s.wake_read_fd = pipe_fds[0];
	s.wake_fd = pipe_fds[1];
	if (fcntl(s.wake_fd, F_SETFL, O_NONBLOCK) < 0)
		goto fail;
	s.record->magic = FB__RECORD_MAGIC;
	s.record->version = FB__RING_VERSION;
	s.record->mode = mode;
	s.record->max_holds = max_holds;
	atomic_store(&s.record->cursor, first_seq ? first_seq : 1);
	/* Armed for the pipe from the start, so that an event loop that polls
	 * the fd before its first acquire still hears of the first frame. */
	atomic_store(&s.record->armed, FB__ARMED_PIPE);
	*ret_slot = s;
	return 0;
fail:
	r = -errno;
	fb__subscriber_slot_close(&s);
	return r;
}

int fb__subscriber_slot_fds(const struct fb__subscriber_slot *s, int frame_fd, int control_fd,
			    struct fb_subscriber_fds *ret_fds)
{
	struct fb_subscriber_fds fds = {
	    .frame_fd = fcntl(frame_fd, F_DUPFD_CLOEXEC, 3),
	    .control_fd = fcntl(control_fd, F_DUPFD_CLOEXEC, 3),
	    .record_fd = fcntl(s->record_fd, F_DUPFD_CLOEXEC, 3),
	    .wake_fd = fcntl(s->wake_read_fd, F_DUPFD_CLOEXEC, 3),
	};
	if (fds.frame_fd < 0 || fds.control_fd < 0 || fds.record_fd < 0 || fds.wake_fd < 0) {
		int r = -errno;
		fb_subscriber_fds_close(&fds);
		return r;
	}
	*ret_fds = fds;
	return 0;
}

void fb__subscriber_slot_close(struct fb__subscriber_slot *s)
{
	if (s->record)
		munmap(s->record, FB__RECORD_SIZE);
	int *fds[] = {&s->record_fd, &s->wake_fd, &s->wake_read_fd};
	for (size_t i = 0; i < 3; i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
	s->record = NULL;
}

void fb__subscriber_slot_wake(const struct fb__subscriber_slot *s, uint32_t armed)
{
	if (armed == FB__ARMED_FUTEX)
		fb__futex_wake(&s->record->armed);
	else if (armed != FB__ARMED_NONE)
		(void)!write(s->wake_fd, "", 1);
}

void fb__subscriber_slot_wake_all(const struct fb__subscriber_slot *s)
{
	atomic_exchange(&s->record->armed, FB__ARMED_NONE);
	fb__futex_wake(&s->record->armed);
	(void)!write(s->wake_fd, "", 1);
}

/* Wake a producer waiting for space, if one is. */
static void post_space(struct fb__control *ctl)
{
	if (atomic_load(&ctl->producer_waiting)) {
		atomic_fetch_add(&ctl->space, 1);
		fb__futex_wake(&ctl->space);
	}
}

void fb__subscriber_slot_revoke(const struct fb__subscriber_slot *s, struct fb__control *ctl)
{
	atomic_store(&s->record->held, 0);
	atomic_store(&s->record->cursor, UINT64_MAX);
	atomic_store(&s->record->revoked, 1);
	fb__subscriber_slot_wake_all(s);
	post_space(ctl);
}

void fb__subscriber_slot_unwait(const struct fb__subscriber_slot *s, struct fb__control *ctl)
{
	atomic_store(&s->record->unwaited, 1);
	post_space(ctl);
}

void fb__subscriber_slot_end(const struct fb__subscriber_slot *s)
{
	atomic_store(&s->record->ended, 1);
	fb__subscriber_slot_wake_all(s);
}

void fb__subscriber_slot_sample(const struct fb__subscriber_slot *s,
				const struct fb__ring_header *h, uint32_t mode, uint64_t slot_mask,
				uint64_t last_seq, struct fb__subscriber_sample *ret)
{
	const struct fb__record *r = s->record;
	uint64_t cursor = atomic_load(&r->cursor);
	uint64_t held = atomic_load(&r->held) & slot_mask;
	ret->held_mask = held;
	for (uint64_t m = held; m; m &= m - 1) {
		uint32_t i = (uint32_t)__builtin_ctzll(m);
		uint64_t state = atomic_load(&h->slot[i].state);
		ret->held_seq[i] = state & 1u ? 0 : state >> 1; /* written or empty: none */
	}
	ret->stats = (struct fb_subscriber_stats){
	    /* A queue subscriber nobody waits for any more reads as latest. */
	    .mode = atomic_load(&r->unwaited) ? FB_MODE_LATEST : mode,
	    .held = (uint32_t)__builtin_popcountll(held),
	    .next_seq = cursor,
	    .lag = last_seq >= cursor ? last_seq - cursor + 1 : 0,
	    .missed = atomic_load(&r->missed),
	};
	ret->frames = atomic_load_explicit(&r->taken, memory_order_relaxed);
	ret->wait_ns = atomic_load_explicit(&r->wait_ns, memory_order_relaxed);
	ret->busy_ns = atomic_load_explicit(&r->busy_ns, memory_order_relaxed);
	for (uint32_t i = 0; i < FB__TIMING_BUCKETS; i++) {
		ret->wait[i] = atomic_load_explicit(&r->wait[i], memory_order_relaxed);
		ret->busy[i] = atomic_load_explicit(&r->busy[i], memory_order_relaxed);
	}
}

void fb__ring_latest_times(const struct fb__ring_header *h, uint64_t *ret_capture_ns,
			   uint64_t *ret_publish_ns)
{
	*ret_capture_ns = atomic_load_explicit(&h->latest_capture_ns, memory_order_relaxed);
	*ret_publish_ns = atomic_load_explicit(&h->latest_publish_ns, memory_order_relaxed);
}

uint32_t fb__timing_bucket(uint64_t ns)
{
	uint64_t us = ns / 1000u;
	if (!us)
		return 0;
	uint32_t log = 63u - (uint32_t)__builtin_clzll(us);
	uint32_t half = log ? (uint32_t)(us >> (log - 1)) & 1u : 0;
	uint32_t b = 1 + 2 * log + half;
	return b < FB__TIMING_BUCKETS ? b : FB__TIMING_BUCKETS - 1;
}

uint64_t fb__timing_bucket_floor_ns(uint32_t b)
{
	if (b == 0)
		return 0;
	uint32_t log = (b - 1) / 2;
	uint64_t us = (UINT64_C(1) << log) + ((b - 1) % 2 ? (UINT64_C(1) << log) / 2 : 0);
	return us * 1000u;
}

void fb__timing_add(_Atomic uint32_t *histogram, _Atomic uint64_t *sum_ns, uint64_t ns)
{
	_Atomic uint32_t *b = &histogram[fb__timing_bucket(ns)];
	atomic_store_explicit(b, atomic_load_explicit(b, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_store_explicit(sum_ns, atomic_load_explicit(sum_ns, memory_order_relaxed) + ns,
			      memory_order_relaxed);
}

void *fb__map(int fd, uint64_t size, bool writable)
{
	void *p = mmap(NULL, size, PROT_READ | (writable ? PROT_WRITE : 0),
		       MAP_SHARED | MAP_POPULATE, fd, 0);
	return p == MAP_FAILED ? NULL : p;
}

uint64_t fb__now_ns(int clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int fb__futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline_ns)
{
	struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
			      .tv_nsec = (long)(deadline_ns % 1000000000u)};
	/* Shared (not FUTEX_PRIVATE_FLAG): the word is in a memfd mapped by
	 * other processes at other addresses. */
	if (syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, deadline_ns ? &ts : NULL, NULL,
		    FUTEX_BITSET_MATCH_ANY) == 0)
		return 0;
	return errno == EINTR || errno == ETIMEDOUT ? -errno : 0;
}

void fb__futex_wake(_Atomic uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

void fb__frame_set_planes(struct fb_frame *frame, const struct fb_layout *layout,
			  uint8_t *slot_data)
{
	for (uint32_t p = 0; p < FB_MAX_PLANES; p++) {
		frame->data[p] = p < layout->n_planes ? slot_data + layout->offset[p] : NULL;
		frame->stride[p] = p < layout->n_planes ? layout->stride[p] : 0;
	}
}

_Static_assert(sizeof(struct fb_stream_info) == 512 &&
		   offsetof(struct fb_stream_info, parent_skipped_busy) == 472,
	       "fb_stream_info keeps its size and layout: new fields take its reserved room");
_Static_assert(sizeof(struct fb_frame) == 144, "fb_frame keeps its size: new fields take "
					       "its reserved room");

/* The ring header a frame's trace lies in: the trace is in the metadata of
 * the frame's slot. */
static const struct fb__ring_header *ring_of(const struct fb_frame *f)
{
	const struct fb__slot *slot =
	    (const struct fb__slot *)((const char *)f->trace - offsetof(struct fb__slot, trace)) -
	    f->slot;
	return (const struct fb__ring_header *)((const char *)slot -
						offsetof(struct fb__ring_header, slot));
}

FB_EXPORT int fb_frame_made_from(struct fb_frame *out, const struct fb_frame *in)
{
	if (!out || !in || !out->trace || !in->trace || in->slot >= FB_MAX_SLOTS)
		return -EINVAL;
	/* A copy first: in's producer may be another process, changing it. */
	struct fb_trace t = *in->trace;
	uint32_t n = t.n_hops < FB_TRACE_HOPS ? t.n_hops : FB_TRACE_HOPS;
	if (n == FB_TRACE_HOPS) { /* keep the origin, leave out the oldest after it */
		memmove(&t.hops[1], &t.hops[2], (FB_TRACE_HOPS - 2) * sizeof(t.hops[0]));
		n--;
	}
	struct fb_hop *hop = &t.hops[n];
	const char *name = ring_of(in)->name;
	memset(hop->stream, 0, sizeof(hop->stream));
	memcpy(hop->stream, name, strnlen(name, FB_NAME_MAX));
	hop->seq = in->seq;
	hop->publish_ns = in->monotonic_ns;
	t.n_hops = n + 1;
	for (uint32_t i = 0; i < n; i++)
		t.hops[i].stream[FB_NAME_MAX] = '\0';
	t.reserved_ = 0;
	*out->trace = t;
	out->source_seq = in->seq;
	return 0;
}

FB_EXPORT void fb_subscriber_fds_close(struct fb_subscriber_fds *fds)
{
	if (!fds)
		return;
	int *all[] = {&fds->frame_fd, &fds->control_fd, &fds->record_fd, &fds->wake_fd};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (*all[i] >= 0)
			close(*all[i]);
		*all[i] = -1;
	}
}

FB_EXPORT const char *fb_strerror(int error)
{
	if (error < 0)
		error = -error;
	switch (error) {
	case ENOBUFS:
		return "every slot of the ring is held; the frame was dropped";
	case EDQUOT:
		return "the subscriber already holds its maximum number of frames";
	case EPIPE:
		return "the stream has ended";
	case EPROTO:
		return "protocol error: the peer sent something malformed";
	case EUSERS:
		return "over a limit: too many clients, subscribers or streams (framebusd's log "
		       "names which)";
	case ECANCELED:
		return "the producer cancelled this subscription";
	case ECONNRESET:
		return "the connection to framebusd was lost";
	case EOWNERDEAD:
		return "the ring's producer went away without ending the stream";
	case ESTALE:
		return "the stream came back with another width, height or format";
	default:
		return strerrordesc_np(error) ? strerrordesc_np(error) : "unknown error";
	}
}

FB_EXPORT uint64_t fb_now_ns(void)
{
	return fb__now_ns(CLOCK_MONOTONIC);
}

FB_EXPORT const char *fb_version(void)
{
	return FB_VERSION_STRING;
}
