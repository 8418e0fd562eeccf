/* SPDX-License-Identifier: MIT */
/*
 * framebus: move live video frames between processes with zero copies.
 *
 * This is the whole public C API of libframebus.
 *
 * Conventions
 * - Functions that can fail return int: >= 0 on success, a negative errno
 *   value on failure (fb_strerror() describes it).  Output parameters are
 *   named ret_* and are left untouched when a call fails.
 * - Objects are opaque and released with *_free(), which accepts NULL.
 * - An object is not thread-safe: one thread at a time may call into it.
 *   Different objects may be used from different threads freely (a
 *   published stream's producer too, apart from its client).  One
 *   exception: a producer's subscribers may be added, removed and counted
 *   from another thread than the one that acquires and publishes, and a
 *   subscriber's frames may be released from any thread, also while another
 *   thread waits in fb_subscriber_acquire() (so that a language runtime can
 *   release frames from its garbage collector).
 * - The library never prints and never raises signals.
 *
 * The ring
 * A stream is one ring of N frame slots (FB_MIN_SLOTS..FB_MAX_SLOTS) in
 * shared memory with a fixed geometry.  One fb_producer writes it; any number
 * of fb_subscriber objects (up to FB_MAX_SUBSCRIBERS, in this or other
 * processes) read it with zero copies.  The producer hands each subscriber
 * four file descriptors (struct fb_subscriber_fds); passing them to another
 * process (SCM_RIGHTS, fork) and calling fb_subscriber_attach() there is all
 * it takes.  docs/ring.md describes the shared-memory protocol.
 */
#ifndef FRAMEBUS_H
#define FRAMEBUS_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Version of this header; the library's own is fb_version(). */
#define FB_VERSION_MAJOR 0
#define FB_VERSION_MINOR 1
#define FB_VERSION_MICRO 0

#define FB_MAX_PLANES 4
#define FB_MIN_SLOTS 2
#define FB_MAX_SLOTS 64
#define FB_MAX_SUBSCRIBERS 64
/** Largest width or height accepted. */
#define FB_MAX_DIMENSION 16384
/** Largest per-frame side-data blob a stream may reserve. */
#define FB_MAX_META 65536
/** Longest stream or client name, without the terminating NUL. */
#define FB_NAME_MAX 63

/** Pixel formats.  Values are stable: they cross process boundaries. */
enum fb_format {
	FB_FORMAT_GRAY8 = 1,   /**< one 8-bit plane */
	FB_FORMAT_BGR24 = 2,   /**< packed B, G, R (OpenCV's default) */
	FB_FORMAT_RGB24 = 3,   /**< packed R, G, B */
	FB_FORMAT_BGRA = 4,    /**< packed B, G, R, A */
	FB_FORMAT_NV12 = 5,    /**< Y plane, then interleaved U/V at half size */
	FB_FORMAT_YUV420P = 6, /**< Y, U, V planes, chroma at half size */
	/** No pixels: each frame is one record (JSON or bytes) in its meta, a
	 * results stream's (fb_client_publish_results()).  Width and height 0. */
	FB_FORMAT_RESULTS = 7,
	FB_FORMAT_YUYV422 = 8, /**< packed Y0 U Y1 V, 4:2:2 (UVC cameras'); even widths */
	FB_FORMAT_GRAY16 = 9,  /**< one 16-bit plane, little-endian (depth, thermal) */
	FB_FORMAT_RGBA = 10,   /**< packed R, G, B, A */
};

/** What a producer does when every slot is taken. */
enum fb_policy {
	/** Never block: reuse the oldest slot nobody holds, else drop the frame. */
	FB_POLICY_DROP = 0,
	/** Wait (with a timeout) until every queue subscriber consumed a slot
	 * and nobody holds it: no frame is lost. */
	FB_POLICY_BLOCK = 1,
};

/** How a subscriber walks the ring. */
enum fb_mode {
	/** Each acquire returns the newest frame not yet seen. */
	FB_MODE_LATEST = 0,
	/** Each acquire returns the next frame in order; a subscriber that
	 * falls more than the ring's depth behind resumes at the oldest frame
	 * still there and fb_frame.missed says how many it lost. */
	FB_MODE_QUEUE = 1,
};

/** Frame flags (fb_frame.flags).  The end of a stream is no flag: acquire
 * returns -EPIPE once its last frame was read.  (Bit 1 is not used.) */
enum fb_frame_flags {
	FB_FRAME_KEYFRAME = 1u << 0,
	/** Frames before this one are missing or unrelated: its source
	 * restarted (a camera that came back, a daemon restart), or, seen by a
	 * subscriber, one it skipped was so marked. */
	FB_FRAME_DISCONTINUITY = 1u << 2,
};

/** Geometry of one frame: planes, their offsets inside a slot and their
 * strides.  Strides are multiples of 64 bytes. */
struct fb_layout {
	uint32_t width;
	uint32_t height;
	uint32_t format; /**< enum fb_format */
	uint32_t n_planes;
	uint32_t stride[FB_MAX_PLANES];       /**< bytes per row of each plane */
	uint32_t plane_height[FB_MAX_PLANES]; /**< rows of each plane */
	uint64_t offset[FB_MAX_PLANES];       /**< plane start inside the frame */
	uint64_t frame_size;                  /**< bytes of pixel data in one frame */
};

/**
 * Compute the layout of a width x height frame of the given format.
 * Returns -EINVAL for an unknown format, a zero or odd size where the format
 * subsamples chroma, or a dimension above FB_MAX_DIMENSION.  FB_FORMAT_RESULTS
 * takes 0 x 0 only and has no planes.
 */
int fb_layout_compute(uint32_t width, uint32_t height, uint32_t format,
		      struct fb_layout *ret_layout);

/** Name of a format ("bgr24", ...), or NULL if unknown. */
const char *fb_format_name(uint32_t format);
/** Format for a name as fb_format_name() spells it; -EINVAL if unknown. */
int fb_format_from_name(const char *name);

/** Describe an error code returned by this library (negative or positive). */
const char *fb_strerror(int error);

/** The library's version as "MAJOR.MINOR.MICRO". */
const char *fb_version(void);

/** CLOCK_MONOTONIC now, in nanoseconds: the clock of fb_frame.monotonic_ns,
 * so a frame's age is fb_now_ns() - frame->monotonic_ns. */
uint64_t fb_now_ns(void);

/** The longest slice fb_thread_set_sched_slice() takes (the kernel keeps
 * slices between 0.1 and 100 ms). */
#define FB_SCHED_SLICE_MAX_NS 1000000000u

/**
 * Set the calling thread's time slice under Linux's fair scheduler
 * (sched_setattr()'s sched_runtime, EEVDF custom slices from Linux 6.12) to
 * slice_ns; 0 gives it the kernel's default back.  A thread with a short
 * slice gets an early deadline, so that when it wakes it preempts a thread
 * that has run for a while instead of waiting for that thread's slice to
 * end.  The kernel keeps slices between 0.1 and 100 ms (100000 asks for the
 * shortest); kernels before 6.12 accept and ignore it.  The thread's
 * policy, nice value and reset-on-fork flag stay as they are.  The library
 * never calls it by itself: a consumer thread on a busy host may ask for
 * it (docs/ring.md, "Short slice", says what it gains and where it costs).
 *
 * *ret_previous_ns (may be NULL): the slice the thread had, as the kernel
 * reports it (0 from a kernel without custom slices), to give it back with
 * (a default slice given back so becomes the thread's own: the same length,
 * no longer following the kernel's default).
 * Returns -EINVAL for a slice above FB_SCHED_SLICE_MAX_NS, -EOPNOTSUPP when
 * the thread is not under the fair scheduler (SCHED_OTHER, SCHED_BATCH), or
 * the kernel's error.
 */
int fb_thread_set_sched_slice(uint64_t slice_ns, uint64_t *ret_previous_ns);

/** Everything needed to create a ring.  Zero-initialise, then fill in: the
 * reserved room must stay zero (-EINVAL otherwise), so that fields added
 * there later mean "as before" when zero. */
struct fb_ring_params {
	uint32_t width;
	uint32_t height;
	uint32_t format;   /**< enum fb_format */
	uint32_t slots;    /**< FB_MIN_SLOTS..FB_MAX_SLOTS */
	uint32_t policy;   /**< enum fb_policy */
	uint32_t meta_max; /**< bytes of side data per frame, 0..FB_MAX_META;
			      at least 1 for FB_FORMAT_RESULTS */
	uint32_t reserved_[10];
};

/** How many rings a frame's trace names before its own (fb_trace.hops). */
#define FB_TRACE_HOPS 4

/** One ring a picture passed on its way: which frame it was there. */
struct fb_hop {
	char stream[FB_NAME_MAX + 1]; /**< the stream's name, NUL-terminated */
	uint64_t seq;                 /**< the frame's seq in that stream */
	uint64_t publish_ns;          /**< CLOCK_MONOTONIC when it was published there */
};

/**
 * Where a frame's picture comes from and how old it is, carried with every
 * frame in the slot's metadata (docs/tracing.md).  Times are CLOCK_MONOTONIC
 * nanoseconds (fb_now_ns()) unless named realtime; 0 means unknown.  A
 * producer that makes a frame from another calls fb_frame_made_from(), which
 * copies the other's trace and appends its ring to hops.
 */
struct fb_trace {
	/** When the picture was captured: for a network camera the arrival of
	 * its packet, for a file or a test pattern when it was read, just before
	 * decoding; a producer with a camera of its own sets it. */
	uint64_t capture_ns;
	uint64_t capture_realtime_ns; /**< the same instant on CLOCK_REALTIME */
	uint64_t decode_ns;           /**< when framebusd's decoder gave the picture */
	int32_t time_base_num;        /**< pts is in units of num/den seconds; 0/0: unknown */
	int32_t time_base_den;
	/** Rings the picture passed before this one, the origin first (a
	 * frame with none is its own origin).  Past FB_TRACE_HOPS the oldest
	 * after the origin are left out. */
	uint32_t n_hops;
	uint32_t reserved_;
	struct fb_hop hops[FB_TRACE_HOPS];
};

/**
 * One frame in a slot.  The library owns this structure; it stays valid until
 * the frame is released (subscriber) or published/discarded (producer).
 *
 * For a subscriber, data[], meta and trace point into read-only memory:
 * writing there faults.  For a producer they point into the slot being
 * written; fill the pixels and set pts, flags, source_seq, meta_size and the
 * trace (it starts empty), then publish: seq and the timestamps are stamped by
 * fb_producer_publish().
 */
struct fb_frame {
	uint8_t *data[FB_MAX_PLANES];
	uint32_t stride[FB_MAX_PLANES];
	uint64_t seq;          /**< 1, 2, 3, ... per stream, in publish order */
	uint64_t source_seq;   /**< the frame this one was made from, or 0 */
	int64_t pts;           /**< presentation time in the source's time base */
	uint64_t monotonic_ns; /**< CLOCK_MONOTONIC at publish */
	uint64_t realtime_ns;  /**< CLOCK_REALTIME at publish */
	uint32_t flags;        /**< enum fb_frame_flags */
	uint32_t meta_size;    /**< bytes of side data at meta */
	uint8_t *meta;         /**< side data, up to the stream's meta_max */
	uint64_t missed;       /**< subscriber: frames skipped just before this one */
	uint32_t slot;         /**< slot index, for diagnostics */
	uint32_t reserved0_;
	struct fb_trace *trace; /**< where its picture comes from (never NULL) */
	uint32_t reserved_[4];
};

/**
 * Say that out (a producer's frame, not yet published) was made from in (a
 * frame acquired from any ring, or another producer's): out gets in's
 * capture and decode times and time base, in's hops plus in itself, and
 * source_seq = in->seq.  Returns -EINVAL for NULL or a frame without a trace.
 */
int fb_frame_made_from(struct fb_frame *out, const struct fb_frame *in);

/** The file descriptors that let one subscriber attach to a ring. */
struct fb_subscriber_fds {
	int frame_fd;   /**< sealed memfd: header, slot metadata and pixels */
	int control_fd; /**< memfd shared by all subscribers: the space semaphore */
	int record_fd;  /**< memfd of this subscriber alone: its holds and cursor */
	int wake_fd;    /**< read end of the pipe the producer writes for event loops */
};

/** Counters of a ring, as seen by its producer. */
struct fb_ring_stats {
	uint64_t published;   /**< frames published */
	uint64_t dropped;     /**< publishes dropped because every slot was held */
	uint32_t subscribers; /**< subscribers currently added */
	uint32_t held;        /**< slots held by subscribers right now */
};

/** Per-subscriber counters, as seen by the producer. */
struct fb_subscriber_stats {
	uint32_t mode;     /**< enum fb_mode */
	uint32_t held;     /**< frames it holds right now */
	uint64_t next_seq; /**< the next frame it will read */
	uint64_t lag;      /**< published frames it has not read yet */
	uint64_t missed;   /**< frames it lost by falling behind (queue mode) */
};

typedef struct fb_producer fb_producer;
typedef struct fb_subscriber fb_subscriber;

/**
 * Create a ring and become its producer.  All ring memory is reserved now, so
 * a host short of memory fails here with -ENOMEM or -ENOSPC, never later.
 * Returns -EINVAL for bad parameters.
 */
int fb_producer_new(const struct fb_ring_params *params, fb_producer **ret_producer);

/** End the stream: subscribers get -EPIPE once they have read every frame,
 * and fb_producer_acquire() returns -EPIPE from now on. */
int fb_producer_end(fb_producer *producer);

/** End the stream (fb_producer_end()) and free the producer.  Accepts NULL. */
void fb_producer_free(fb_producer *producer);

/** The ring's frame layout. */
const struct fb_layout *fb_producer_get_layout(const fb_producer *producer);

/**
 * Take a slot to write the next frame into.
 *
 * timeout_ms: how long a FB_POLICY_BLOCK ring may wait for a free slot
 * (-1: forever, 0: not at all).  A FB_POLICY_DROP ring never waits.
 *
 * Returns 0 and the frame, -ENOBUFS when a drop ring has every slot held (the
 * frame is counted as dropped), -ETIMEDOUT when a block ring found no free
 * slot in time, -EBUSY if a slot is already taken and not yet published,
 * -EPIPE once the stream was ended.
 */
int fb_producer_acquire(fb_producer *producer, int timeout_ms, struct fb_frame **ret_frame);

/** Publish the frame taken by fb_producer_acquire() and wake subscribers.
 * Returns -EINVAL if frame is not the producer's current frame or meta_size
 * exceeds the ring's meta_max. */
int fb_producer_publish(fb_producer *producer, struct fb_frame *frame);

/** Give the frame taken by fb_producer_acquire() back unpublished. */
int fb_producer_discard(fb_producer *producer, struct fb_frame *frame);

/**
 * Add a subscriber.  On success ret_fds holds four new file descriptors owned
 * by the caller: hand them to the subscriber (fb_subscriber_attach()) and close
 * them.  ret_id names the subscriber in fb_producer_remove_subscriber().
 * max_holds (1..slots-1) limits how many frames it may hold at once.
 * Returns -EINVAL for a bad mode or max_holds, -EUSERS when the ring already
 * has FB_MAX_SUBSCRIBERS subscribers.
 */
int fb_producer_add_subscriber(fb_producer *producer, uint32_t mode, uint32_t max_holds,
			       struct fb_subscriber_fds *ret_fds, uint32_t *ret_id);

/**
 * Remove a subscriber, whatever state it was left in: every frame it held
 * goes back to the ring.  Call it once the subscriber is gone (its process
 * exited or it said goodbye).  Returns -ENOENT for an unknown id.
 */
int fb_producer_remove_subscriber(fb_producer *producer, uint32_t id);

/** Counters of the ring. */
void fb_producer_get_stats(const fb_producer *producer, struct fb_ring_stats *ret_stats);

/** Counters of one subscriber; -ENOENT for an unknown id. */
int fb_producer_get_subscriber_stats(const fb_producer *producer, uint32_t id,
				     struct fb_subscriber_stats *ret_stats);

/** Close the four descriptors (those >= 0) and set them to -1. */
void fb_subscriber_fds_close(struct fb_subscriber_fds *fds);

/**
 * Attach to a ring with the descriptors its producer handed out.  The memory
 * is checked before use (seals, sizes, magic, version, a geometry that matches
 * its own layout) and mapped read-only.  On success the subscriber owns the
 * descriptors and closes them when freed; on failure the caller still owns
 * them.  Returns -EBADF for a descriptor that is not what it should be,
 * -EPROTO for memory whose contents do not describe a valid ring.  The
 * descriptors must not be shared with another subscriber.
 */
int fb_subscriber_attach(const struct fb_subscriber_fds *fds, fb_subscriber **ret_subscriber);

/** Release every frame still held and free the subscriber.  Accepts NULL. */
void fb_subscriber_free(fb_subscriber *subscriber);

/** The ring's frame layout. */
const struct fb_layout *fb_subscriber_get_layout(const fb_subscriber *subscriber);

/** The ring's side-data capacity per frame. */
uint32_t fb_subscriber_get_meta_max(const fb_subscriber *subscriber);

/** Slots in the ring. */
uint32_t fb_subscriber_get_slots(const fb_subscriber *subscriber);

/**
 * Slot slot (0..slots-1) as a frame whose data[] and stride[] say where its
 * pixels are, whatever the slot holds now: for language bindings that make
 * their views of every slot ahead of time.  Only the plane pointers mean
 * anything, and the pixels may be read only while a frame acquired in that
 * slot is held.  NULL for a slot out of range.
 */
const struct fb_frame *fb_subscriber_get_slot(const fb_subscriber *subscriber, uint32_t slot);

/** The stream's name as its ring says it ("" for a ring its producer did
 * not name). */
const char *fb_subscriber_get_name(const fb_subscriber *subscriber);

/** enum fb_mode of this subscriber. */
uint32_t fb_subscriber_get_mode(const fb_subscriber *subscriber);

/**
 * A descriptor that becomes readable when a frame may be waiting.  For event
 * loops: when it is readable, call fb_subscriber_acquire() with timeout 0
 * until it returns -EAGAIN; only that -EAGAIN re-arms the descriptor (a new
 * subscriber starts armed: the first frame makes it readable).
 */
int fb_subscriber_get_fd(const fb_subscriber *subscriber);

/**
 * Take the next frame (the newest unseen one in FB_MODE_LATEST, the next in
 * order in FB_MODE_QUEUE) and hold it until fb_subscriber_release().
 *
 * timeout_ms: -1 waits forever, 0 never waits.
 * Returns 0 and the frame; -EAGAIN (timeout 0) or -ETIMEDOUT when no frame
 * came; -EDQUOT when the subscriber already holds max_holds frames; -EPIPE
 * once the producer ended the stream and every frame was read; -ECANCELED
 * once the producer removed this subscriber (a published stream's producer
 * does so when it publishes again after framebusd restarted); -EOWNERDEAD
 * once every frame was read and the producer went away without ending the
 * stream (framebusd stopped or was killed: a blocking wait notices within a
 * quarter of a second, an event loop's descriptor becomes readable); -EINTR
 * if a signal interrupted the wait.  After -ECANCELED or -EOWNERDEAD,
 * fb_client_resubscribe() tells whether framebusd went away and, if so,
 * subscribes again.
 */
int fb_subscriber_acquire(fb_subscriber *subscriber, int timeout_ms,
			  const struct fb_frame **ret_frame);

/** Give a frame back to the ring.  Returns -EINVAL if it is not held. */
int fb_subscriber_release(fb_subscriber *subscriber, const struct fb_frame *frame);

/** Frames held right now. */
uint32_t fb_subscriber_get_held(const fb_subscriber *subscriber);

/** Frames this subscriber may hold at once (what its producer granted);
 * fb_subscriber_acquire() fails with -EDQUOT past it. */
uint32_t fb_subscriber_get_max_holds(const fb_subscriber *subscriber);

/* ------------------------------------------------------------------------ */
/* The bus: a client of framebusd                                            */
/* ------------------------------------------------------------------------ */

/** Where framebusd listens unless told otherwise ($FRAMEBUS_SOCKET, --socket). */
#define FB_DEFAULT_SOCKET "/run/framebus/framebus.sock"

/** What a stream is doing. */
enum fb_stream_state {
	FB_STREAM_STARTING = 0, /**< its source is being opened */
	FB_STREAM_RUNNING = 1,  /**< frames are flowing */
	FB_STREAM_RETRYING = 2, /**< its source failed; it will try again */
	FB_STREAM_ENDED = 3,    /**< its source ended (a file that does not loop) */
	FB_STREAM_REMOVED = 4,  /**< gone from the configuration, or restarted with a
				     new geometry: subscribe again */
};

/** Name of a stream state ("running", ...). */
const char *fb_stream_state_name(uint32_t state);

/** A stream as the daemon describes it. */
struct fb_stream_info {
	char name[FB_NAME_MAX + 1];
	char source[128]; /**< its url, possibly truncated */
	uint32_t width;
	uint32_t height;
	uint32_t format; /**< enum fb_format */
	uint32_t slots;
	uint32_t policy; /**< enum fb_policy */
	uint32_t meta_max;
	uint32_t state; /**< enum fb_stream_state */
	uint32_t subscribers;
	uint64_t published; /**< frames published since the stream (re)started */
	uint64_t dropped;   /**< publishes dropped because every slot was held */
	double fps;         /**< frames published per second over the last second */
	uint32_t retries;   /**< consecutive failures to open or read its source */
	char detail[192];   /**< why it is retrying or ended, else empty */
	/* Filled by fb_client_inspect() only (zero elsewhere): */
	float fps_10s;               /**< frames published per second over the last 10 s */
	uint32_t capture_latency_us; /**< its newest frame, capture to publish; 0: unknown */
	uint32_t capture_age_us;     /**< its newest frame, capture to now; 0: unknown */
	/** Queue subscribers that kept this block stream waiting past its
	 * block_timeout since it started (framebusd then stopped waiting for
	 * them, or dropped them). */
	uint32_t stalls;
	/** A block stream's block_timeout in ms (0: a drop stream). */
	uint32_t block_timeout_ms;
	/** Frames its subscriptions may hold, all together (framebusd keeps
	 * what it grants to users but root and its own below slots: one slot
	 * stays the producer's). */
	uint32_t holds_promised;
	uint32_t flags; /**< FB_STREAM_DERIVED */
	/** A derived stream's parent frames it passed over since it started:
	 * it was still busy with an earlier one (it never slows its parent),
	 * or its fps limit left them out. */
	uint64_t parent_skipped_busy;
	uint64_t parent_skipped_rate;
	uint32_t reserved_[6]; /**< room for more, zero */
};

/** fb_stream_info.flags: a derived stream, made from its parent's frames. */
#define FB_STREAM_DERIVED 1u

/** One subscription to a stream, for status tools. */
struct fb_subscription_info {
	uint32_t id;
	uint32_t mode;                /**< enum fb_mode */
	uint32_t held;                /**< frames held right now */
	uint64_t lag;                 /**< published frames not yet read */
	uint64_t missed;              /**< frames lost by falling behind (queue mode) */
	uint64_t next_seq;            /**< the next frame it will read */
	double fps;                   /**< frames it took per second over the last second */
	char client[FB_NAME_MAX + 1]; /**< the client's name and pid */
	double fps_10s;               /**< the same over the last 10 s */
	uint64_t frames;              /**< frames it took since it subscribed */
	/** Over the last 10 s, in microseconds, as its library counted them:
	 * from a frame's publish until the subscriber had it (wait), and
	 * until it released it (busy); 0: no frame. */
	uint32_t wait_p50_us, wait_p99_us;
	uint32_t busy_p50_us, busy_p99_us;
	uint32_t uid;   /**< the client's user id, if flags has FB_SUBSCRIPTION_UID */
	uint32_t flags; /**< FB_SUBSCRIPTION_UID, FB_SUBSCRIPTION_STALLED */
	uint32_t reserved_[6];
};

/** fb_subscription_info.flags: uid is the client's (a daemon older than
 * this field leaves it 0). */
#define FB_SUBSCRIPTION_UID 1u
/** fb_subscription_info.flags: this queue subscription kept its block stream
 * waiting past block_timeout; the stream no longer waits for it (it reads
 * on, missing what was overwritten). */
#define FB_SUBSCRIPTION_STALLED 2u

typedef struct fb_client fb_client;

/** Called from fb_client_process() (and from blocking calls) for each event:
 * a stream changed state.  detail says why, or is empty. */
typedef void (*fb_client_event_fn)(void *userdata, const char *stream, uint32_t state,
				   const char *detail);

/** Called when the client lost framebusd (connected false) and when it
 * connected again (true).  detail says what happened, for a log: which
 * socket, and any stream of this client that could not be published again. */
typedef void (*fb_client_connection_fn)(void *userdata, bool connected, const char *detail);

/**
 * Connect to framebusd at path; NULL means $FRAMEBUS_SOCKET, else
 * FB_DEFAULT_SOCKET.  name (NULL: "client") is shown by status tools.
 * Returns -ENOENT or -ECONNREFUSED when no daemon listens there, -EACCES when
 * this user may not connect, -EPROTO when the daemon speaks another protocol.
 */
int fb_client_connect(const char *path, const char *name, fb_client **ret_client);

/** Disconnect.  Subscribers obtained from this client stay usable (their
 * frames stay mapped) until freed.  Accepts NULL. */
void fb_client_free(fb_client *client);

/** A descriptor that is readable when fb_client_process() has work: add it to
 * an event loop to receive events, notice the daemon going away and connect
 * again.  It stays the same descriptor across reconnections. */
int fb_client_get_fd(const fb_client *client);

/** Whether the daemon is there, reading nothing: 0, or -ECONNRESET once it
 * hung up (or while the client is not connected).  Unlike the other calls on
 * a client, this one may run in any thread at any time. */
int fb_client_check(const fb_client *client);

/**
 * Handle every pending message without blocking.  Returns the number of
 * events delivered, or -ECONNRESET while the daemon is gone.
 *
 * A client that lost the daemon connects again by itself: fb_client_process()
 * tries whenever its descriptor wakes (every 250 ms while disconnected), and
 * any request tries once before failing with -ECONNRESET.  Once connected it
 * publishes its streams again (the same rings: their producers go on), and
 * the connection callback says so.  Subscriptions do not move by themselves:
 * their acquire fails with -EOWNERDEAD or -ECANCELED: fb_client_resubscribe().
 */
int fb_client_process(fb_client *client);

/** Try to connect again now if the daemon was lost: 0 when connected (or
 * already was), -ENOENT or -ECONNREFUSED while no daemon listens. */
int fb_client_reconnect(fb_client *client);

/** Set the connection callback (NULL: none). */
void fb_client_set_connection_callback(fb_client *client, fb_client_connection_fn fn,
				       void *userdata);

/** Set the event callback (NULL: none). */
void fb_client_set_event_callback(fb_client *client, fb_client_event_fn fn, void *userdata);

/** Every stream.  *ret_streams is an array of *ret_n entries to free(). */
int fb_client_list_streams(fb_client *client, struct fb_stream_info **ret_streams, size_t *ret_n);

/** One stream; -ENOENT if the daemon has no stream of that name. */
int fb_client_get_stream(fb_client *client, const char *name, struct fb_stream_info *ret_info);

/** A stream and its subscriptions, with rates over the last second and the
 * last 10 s, its newest frame's age and each subscriber's wait and busy
 * times (what `framebusctl status` and `top` show).  ret_info may be NULL;
 * *ret_subs is an array to free().  A framebusd older than this call hangs
 * up on it (-ECONNRESET). */
int fb_client_inspect(fb_client *client, const char *stream, struct fb_stream_info *ret_info,
		      struct fb_subscription_info **ret_subs, size_t *ret_n);

/** The subscriptions of a stream: fb_client_inspect() without the stream.
 * *ret_subs is an array to free(). */
int fb_client_get_subscriptions(fb_client *client, const char *stream,
				struct fb_subscription_info **ret_subs, size_t *ret_n);

/**
 * Subscribe to a stream and attach to its ring.  max_holds 0 takes the
 * daemon's default.  Returns -ENOENT for an unknown stream, -EINVAL for a bad
 * mode or max_holds, -EUSERS when the stream has all the subscribers it can
 * take; the daemon's error text is in fb_client_last_error().
 */
int fb_client_subscribe(fb_client *client, const char *stream, uint32_t mode, uint32_t max_holds,
			fb_subscriber **ret_subscriber);

/**
 * A stream made from another on request: its frames are the parent's, cropped,
 * scaled and converted by framebusd (fb_client_subscribe_derived()).  Zero
 * means "as the parent's" (or the crop's, for the size).
 */
struct fb_derived {
	uint32_t width, height; /**< both or neither; 0: the parent's (or the crop's) size */
	uint32_t format;        /**< enum fb_format; 0: the parent's */
	uint32_t fps_milli;     /**< at most this many frames a second x 1000; 0: every one */
	/** x, y, width, height of the part of the parent's picture it takes;
	 * width 0: all of it. */
	uint32_t crop[4];
	uint32_t reserved_[8]; /**< zero */
};

/**
 * Subscribe to parent made over as spec says: framebusd makes that derived
 * stream (scaled in a thread of its own, from the parent's ring: no second
 * decode), or finds the one it made for another client that asked the same,
 * and removes it when its last subscriber leaves.  Its name, which
 * `framebusctl status` shows, is the parent's with the spec after '~', e.g.
 * "cam0~640x360.rgb24@5": fb_subscriber_get_name().  Returns as
 * fb_client_subscribe(), and -EINVAL for a spec framebusd cannot make (a zero
 * or odd size for a 4:2:0 format, an unknown format, a rate above the
 * parent's, a crop outside it), -EAGAIN while the parent has no frame size
 * yet, -EDQUOT past this client's or the daemon's limits; the reason is in
 * fb_client_last_error().  fb_client_resubscribe() makes it again after a
 * daemon restart.
 */
int fb_client_subscribe_derived(fb_client *client, const char *parent,
				const struct fb_derived *spec, uint32_t mode, uint32_t max_holds,
				fb_subscriber **ret_subscriber);

/**
 * Subscribe again, if a subscription ended only because framebusd went away.
 *
 * Call it when fb_subscriber_acquire() on a subscriber from
 * fb_client_subscribe() failed with -EOWNERDEAD or -ECANCELED: the daemon
 * stopped, crashed or restarted (its ring went with it, or the publisher of
 * a client's stream published again to the daemon that came back).  It
 * connects again if need be and subscribes to the same stream in the same
 * mode with the same max_holds.  On success *ret_subscriber is the new
 * subscription; old is left as it was: release its frames and free it
 * (fb_client_unsubscribe()) when done with them.  On a client's stream,
 * whose ring outlives a daemon restart, the new subscription goes on after
 * the last frame old took (no frame twice); on the daemon's own streams,
 * made again, it starts at the newest frame.
 *
 * Returns 0; -EAGAIN while the daemon or the stream is not back yet (call it
 * again later, e.g. when fb_client_get_fd() wakes or in a quarter of a
 * second); -ESTALE when the stream came back with another width, height or
 * format (text in fb_client_last_error(): subscribe anew to take it as it is
 * now); -EPIPE when the stream ended (its file or publisher ended it, or a
 * reload removed or changed it); -ECANCELED when its producer dropped the
 * subscription while framebusd stayed; -EINVAL when old has not ended or was
 * not made by fb_client_subscribe(); or an error of fb_client_subscribe().
 */
int fb_client_resubscribe(fb_client *client, const fb_subscriber *old,
			  fb_subscriber **ret_subscriber);

/** End a subscription made with fb_client_subscribe() and free the
 * subscriber (which may be used no more). */
int fb_client_unsubscribe(fb_client *client, fb_subscriber *subscriber);

/**
 * Publish a stream: create a ring with params and offer it on the bus under
 * name.  Fill and publish frames with fb_producer_acquire() and
 * fb_producer_publish() as with any producer; subscribers of name get them
 * with zero copies.  The producer takes in the subscribers the daemon sends it
 * by itself, on a channel of its own (in fb_producer_acquire()), so it may be
 * used from another thread than the client.
 * Returns -EEXIST if the bus has a stream of that name, -EINVAL for bad
 * params, -EDQUOT past this client's ring memory limit (text in
 * fb_client_last_error()).
 */
int fb_client_publish(fb_client *client, const char *name, const struct fb_ring_params *params,
		      fb_producer **ret_producer);

/**
 * Publish a results stream: records of up to meta_max bytes (JSON or any
 * bytes) with no pixels, e.g. a detector's boxes.  fb_client_publish() with
 * format FB_FORMAT_RESULTS and width and height 0: each frame's record goes in
 * frame->meta (meta_size bytes) and, made from a picture,
 * fb_frame_made_from() names that picture (source_seq, capture time, hops).
 * Subscribers take records as frames, in latest or queue mode, with the same
 * drop or block policy as any stream.  Errors as fb_client_publish(); -EINVAL
 * also for meta_max 0.
 */
int fb_client_publish_results(fb_client *client, const char *name, uint32_t slots, uint32_t policy,
			      uint32_t meta_max, fb_producer **ret_producer);

/** Withdraw a stream published with fb_client_publish() and free its
 * producer: its subscribers read what is left, then get -EPIPE. */
int fb_client_unpublish(fb_client *client, fb_producer *producer);

/** The limits framebusd enforces (its configuration's [daemon] keys) and
 * what this client's user uses of the per-user ones (docs/security.md). */
struct fb_limits {
	uint32_t max_clients;
	uint32_t max_subscriptions_per_client;
	uint32_t max_streams_per_client;
	uint32_t default_max_holds;
	uint32_t max_derived_per_client;
	uint32_t max_connections_per_user;
	uint32_t max_subscriptions_per_user;
	uint32_t max_streams_per_user;
	uint64_t max_ring_memory_per_client; /**< bytes */
	uint64_t max_derived_memory;         /**< bytes, all derived rings */
	uint64_t max_memory_per_user;        /**< bytes of rings a user publishes */
	uint32_t uid;                        /**< this client's user, as framebusd sees it */
	uint32_t exempt; /**< 1: root or framebusd's own user: no per-user limit binds it */
	/** What that user has now, over all its connections. */
	uint32_t connections, subscriptions, streams;
	uint64_t memory;
	uint32_t reserved_[8];
};

/** The limits in force and this user's use of them.  A framebusd older
 * than this call hangs up on it (-ECONNRESET). */
int fb_client_get_limits(fb_client *client, struct fb_limits *ret_limits);

/** The daemon's explanation of the last error it returned to this client. */
const char *fb_client_last_error(const fb_client *client);

#ifdef __cplusplus
}
#endif

#endif
