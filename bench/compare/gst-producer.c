/* SPDX-License-Identifier: MIT */
/*
 * gst-producer: the GStreamer shmsink producer of bench/compare (see PROTOCOL.md).
 *
 * usage: gst-producer --frames N --fps F --consumers K --socket PATH
 *
 * Prints "ready" once the socket exists (shmsink creates it, so the producer starts first), then
 * waits for K consumers to connect before the first frame.
 *
 * Pipeline: appsrc ! shmsink socket-path=PATH.  The frames live in shmsink's own shared memory:
 * SLOTS blocks are taken from the allocator shmsink proposes and sent in turn.  shmsink hands
 * memory of its own allocator to its readers without a copy, so the producer writes each frame's
 * pixels and stamp where its readers will find them, as the other producers do.  Each frame's
 * buffer holds a shared view of its slot's block (gst_memory_share), which is freed once no buffer
 * holds it any more, that is once shmsink got the last reader's release; only then is the slot
 * reused.  So the producer waits for its slowest consumer and never overwrites a frame in use: no
 * frame is lost.
 *
 * shmsink has no end-of-stream message for its readers: they see the socket close.  So after the
 * last frame the producer sends EOS and waits until the readers have released every frame before
 * it closes the socket.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gst/app/gstappsrc.h>
#include <gst/gst.h>

#include "../bench-clock.h"

#define WIDTH 1920
#define HEIGHT 1080
#define FRAME_BYTES ((gsize)WIDTH * HEIGHT * 3)
#define SLOTS 8
/* Room in the shm area for the blocks' alignment padding. */
#define SLOT_SLACK 4096

#define CONNECT_TIMEOUT_S 30 /* for the K consumers to connect */
#define STALL_TIMEOUT_S 10   /* for a slot to be released */
#define DRAIN_TIMEOUT_S 5    /* for EOS and the last releases after the last frame */

struct producer;

struct slot {
	struct producer *p;
	GstMemory *mem; /* a block of shmsink's shared memory area */
	guint8 *data;
	bool busy; /* a GstBuffer carrying mem is alive */
};

struct producer {
	GMutex lock; /* guards everything below; cond signals any change */
	GCond cond;
	int clients;
	bool all_gone;    /* every consumer disconnected */
	bool eos;         /* EOS reached shmsink */
	bool interrupted; /* SIGINT or SIGTERM */
	gchar *error;     /* first error posted on the bus */
	struct slot slots[SLOTS];
};

static void put_u64le(guint8 *dst, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		dst[i] = (guint8)(v >> (8 * i));
}

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return false;
	*out = v;
	return true;
}

/* The weak reference on a frame's view of its slot: runs in whichever thread drops the last
 * reference, shmsink's poll thread when the last reader released the frame, or the streaming
 * thread when no reader was connected. */
static void slot_released(gpointer data, GstMiniObject *view G_GNUC_UNUSED)
{
	struct slot *s = data;
	g_mutex_lock(&s->p->lock);
	s->busy = false;
	g_cond_broadcast(&s->p->cond);
	g_mutex_unlock(&s->p->lock);
}

static void client_connected(GstElement *sink G_GNUC_UNUSED, gint fd G_GNUC_UNUSED, gpointer data)
{
	struct producer *p = data;
	g_mutex_lock(&p->lock);
	p->clients++;
	g_cond_broadcast(&p->cond);
	g_mutex_unlock(&p->lock);
}

static void client_disconnected(GstElement *sink, gint fd G_GNUC_UNUSED, gpointer data)
{
	struct producer *p = data;
	g_mutex_lock(&p->lock);
	bool gone = --p->clients == 0;
	if (gone) {
		p->all_gone = true;
		g_cond_broadcast(&p->cond);
	}
	g_mutex_unlock(&p->lock);
	/* Without readers shmsink's render would wait for one forever (wait-for-connection) and
	 * block the producer in gst_app_src_push_buffer(); let it discard frames instead, the
	 * producer stops on all_gone. */
	if (gone)
		g_object_set(sink, "wait-for-connection", FALSE, NULL);
}

/* Bus sync handler: records EOS and the first error where the waits below see them.  The
 * messages stay on the bus. */
static GstBusSyncReply bus_message(GstBus *bus G_GNUC_UNUSED, GstMessage *msg, gpointer data)
{
	struct producer *p = data;
	g_mutex_lock(&p->lock);
	if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS) {
		p->eos = true;
	} else if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR && !p->error) {
		GError *err;
		gchar *debug;
		gst_message_parse_error(msg, &err, &debug);
		p->error = g_strdup_printf("%s: %s (%s)", GST_OBJECT_NAME(GST_MESSAGE_SRC(msg)),
					   err->message, debug ? debug : "no details");
		g_error_free(err);
		g_free(debug);
	}
	g_cond_broadcast(&p->cond);
	g_mutex_unlock(&p->lock);
	return GST_BUS_PASS;
}

/* SIGINT and SIGTERM are blocked in every thread; this one takes them so that the producer still
 * stops shmsink, which removes the socket and the shm area. */
static gpointer signal_thread(gpointer data)
{
	struct producer *p = data;
	sigset_t set;
	int sig;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigwait(&set, &sig);
	g_mutex_lock(&p->lock);
	p->interrupted = true;
	g_cond_broadcast(&p->cond);
	g_mutex_unlock(&p->lock);
	return NULL;
}

/* With p->lock held: a reason to stop, or NULL. */
static const char *failure(const struct producer *p)
{
	if (p->interrupted)
		return "interrupted";
	if (p->error)
		return p->error;
	return NULL;
}

static const char *locked_failure(struct producer *p)
{
	g_mutex_lock(&p->lock);
	const char *why = failure(p);
	g_mutex_unlock(&p->lock);
	return why;
}

/* Blocks until done(p, arg) holds (true), a failure (false, *why set) or timeout_s (false). */
static bool wait_for(struct producer *p, bool (*done)(const struct producer *, int), int arg,
		     int timeout_s, const char **why)
{
	gint64 deadline = g_get_monotonic_time() + (gint64)timeout_s * G_TIME_SPAN_SECOND;
	bool ok = true;
	*why = NULL;
	g_mutex_lock(&p->lock);
	while (!done(p, arg)) {
		if ((*why = failure(p)) || !g_cond_wait_until(&p->cond, &p->lock, deadline)) {
			ok = done(p, arg);
			break;
		}
	}
	g_mutex_unlock(&p->lock);
	return ok;
}

static bool clients_connected(const struct producer *p, int k)
{
	return p->clients >= k;
}

static bool slot_free(const struct producer *p, int i)
{
	return !p->slots[i].busy;
}

/* Every consumer has released every frame (or left). */
static bool drained(const struct producer *p, int unused G_GNUC_UNUSED)
{
	for (int i = 0; i < SLOTS; i++)
		if (p->slots[i].busy)
			return false;
	return p->eos || p->all_gone;
}

/* Takes SLOTS blocks from shmsink's allocator (its pads must be active). */
static bool alloc_slots(struct producer *p, GstElement *shmsink)
{
	GstPad *pad = gst_element_get_static_pad(shmsink, "sink");
	GstQuery *query = gst_query_new_allocation(NULL, FALSE);
	GstAllocator *allocator = NULL;
	GstAllocationParams params;
	bool ok = false;

	if (!gst_pad_query(pad, query) || gst_query_get_n_allocation_params(query) == 0) {
		fprintf(stderr, "gst-producer: shmsink proposed no allocator\n");
		goto out;
	}
	gst_query_parse_nth_allocation_param(query, 0, &allocator, &params);
	params.align |= 63; /* frames start on a cache line */
	for (int i = 0; i < SLOTS; i++) {
		struct slot *s = &p->slots[i];
		GstMapInfo map;
		s->p = p;
		s->mem = allocator ? gst_allocator_alloc(allocator, FRAME_BYTES, &params) : NULL;
		/* The allocator falls back to ordinary memory when the area is full, which
		 * shmsink would then copy: insist on shared memory. */
		if (!s->mem || s->mem->allocator != allocator) {
			fprintf(stderr, "gst-producer: no room for %d frames in shmsink's area\n",
				SLOTS);
			goto out;
		}
		if (!gst_memory_map(s->mem, &map, GST_MAP_WRITE)) {
			fprintf(stderr, "gst-producer: cannot map shmsink's memory\n");
			goto out;
		}
		/* shmsink's memory is a fixed place in its mmapped area and mapping it only
		 * returns that address: the producer keeps it to write the headers.  Mapping
		 * it per frame could fail: the previous frame's view still locks the memory
		 * for a moment after its release is signalled. */
		s->data = map.data;
		gst_memory_unmap(s->mem, &map);
	}
	ok = true;
out:
	if (allocator)
		gst_object_unref(allocator);
	gst_query_unref(query);
	gst_object_unref(pad);
	return ok;
}

static void usage(void)
{
	fprintf(stderr, "usage: gst-producer --frames N --fps F --consumers K --socket PATH\n"
			"       (F = 0: as fast as the consumers take the frames)\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"frames", required_argument, NULL, 'n'},
	    {"fps", required_argument, NULL, 'f'},
	    {"consumers", required_argument, NULL, 'k'},
	    {"socket", required_argument, NULL, 's'},
	    {NULL, 0, NULL, 0},
	};
	uint64_t frames = 0, fps = UINT64_MAX, consumers = 0;
	const char *socket_path = NULL;
	int c, opt = 0;
	while ((c = getopt_long(argc, argv, "", longopts, &opt)) != -1) {
		bool ok = true;
		switch (c) {
		case 'n':
			ok = parse_u64(optarg, &frames) && frames > 0;
			break;
		case 'f':
			ok = parse_u64(optarg, &fps) && fps <= INT_MAX;
			break;
		case 'k':
			ok = parse_u64(optarg, &consumers) && consumers > 0 && consumers <= INT_MAX;
			break;
		case 's':
			socket_path = optarg;
			break;
		default:
			ok = false;
		}
		if (!ok) {
			if (c != '?')
				fprintf(stderr, "gst-producer: bad value for --%s: %s\n",
					longopts[opt].name, optarg);
			usage();
			return 1;
		}
	}
	if (optind != argc || !frames || fps == UINT64_MAX || !consumers || !socket_path) {
		usage();
		return 1;
	}

	/* The runner may have gone with the read ends of stdout and stderr: a message must not
	 * kill the producer before it removed the socket and the shm area. */
	signal(SIGPIPE, SIG_IGN);
	/* Before any thread exists, so that every thread inherits the mask. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	gst_init(&argc, &argv);
	static struct producer p; /* static: the other threads may outlive main() */
	g_mutex_init(&p.lock);
	g_cond_init(&p.cond);
	g_thread_unref(g_thread_new("signals", signal_thread, &p));

	GstElement *pipeline = gst_pipeline_new("producer");
	GstElement *appsrc = gst_element_factory_make("appsrc", "src");
	GstElement *shmsink = gst_element_factory_make("shmsink", "sink");
	if (!appsrc || !shmsink) {
		fprintf(stderr, "gst-producer: missing element %s (gstreamer1.0-plugins-%s)\n",
			appsrc ? "shmsink" : "appsrc", appsrc ? "bad" : "base");
		return 1;
	}
	GstCaps *caps = gst_caps_new_simple("video/x-raw", "format", G_TYPE_STRING, "BGR", "width",
					    G_TYPE_INT, WIDTH, "height", G_TYPE_INT, HEIGHT,
					    "framerate", GST_TYPE_FRACTION, (int)fps, 1, NULL);
	/* block with a one-frame queue: a push waits for the streaming thread instead of
	 * queueing frames up. */
	g_object_set(appsrc, "caps", caps, "format", GST_FORMAT_TIME, "is-live", fps > 0, "block",
		     TRUE, "max-bytes", (guint64)FRAME_BYTES, NULL);
	gst_caps_unref(caps);
	/* enable-last-sample off: the sink would hold the last frame's buffer, so its slot. */
	g_object_set(shmsink, "socket-path", socket_path, "wait-for-connection", TRUE, "sync",
		     FALSE, "enable-last-sample", FALSE, "shm-size",
		     (guint)(SLOTS * (FRAME_BYTES + SLOT_SLACK)), NULL);
	g_signal_connect(shmsink, "client-connected", G_CALLBACK(client_connected), &p);
	g_signal_connect(shmsink, "client-disconnected", G_CALLBACK(client_disconnected), &p);
	gst_bin_add_many(GST_BIN(pipeline), appsrc, shmsink, NULL);
	gst_element_link(appsrc, shmsink);
	GstBus *bus = gst_element_get_bus(pipeline);
	gst_bus_set_sync_handler(bus, bus_message, &p, NULL);

	int rc = 1;
	const char *why = NULL;
	/* Not live (F = 0), the pipeline prerolls on the first frame: ASYNC is expected. */
	if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
		why = locked_failure(&p);
		fprintf(stderr, "gst-producer: cannot start the pipeline: %s\n",
			why ? why : "unknown error");
		goto out;
	}
	/* shmsink binds PATH.N instead when PATH is taken. */
	gchar *bound = NULL;
	g_object_get(shmsink, "socket-path", &bound, NULL);
	bool same = bound && strcmp(bound, socket_path) == 0;
	g_free(bound);
	if (!same) {
		fprintf(stderr, "gst-producer: %s already exists (another producer, or stale?)\n",
			socket_path);
		goto out;
	}
	if (!alloc_slots(&p, shmsink))
		goto out;
	/* The socket exists: the consumers can attach now. */
	printf("ready\n");
	fflush(stdout);

	if (!wait_for(&p, clients_connected, (int)consumers, CONNECT_TIMEOUT_S, &why)) {
		if (why)
			fprintf(stderr, "gst-producer: waiting for the consumers: %s\n", why);
		else
			fprintf(stderr, "gst-producer: not %" PRIu64 " consumers after %d s\n",
				consumers, CONNECT_TIMEOUT_S);
		goto out;
	}

	uint64_t t0 = bench_now_ns();
	for (uint64_t seq = 1; seq <= frames; seq++) {
		struct slot *s = &p.slots[(seq - 1) % SLOTS];
		/* Slots are released in the order sent: the oldest one is the next free. */
		if (!wait_for(&p, slot_free, (int)(s - p.slots), STALL_TIMEOUT_S, &why)) {
			if (why)
				fprintf(stderr, "gst-producer: frame %" PRIu64 ": %s\n", seq, why);
			else
				fprintf(stderr,
					"gst-producer: frame %" PRIu64
					": no frame released for %d s\n",
					seq, STALL_TIMEOUT_S);
			goto out;
		}
		if (fps > 0) {
			uint64_t due = t0 + (seq - 1) * 1000000000u / fps;
			struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u),
					      .tv_nsec = (long)(due % 1000000000u)};
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
				;
		}
		g_mutex_lock(&p.lock);
		why = failure(&p);
		if (!why && p.all_gone)
			why = "every consumer disconnected";
		s->busy = true;
		g_mutex_unlock(&p.lock);
		if (why) {
			fprintf(stderr, "gst-producer: frame %" PRIu64 ": %s\n", seq, why);
			goto out;
		}
		/* A view rather than the block itself: the view dies with the last buffer that
		 * holds it, however many copies of the buffer were made on the way. */
		GstMemory *view = gst_memory_share(s->mem, 0, -1);
		gst_mini_object_weak_ref(GST_MINI_OBJECT(view), slot_released, s);
		GstBuffer *buf = gst_buffer_new();
		gst_buffer_append_memory(buf, view);
		/* A new picture, then its stamp (PROTOCOL.md). */
		memset(s->data + 16, (int)(seq & 0xff), FRAME_BYTES - 16);
		put_u64le(s->data, seq);
		put_u64le(s->data + 8, bench_now_ns());
		GstFlowReturn fr = gst_app_src_push_buffer(GST_APP_SRC(appsrc), buf);
		if (fr != GST_FLOW_OK) {
			why = locked_failure(&p);
			fprintf(stderr, "gst-producer: frame %" PRIu64 ": push: %s\n", seq,
				why ? why : gst_flow_get_name(fr));
			goto out;
		}
	}

	gst_app_src_end_of_stream(GST_APP_SRC(appsrc));
	if (!wait_for(&p, drained, 0, DRAIN_TIMEOUT_S, &why)) {
		if (why) {
			fprintf(stderr, "gst-producer: after the last frame: %s\n", why);
			goto out;
		}
		fprintf(stderr, "gst-producer: warning: EOS or the last releases took over %d s\n",
			DRAIN_TIMEOUT_S);
	}
	rc = 0;
out:
	/* The slots' memory goes back to shmsink's area as the last buffers go; stopping shmsink
	 * then removes the socket and the area. */
	for (int i = 0; i < SLOTS; i++)
		if (p.slots[i].mem)
			gst_memory_unref(p.slots[i].mem);
	gst_element_set_state(pipeline, GST_STATE_NULL);
	gst_bus_set_sync_handler(bus, NULL, NULL, NULL);
	gst_object_unref(bus);
	gst_object_unref(pipeline);
	g_free(p.error);
	return rc;
}
