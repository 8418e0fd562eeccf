/* SPDX-License-Identifier: MIT */
/*
 * The ring's shared-memory structures and the helpers both of its sides use.
 * docs/ring.md explains the protocol; every comment here that says "see
 * ring.md" names an invariant stated there.
 */
#ifndef FB_RING_PRIVATE_H
#define FB_RING_PRIVATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "framebus/framebus.h"

#define FB_EXPORT __attribute__((visibility("default")))

#define FB__RING_MAGIC 0x47524246u    /* "FBRG" */
#define FB__CONTROL_MAGIC 0x43524246u /* "FBRC" */
#define FB__RECORD_MAGIC 0x52524246u  /* "FBRR" */
#define FB__RING_VERSION 2u

#define FB__CACHELINE 64
#define FB__ALIGNED __attribute__((aligned(FB__CACHELINE)))

/* Slot state word: 0 before the first write; seq << 1 once frame seq is
 * published in it; odd while the producer has it: (seq << 1) | 1 while it
 * checks for holds on frame seq (it may give the slot back), and just 1 once
 * it writes (the old frame is gone). */
#define FB__SLOT_EMPTY 0u
#define FB__SLOT_WRITING 1u
#define FB__SLOT_PUBLISHED(seq) ((uint64_t)(seq) << 1)
#define FB__SLOT_CLAIMING(seq) (((uint64_t)(seq) << 1) | 1u)

/* latest and log entries pack a sequence number and a slot index. */
#define FB__PACK(seq, slot) (((uint64_t)(seq) << 8) | (uint64_t)(slot))
#define FB__PACKED_SEQ(v) ((v) >> 8)
#define FB__PACKED_SLOT(v) ((uint32_t)((v)&0xffu))

/* Metadata of one slot.  Written by the producer only, while it owns the
 * slot; read by subscribers only while they hold it. */
struct fb__slot {
	_Atomic uint64_t state;
	int64_t pts;
	uint64_t monotonic_ns;
	uint64_t realtime_ns;
	uint64_t source_seq;
	uint32_t flags;
	uint32_t meta_size;
	struct fb_trace trace; /* the producer's frame->trace points here */
} FB__ALIGNED;

/* The start of the frame memfd.  Only the producer can write it (the memfd
 * is sealed against new writable mappings); subscribers trust nothing in it
 * they have not checked. */
struct fb__ring_header {
	uint32_t magic;
	uint32_t version;
	uint32_t header_size;
	uint32_t width;
	uint32_t height;
	uint32_t format;
	uint32_t slots;
	uint32_t policy;
	uint32_t meta_max;
	uint32_t reserved_;
	uint64_t meta_offset; /* side-data blobs, meta_max bytes per slot */
	uint64_t data_offset; /* pixel data, page aligned */
	uint64_t slot_size;   /* distance between two slots' pixels, page multiple */
	uint64_t total_size;
	/* The stream's name, as its maker gave it (fb__producer_set_name), for
	 * the hops of frames made from this ring's; NUL-padded, but a reader
	 * trusts no terminator. */
	char name[FB_NAME_MAX + 1];

	/* Producer's hot words, each on a line of its own. */
	_Atomic uint64_t latest FB__ALIGNED; /* FB__PACK(seq, slot) of the newest frame, 0: none */
	/* The newest frame's capture (its trace's) and publish times, for
	 * status: read without holding its slot. */
	_Atomic uint64_t latest_capture_ns;
	_Atomic uint64_t latest_publish_ns;
	/* The seq of the newest frame published with FB_FRAME_DISCONTINUITY:
	 * a subscriber that skipped it (latest mode, or a queue subscriber
	 * that fell a ring behind) marks the frame it gets instead. */
	_Atomic uint64_t discontinuity_seq;
	_Atomic uint32_t closed FB__ALIGNED; /* 1 once the producer ended the stream */
	_Atomic uint64_t published;
	_Atomic uint64_t dropped;
	/* How many subscribers the producer serves, for their wake-ahead
	 * (ring.md, "Wake-ahead"); 0 from a producer older than it (unknown).
	 * In this line's padding: no offset moved, version 2 unchanged. */
	_Atomic uint32_t subscribers;

	/* log[seq % slots] = FB__PACK(seq, slot) of recent frames: where a
	 * queue subscriber finds frame seq without scanning the slots. */
	_Atomic uint64_t log[FB_MAX_SLOTS] FB__ALIGNED;

	struct fb__slot slot[FB_MAX_SLOTS];
};

/* Version 2's layout, which the words added in padding must not move. */
_Static_assert(__builtin_offsetof(struct fb__ring_header, log) == 320 &&
		   __builtin_offsetof(struct fb__ring_header, slot) == 832,
	       "ring header layout (version 2)");

/* The control memfd, shared read-write by the producer and every subscriber:
 * what a subscriber must write to wake a producer waiting for space.  A
 * semaphore of our own on a futex word rather than a glibc sem_t, whose
 * internals (its futex flags) a hostile peer could corrupt into an abort().
 * No value written here can do more than wake the producer early or late
 * (ring.md, "hostile peers"). */
struct fb__control {
	uint32_t magic;
	uint32_t version;
	_Atomic uint32_t producer_waiting FB__ALIGNED;
	_Atomic uint32_t space; /* futex: bumped by each post */
	/* Bumped by the daemon after it sent a producer in another process a
	 * subscriber to add or remove (ring.md, "remote producers"). */
	_Atomic uint32_t registrations FB__ALIGNED;
};

/* How long a subscriber's frames took, counted by its own library in its
 * record (wait: from a frame's publish until the subscriber had it; busy:
 * from then until it released it), as histograms in half octaves of
 * microseconds (fb__timing_bucket).  A frame is timed if it was published
 * at least FB__TIMING_GAP_NS after the last timed one: every frame of a
 * camera, a sample of a stream of thousands a second (the two clock reads
 * would cost it more than the rest of an acquire).  Only the subscriber
 * writes them; framebusd reads them at any time, and a wrong value misleads
 * only about that subscriber. */
#define FB__TIMING_BUCKETS 48
#define FB__TIMING_GAP_NS 1000000u

/* A subscriber's own record, in a memfd only it and its producer map.  The
 * subscriber writes held, cursor, armed and missed; mode and max_holds are
 * set by the producer at creation and kept by the producer on its side too, so
 * changing them here fools nobody but the subscriber itself. */
struct fb__record {
	uint32_t magic;
	uint32_t version;
	uint32_t mode;
	uint32_t max_holds;
	_Atomic uint64_t held FB__ALIGNED;  /* bit i: slot i is held */
	_Atomic uint64_t cursor;            /* the next seq it will read */
	_Atomic uint64_t missed;            /* frames it lost by falling behind */
	_Atomic uint32_t armed FB__ALIGNED; /* enum fb__armed, and a futex */
	_Atomic uint32_t revoked;           /* set by the producer when it drops us */
	_Atomic uint32_t ended;             /* set by the daemon when the producer died */
	_Atomic uint64_t taken FB__ALIGNED; /* frames it acquired, timed or not */
	_Atomic uint64_t wait_ns;           /* the sums of the timed frames' times */
	_Atomic uint64_t busy_ns;
	_Atomic uint32_t wait[FB__TIMING_BUCKETS];
	_Atomic uint32_t busy[FB__TIMING_BUCKETS];
	/* Set by the producer's side (framebusd) when a queue subscriber kept a
	 * block producer waiting too long: from then on the producer never
	 * waits for its cursor, as for a latest subscriber.  The subscriber
	 * reads on in order and finds what was overwritten missed.  Written
	 * here by the subscriber, it would fool nobody but itself.  At the
	 * end: a record without it (an older library's) reads it as 0. */
	_Atomic uint32_t unwaited FB__ALIGNED;
};

#define FB__RECORD_SIZE 4096u

/* How a subscriber that found nothing new wants the next publish to wake
 * it (record.armed).  The producer exchanges it for NONE and then wakes the
 * futex, or writes the wake pipe. */
enum fb__armed {
	FB__ARMED_NONE = 0,
	FB__ARMED_FUTEX = 1, /* sleeping in FUTEX_WAIT on armed itself */
	FB__ARMED_PIPE = 2,  /* an event loop polls the wake pipe */
};

/* Sizes and offsets of a ring's frame memfd, computed from its parameters
 * alone, so both sides derive them and neither trusts the other's numbers. */
struct fb__ring_geometry {
	struct fb_layout layout;
	uint64_t meta_offset;
	uint64_t data_offset;
	uint64_t slot_size;
	uint64_t total_size;
};

int fb__ring_geometry_compute(const struct fb_ring_params *params,
			      struct fb__ring_geometry *ret_geometry);

/* Check a frame memfd someone else made (seals, size, every page allocated,
 * a header that describes exactly the ring our own geometry computation
 * does) and map it read-only, whole or (header_only: sizeof the header, for
 * the daemon's counters) not.  -EBADF, -EPROTO or -errno. */
int fb__ring_map_readonly(int fd, bool header_only, struct fb_ring_params *ret_params,
			  struct fb__ring_geometry *ret_geometry,
			  const struct fb__ring_header **ret_header);

/* Check and map a shared page (control or record) that must start with
 * magic and our version; NULL with *ret_error set on failure. */
void *fb__map_shared_page(int fd, size_t size, uint32_t magic, int *ret_error);

/* What a producer needs of one subscriber: its record (mapped), the write end
 * of its wake pipe, and a read end kept so that a write after the subscriber
 * died is never a SIGPIPE.  The subscriber gets a copy of record_fd and of
 * the read end. */
struct fb__subscriber_slot {
	struct fb__record *record;
	int record_fd;
	int wake_fd;
	int wake_read_fd;
};

int fb__subscriber_slot_create(uint32_t mode, uint32_t max_holds, uint64_t first_seq,
			       struct fb__subscriber_slot *ret_slot);
void fb__subscriber_slot_close(struct fb__subscriber_slot *slot);
/* New descriptors for the subscriber itself: the ring's two and copies of
 * the slot's record and read end. */
int fb__subscriber_slot_fds(const struct fb__subscriber_slot *slot, int frame_fd, int control_fd,
			    struct fb_subscriber_fds *ret_fds);
/* Wake it the way it armed itself (armed: what it held before the
 * exchange).  Never blocks. */
void fb__subscriber_slot_wake(const struct fb__subscriber_slot *slot, uint32_t armed);

/* Wake it in whatever wait it is or is about to be (an end or a revocation
 * must reach it wherever it sleeps).  Never blocks. */
void fb__subscriber_slot_wake_all(const struct fb__subscriber_slot *slot);
/* Drop a subscriber still alive: its next acquire fails with -ECANCELED, and
 * from now on what it held and where its cursor stands pin nothing (a
 * producer waiting for space is posted). */
void fb__subscriber_slot_revoke(const struct fb__subscriber_slot *slot, struct fb__control *ctl);
/* Stop waiting for a queue subscriber that stalls a block producer (its
 * record's unwaited); a producer waiting for space is posted. */
void fb__subscriber_slot_unwait(const struct fb__subscriber_slot *slot, struct fb__control *ctl);
/* The producer died without ending the stream (only it can set closed): the
 * subscriber reads what is left, then gets -EPIPE. */
void fb__subscriber_slot_end(const struct fb__subscriber_slot *slot);
/* The newest frame's capture and publish times (CLOCK_MONOTONIC; 0, 0: no
 * frame yet). */
void fb__ring_latest_times(const struct fb__ring_header *header, uint64_t *ret_capture_ns,
			   uint64_t *ret_publish_ns);
/* Count one duration: the bucket is 0 under 1 us, else 1 + 2 * log2(us)
 * + the next bit (half octaves), the last one open-ended (8.4 s and up). */
uint32_t fb__timing_bucket(uint64_t ns);
/* Count one duration in a histogram of the subscriber's own and its sum (it
 * is the only writer: no read-modify-write needed). */
void fb__timing_add(_Atomic uint32_t *histogram, _Atomic uint64_t *sum_ns, uint64_t ns);
/* The shortest duration bucket b holds. */
uint64_t fb__timing_bucket_floor_ns(uint32_t bucket);
/* What a subscriber's record shows: its counters, the frames it took, and
 * its wait and busy histograms as they stand (they only grow; a reader takes
 * differences). */
struct fb__subscriber_sample {
	struct fb_subscriber_stats stats;
	/* The slots it holds, and the frame in each as the ring's header says
	 * (the producer's word, not the subscriber's): seq, 0 for none. */
	uint64_t held_mask;
	uint64_t held_seq[FB_MAX_SLOTS];
	uint64_t frames;
	uint64_t wait_ns, busy_ns;
	uint32_t wait[FB__TIMING_BUCKETS];
	uint32_t busy[FB__TIMING_BUCKETS];
};
/* Read it, and the frames in the slots it holds from the ring's header h;
 * last_seq: the newest frame published. */
void fb__subscriber_slot_sample(const struct fb__subscriber_slot *slot,
				const struct fb__ring_header *h, uint32_t mode, uint64_t slot_mask,
				uint64_t last_seq, struct fb__subscriber_sample *ret_sample);

/* A memfd of size bytes, all of it allocated now, sealed against resizing.
 * Returns the fd or -errno. */
int fb__memfd_create(const char *name, uint64_t size, bool allow_sealing_writes);

/* Check that fd is a memfd sealed against shrinking and growing (and, if
 * read_only, against new writable mappings) of at least min_size bytes.
 * Returns its size or -errno. */
int64_t fb__memfd_check(int fd, uint64_t min_size, bool read_only);

/* Map size bytes of fd, populated; returns MAP_FAILED-free pointer or NULL
 * with errno set. */
void *fb__map(int fd, uint64_t size, bool writable);

uint64_t fb__now_ns(int clock);

/* Futex wait (until deadline_ns on CLOCK_MONOTONIC, 0: forever) and wake on a
 * word in shared memory.  A caller always re-checks what it waits for, so
 * every return may be spurious; the wait reports only -EINTR (a signal) and
 * -ETIMEDOUT, the wake nothing. */
int fb__futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t deadline_ns);
void fb__futex_wake(_Atomic uint32_t *word);

/* How fb_client_subscribe() made a subscriber: what the client knows it by
 * (its connection count << 32 | the daemon's id), and what it asked for, to
 * ask again (fb_client_resubscribe()). */
struct fb__subscription {
	uint64_t token;
	char stream[FB_NAME_MAX + 1];
	uint32_t max_holds; /* as asked: 0, the daemon's default */
	/* Made by fb_client_subscribe_derived(): from what, and how. */
	bool derived;
	char parent[FB_NAME_MAX + 1];
	struct fb_derived spec;
};
void fb__subscriber_set_origin(fb_subscriber *subscriber, const struct fb__subscription *origin);
const struct fb__subscription *fb__subscriber_get_origin(const fb_subscriber *subscriber);
/* Why its frames stopped, once they did: -ECANCELED (its producer dropped
 * it), -EPIPE (the stream ended) or -EOWNERDEAD (the producer went away
 * without ending it); 0 while it may still get frames. */
int fb__subscriber_get_end(const fb_subscriber *subscriber);
/* A subscription made again (fb_client_resubscribe) on the very ring the
 * old one read, a client's ring that outlived a daemon restart, goes on
 * after the last frame the old one took: none twice.  A new ring (the
 * daemon's own, made again) changes nothing. */
void fb__subscriber_go_on_from(fb_subscriber *subscriber, const fb_subscriber *old);

/* A producer whose subscribers come from the daemon (fb_client_publish):
 * a new channel for the daemon to send it subscribers on (ADD_SUBSCRIBER,
 * REMOVE_SUBSCRIBER), which the producer reads itself, in its claims, when
 * the control page's registrations count moved (ring.md, "remote
 * producers").  Drops (and revokes) every subscriber the previous channel
 * brought: that daemon is gone.  *ret_daemon_end is the daemon's end, for
 * the caller to send with CREATE_STREAM and close. */
int fb__producer_open_channel(fb_producer *producer, int *ret_daemon_end);
/* Free a producer without ending its stream, as if its process had died:
 * its subscribers read what is left, then get -EOWNERDEAD once nobody else
 * holds their wake pipes (framebusd stopping: they subscribe again to the
 * daemon that comes next).  Accepts NULL. */
void fb__producer_abandon(fb_producer *producer);
/* Number this ring's frames on from last_seq (the next is last_seq + 1):
 * the ring replaces one that got that far (framebusd after a restart,
 * docs/daemon.md).  Only before the first publish: -EINVAL after it. */
int fb__producer_continue(fb_producer *producer, uint64_t last_seq);
/* The newest frame's seq, 0: none yet. */
uint64_t fb__producer_get_last_seq(fb_producer *producer);
/* fb__subscriber_slot_unwait() for subscriber id: -ENOENT, or -EINVAL for a
 * latest subscriber. */
int fb__producer_unwait_subscriber(fb_producer *producer, uint32_t id);
/* fb_producer_get_subscriber_stats() with the subscriber's timing. */
int fb__producer_get_subscriber_sample(fb_producer *producer, uint32_t id,
				       struct fb__subscriber_sample *ret_sample);
/* CLOCK_MONOTONIC capture and publish times of the newest frame (0, 0:
 * none), as its trace and slot say. */
void fb__producer_get_latest_times(fb_producer *producer, uint64_t *ret_capture_ns,
				   uint64_t *ret_publish_ns);
/* Name the ring's stream (at most FB_NAME_MAX bytes are kept). */
void fb__producer_set_name(fb_producer *producer, const char *name);
/* The ring's descriptors, still owned by the producer. */
int fb__producer_get_fds(const fb_producer *producer, int *ret_frame_fd, int *ret_control_fd);

/* Point frame's plane pointers at the pixels of slot. */
void fb__frame_set_planes(struct fb_frame *frame, const struct fb_layout *layout,
			  uint8_t *slot_data);

#endif
