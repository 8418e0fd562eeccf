/* SPDX-License-Identifier: MIT */
/*
 * gst-bench: framebussink -> framebussrc against shmsink -> shmsrc, the same
 * frames in the same run (scripts/bench gst; docs/gstreamer.md).
 *
 * Both producers are `appsrc ! SINK` and both consumers `SRC ! appsink`, in
 * this process.  The producer writes each frame whole (each byte its seq's)
 * into memory the sink offers, as a GStreamer source does (the allocation
 * query): a framebussink pool's buffer is a ring slot, shmsink's allocator
 * hands out its shared memory; neither sink copies then.  Latency: from the
 * written buffer reaching the sink's pad (a probe) to the appsink's callback
 * having it mapped; at --fps, rounds interleaved.  Throughput: frames a second flat out,
 * the framebus stream with policy block and a queue source, so that neither
 * transport may drop.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include "bench-clock.h"
#include "framebus/framebus.h"

struct options {
	const char *socket;
	int width, height, fps, frames, flat_frames, rounds;
};

/* One run of one transport. */
struct run {
	guint64 *pushed_ns; /* by seq: when the buffer reached the sink's pad */
	guint64 *latency_ns;
	guint n_latency;
	guint64 *src_ns; /* framebus: from the frame's publish to the appsink */
	guint n_src;
	guint64 received, first_ns, last_ns;
	guint frames;
	GMutex lock;
	GCond cond;
};

static guint64 seq_of(GstBuffer *buf)
{
	guint64 seq = 0;
	gst_buffer_extract(buf, 0, &seq, sizeof(seq));
	return seq;
}

static GstPadProbeReturn at_sink(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
	struct run *r = data;
	guint64 seq = seq_of(GST_PAD_PROBE_INFO_BUFFER(info));
	if (seq < r->frames)
		r->pushed_ns[seq] = bench_now_ns();
	return GST_PAD_PROBE_OK;
}

static GstFlowReturn on_sample(GstAppSink *sink, gpointer data)
{
	struct run *r = data;
	GstSample *sample = gst_app_sink_pull_sample(sink);
	GstBuffer *buf = gst_sample_get_buffer(sample);
	GstMapInfo map;
	gst_buffer_map(buf, &map, GST_MAP_READ);
	guint64 seq;
	memcpy(&seq, map.data, sizeof(seq));
	guint64 now = bench_now_ns();
	gst_buffer_unmap(buf, &map);
	/* framebussrc's share: the frame's publish time is its last hop in the
	 * trace its FramebusFrameMeta carries (docs/gstreamer.md). */
	guint64 published = 0;
	GstCustomMeta *meta = gst_buffer_get_custom_meta(buf, "FramebusFrameMeta");
	const GValue *trace =
	    meta ? gst_structure_get_value(gst_custom_meta_get_structure(meta), "trace") : NULL;
	if (trace) {
		gsize n;
		const struct fb_trace *t = g_bytes_get_data(g_value_get_boxed(trace), &n);
		if (n == sizeof(*t) && t->n_hops)
			published = t->hops[t->n_hops - 1].publish_ns;
	}
	gst_sample_unref(sample);

	g_mutex_lock(&r->lock);
	if (seq == 0 || seq >= r->frames) { /* the frame that made the stream */
		g_mutex_unlock(&r->lock);
		return GST_FLOW_OK;
	}
	if (r->pushed_ns[seq])
		r->latency_ns[r->n_latency++] = now - r->pushed_ns[seq];
	if (published && now > published)
		r->src_ns[r->n_src++] = now - published;
	if (!r->received++)
		r->first_ns = now;
	r->last_ns = now;
	g_cond_signal(&r->cond);
	g_mutex_unlock(&r->lock);
	return GST_FLOW_OK;
}

static GstElement *launch(const char *description)
{
	GError *error = NULL;
	GstElement *p = gst_parse_launch(description, &error);
	if (!p) {
		fprintf(stderr, "gst-bench: %s: %s\n", description, error->message);
		exit(1);
	}
	return p;
}

/* Where the producer gets each frame's memory: the sink's pool or allocator,
 * as the allocation query answered (NULL: the default allocator). */
struct memory {
	GstBufferPool *pool;
	GstAllocator *allocator;
	GstAllocationParams params;
};

static void ask_sink(GstElement *in, GstCaps *caps, gsize size, struct memory *m)
{
	GstPad *pad = gst_element_get_static_pad(in, "src");
	GstQuery *q = gst_query_new_allocation(caps, TRUE);

	memset(m, 0, sizeof(*m));
	gst_allocation_params_init(&m->params);
	if (gst_pad_peer_query(pad, q)) {
		if (gst_query_get_n_allocation_pools(q) > 0) {
			guint min, max, pool_size;
			gst_query_parse_nth_allocation_pool(q, 0, &m->pool, &pool_size, &min, &max);
		}
		if (m->pool) {
			GstStructure *config = gst_buffer_pool_get_config(m->pool);
			gst_buffer_pool_config_set_params(config, caps, (guint)size, 0, 1);
			gst_buffer_pool_config_add_option(config,
							  GST_BUFFER_POOL_OPTION_VIDEO_META);
			if (!gst_buffer_pool_set_config(m->pool, config) ||
			    !gst_buffer_pool_set_active(m->pool, TRUE)) {
				gst_object_unref(m->pool);
				m->pool = NULL;
			}
		} else if (gst_query_get_n_allocation_params(q) > 0) {
			gst_query_parse_nth_allocation_param(q, 0, &m->allocator, &m->params);
		}
	}
	gst_query_unref(q);
	gst_object_unref(pad);
}

static void forget_sink(struct memory *m)
{
	if (m->pool) {
		gst_buffer_pool_set_active(m->pool, FALSE);
		gst_object_unref(m->pool);
	}
	if (m->allocator)
		gst_object_unref(m->allocator);
}

static GstBuffer *frame(struct memory *mem, gsize size, guint64 seq)
{
	GstBuffer *buf = NULL;
	if (mem && mem->pool)
		gst_buffer_pool_acquire_buffer(mem->pool, &buf, NULL);
	else
		buf = gst_buffer_new_allocate(mem ? mem->allocator : NULL, size,
					      mem ? &mem->params : NULL);
	GstMapInfo map;
	gst_buffer_map(buf, &map, GST_MAP_WRITE);
	memset(map.data, (int)(seq & 0xff), map.size);
	memcpy(map.data, &seq, sizeof(seq));
	gst_buffer_unmap(buf, &map);
	return buf;
}

/* Wait until r received n frames, or a second passed since the last. */
static void wait_received(struct run *r, guint64 n)
{
	g_mutex_lock(&r->lock);
	while (r->received < n &&
	       g_cond_wait_until(&r->cond, &r->lock, g_get_monotonic_time() + G_TIME_SPAN_SECOND))
		;
	g_mutex_unlock(&r->lock);
}

/* One run: transport "framebus" or "shm"; flat out, or paced at o->fps. */
static void run_once(const struct options *o, const char *transport, gboolean flat, struct run *r)
{
	char caps[160], producer[512], consumer[512], shm_path[128];
	gsize size = (gsize)o->width * o->height * 3;

	snprintf(caps, sizeof(caps), "video/x-raw,format=BGR,width=%d,height=%d,framerate=%d/1",
		 o->width, o->height, o->fps);
	snprintf(shm_path, sizeof(shm_path), "/tmp/gst-bench-%d.shm", (int)getpid());
	if (!strcmp(transport, "framebus")) {
		snprintf(producer, sizeof(producer),
			 "appsrc name=in format=time caps=%s ! framebussink name=sink socket=%s "
			 "stream=gstbench sync=false policy=%s slots=8",
			 caps, o->socket, flat ? "block" : "drop");
		snprintf(consumer, sizeof(consumer),
			 "framebussrc socket=%s stream=gstbench mode=queue max-holds=4 ! "
			 "appsink name=out sync=false",
			 o->socket);
	} else {
		/* shmsrc knows no caps: they are restated by hand. */
		snprintf(producer, sizeof(producer),
			 "appsrc name=in format=time caps=%s ! shmsink name=sink socket-path=%s "
			 "shm-size=%zu wait-for-connection=false sync=false",
			 caps, shm_path, size * 8 + 4096);
		snprintf(consumer, sizeof(consumer),
			 "shmsrc socket-path=%s is-live=true ! %s ! appsink name=out sync=false",
			 shm_path, caps);
	}

	memset(r, 0, sizeof(*r));
	r->frames = (guint)(flat ? o->flat_frames : o->frames);
	r->pushed_ns = g_new0(guint64, r->frames);
	r->latency_ns = g_new0(guint64, r->frames);
	r->src_ns = g_new0(guint64, r->frames);
	g_mutex_init(&r->lock);
	g_cond_init(&r->cond);

	GstElement *prod = launch(producer), *cons = launch(consumer);
	GstElement *in = gst_bin_get_by_name(GST_BIN(prod), "in");
	GstElement *sink = gst_bin_get_by_name(GST_BIN(prod), "sink");
	GstElement *out = gst_bin_get_by_name(GST_BIN(cons), "out");
	GstPad *pad = gst_element_get_static_pad(sink, "sink");
	gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, at_sink, r, NULL);
	g_object_set(in, "block", TRUE, "max-bytes", (guint64)size * 2, NULL);
	GstAppSinkCallbacks callbacks = {.new_sample = on_sample};
	gst_app_sink_set_callbacks(GST_APP_SINK(out), &callbacks, r, NULL);

	/* Frame 0 makes the stream (framebussink publishes on caps); the consumer
	 * comes once it is there. */
	gst_element_set_state(prod, GST_STATE_PLAYING);
	gst_app_src_push_buffer(GST_APP_SRC(in), frame(NULL, size, 0));
	g_usleep(300000);
	gst_element_set_state(cons, GST_STATE_PLAYING);
	g_usleep(300000);
	struct memory mem;
	GstCaps *format = gst_caps_from_string(caps);
	ask_sink(in, format, size, &mem);
	gst_caps_unref(format);
	if (!flat)
		printf("  %s: frames written into %s\n", transport,
		       mem.pool        ? "the sink's pool (ring slots)"
		       : mem.allocator ? "the sink's allocator (its shared memory)"
				       : "memory of their own");

	guint64 start = bench_now_ns();
	guint64 interval = 1000000000ull / (guint64)o->fps;
	for (guint seq = 1; seq < r->frames; seq++) {
		if (!flat) {
			guint64 due = start + seq * interval, now = bench_now_ns();
			if (due > now)
				g_usleep((gulong)((due - now) / 1000));
		}
		gst_app_src_push_buffer(GST_APP_SRC(in), frame(&mem, size, seq));
	}
	wait_received(r, r->frames - 1);
	forget_sink(&mem);

	gst_element_set_state(cons, GST_STATE_NULL);
	gst_element_set_state(prod, GST_STATE_NULL);
	gst_object_unref(pad);
	gst_object_unref(in);
	gst_object_unref(sink);
	gst_object_unref(out);
	gst_object_unref(cons);
	gst_object_unref(prod);
	unlink(shm_path);
}

static int by_value(const void *a, const void *b)
{
	guint64 x = *(const guint64 *)a, y = *(const guint64 *)b;
	return x < y ? -1 : x > y;
}

static double percentile_us(guint64 *v, guint n, double p)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), by_value);
	return (double)v[(guint)(p * (n - 1))] / 1000.0;
}

static double median(double *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return v[n / 2];
}

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: gst-bench --socket PATH [--width W] [--height H] [--fps N] [--frames N]\n"
	    "                 [--flat-frames N] [--rounds N]\n"
	    "framebussink -> framebussrc against shmsink -> shmsrc: latency at --fps (default\n"
	    "1280x720 bgr, 60 fps, 600 frames) and frames a second flat out (--flat-frames,\n"
	    "default 600), --rounds (default 3) of each, interleaved; medians of the rounds.\n");
}

int main(int argc, char **argv)
{
	struct options o = {.width = 1280,
			    .height = 720,
			    .fps = 60,
			    .frames = 600,
			    .flat_frames = 600,
			    .rounds = 3};
	static const struct option longs[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"width", required_argument, NULL, 'w'},
	    {"height", required_argument, NULL, 'h'},
	    {"fps", required_argument, NULL, 'f'},
	    {"frames", required_argument, NULL, 'n'},
	    {"flat-frames", required_argument, NULL, 'F'},
	    {"rounds", required_argument, NULL, 'r'},
	    {"help", no_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	int c;

	gst_init(&argc, &argv);
	while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		switch (c) {
		case 's':
			o.socket = optarg;
			break;
		case 'w':
			o.width = atoi(optarg);
			break;
		case 'h':
			o.height = atoi(optarg);
			break;
		case 'f':
			o.fps = atoi(optarg);
			break;
		case 'n':
			o.frames = atoi(optarg);
			break;
		case 'F':
			o.flat_frames = atoi(optarg);
			break;
		case 'r':
			o.rounds = atoi(optarg);
			break;
		case 'H':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!o.socket || o.width <= 0 || o.height <= 0 || o.fps <= 0 || o.frames < 10 ||
	    o.flat_frames < 10 || o.rounds < 1) {
		usage(stderr);
		return 2;
	}
	GstElementFactory *unixfd = gst_element_factory_find("unixfdsrc");
	if (!unixfd)
		printf("unixfdsrc: not in this GStreamer (%s; it came in 1.24): not measured\n",
		       gst_version_string());
	else
		gst_object_unref(unixfd);

	const char *transports[] = {"framebus", "shm"};
	double p50[2][16], p99[2][16], fps[2][16], src_p50[16];
	guint64 lost[2] = {0, 0};
	if (o.rounds > 16)
		o.rounds = 16;
	printf("%dx%d bgr, latency at %d fps over %d frames, flat out over %d; %d rounds\n",
	       o.width, o.height, o.fps, o.frames, o.flat_frames, o.rounds);
	for (int round = 0; round < o.rounds; round++) {
		for (int t = 0; t < 2; t++) {
			struct run r;
			run_once(&o, transports[t], FALSE, &r);
			p50[t][round] = percentile_us(r.latency_ns, r.n_latency, 0.5);
			p99[t][round] = percentile_us(r.latency_ns, r.n_latency, 0.99);
			lost[t] += (guint64)(r.frames - 1) - MIN(r.received, r.frames - 1);
			if (t == 0)
				src_p50[round] = percentile_us(r.src_ns, r.n_src, 0.5);
			g_free(r.pushed_ns);
			g_free(r.latency_ns);
			g_free(r.src_ns);
			run_once(&o, transports[t], TRUE, &r);
			fps[t][round] =
			    r.last_ns > r.first_ns
				? (double)(r.received - 1) * 1e9 / (double)(r.last_ns - r.first_ns)
				: 0;
			printf("round %d %-9s latency p50 %8.1f us  p99 %8.1f us   flat out %7.1f "
			       "frames/s (%lu of %u)\n",
			       round + 1, transports[t], p50[t][round], p99[t][round],
			       fps[t][round], (unsigned long)r.received, r.frames - 1);
			if (t == 0)
				printf("          (framebus: publish to appsink p50 %.1f us)\n",
				       src_p50[round]);
			g_free(r.pushed_ns);
			g_free(r.latency_ns);
			g_free(r.src_ns);
		}
	}
	double m_p50[2], m_p99[2], m_fps[2];
	for (int t = 0; t < 2; t++) {
		m_p50[t] = median(p50[t], o.rounds);
		m_p99[t] = median(p99[t], o.rounds);
		m_fps[t] = median(fps[t], o.rounds);
	}
	printf("gst-bench p50_us_framebus=%.1f p50_us_shm=%.1f p50_ratio=%.3f p99_us_framebus=%.1f "
	       "p99_us_shm=%.1f src_p50_us_framebus=%.1f fps_framebus=%.1f fps_shm=%.1f "
	       "fps_ratio=%.3f lost_framebus=%lu lost_shm=%lu\n",
	       m_p50[0], m_p50[1], m_p50[0] / m_p50[1], m_p99[0], m_p99[1],
	       median(src_p50, o.rounds), m_fps[0], m_fps[1], m_fps[0] / m_fps[1],
	       (unsigned long)lost[0], (unsigned long)lost[1]);
	return 0;
}
