/* SPDX-License-Identifier: MIT */
/* The GStreamer plugin (gst/) against a real framebusd: framebussrc and
 * framebussink in gst-check harnesses in this process, and in gst-launch-1.0
 * pipelines.  GST_PLUGIN_PATH names the plugin's build directory
 * (tests/meson.build). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <gst/check/gstharness.h>
#include <gst/video/video.h>

#include "daemon-helpers.h"

/* gst_init() in each test: Criterion runs each in a process of its own. */
static void init(void)
{
	gst_init(NULL, NULL);
}

/* A harness around element (made from a gst-launch description), on the
 * system clock, with a bus to catch its errors; downstream reads
 * GstVideoMeta (as videoconvert and encoders do) if video_meta. */
static GstHarness *harness_full(const char *description, bool video_meta, GstBus **ret_bus)
{
	GstHarness *h = gst_harness_new_parse(description);
	cr_assert_not_null(h, "cannot make %s", description);
	gst_harness_use_systemclock(h);
	if (video_meta)
		gst_harness_add_propose_allocation_meta(h, GST_VIDEO_META_API_TYPE, NULL);
	*ret_bus = gst_bus_new();
	gst_element_set_bus(h->element, *ret_bus);
	return h;
}

static GstHarness *harness(const char *description, GstBus **ret_bus)
{
	return harness_full(description, true, ret_bus);
}

/* The text of the first error on bus within seconds (the test fails if none
 * comes), to free. */
static char *error_text(GstBus *bus, double seconds)
{
	GstMessage *m = gst_bus_timed_pop_filtered(bus, (GstClockTime)(seconds * GST_SECOND),
						   GST_MESSAGE_ERROR);
	cr_assert_not_null(m, "no element error");
	GError *e = NULL;
	char *debug = NULL;
	gst_message_parse_error(m, &e, &debug);
	char *text = g_strdup_printf("%s (%s)", e->message, debug ? debug : "");
	g_error_free(e);
	g_free(debug);
	gst_message_unref(m);
	return text;
}

/* Whether p lies in a mapping of a memfd (/proc/self/maps names them
 * "/memfd:..."). */
static bool in_memfd(const void *p)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo &&
		    (uintptr_t)p < hi)
			found = strstr(line, "/memfd:") != NULL;
	}
	fclose(f);
	return found;
}

/* A 64x48 I420 buffer whose every byte is (seq * 7 + i) & 0xff. */
static GstBuffer *pattern(const GstVideoInfo *info, guint64 seq)
{
	GstBuffer *buf = gst_buffer_new_allocate(NULL, GST_VIDEO_INFO_SIZE(info), NULL);
	GstMapInfo map;
	gst_buffer_map(buf, &map, GST_MAP_WRITE);
	for (gsize i = 0; i < map.size; i++)
		map.data[i] = (guint8)(seq * 7 + i);
	gst_buffer_unmap(buf, &map);
	GST_BUFFER_PTS(buf) = seq * GST_MSECOND * 20;
	return buf;
}

/* Whether buf holds pattern(seq)'s pixels, read through its video meta. */
static bool has_pattern(const GstVideoInfo *info, GstBuffer *buf, guint64 seq)
{
	GstVideoFrame frame;
	cr_assert(gst_video_frame_map(&frame, info, buf, GST_MAP_READ));
	bool same = true;
	gsize at = 0;
	for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES(&frame); p++) {
		gint w = GST_VIDEO_FRAME_COMP_WIDTH(&frame, p);
		gint h = GST_VIDEO_FRAME_COMP_HEIGHT(&frame, p);
		for (gint y = 0; y < h; y++)
			for (gint x = 0; x < w; x++)
				same = same &&
				       ((guint8 *)GST_VIDEO_FRAME_PLANE_DATA(
					   &frame,
					   p))[y * GST_VIDEO_FRAME_PLANE_STRIDE(&frame, p) + x] ==
					   (guint8)(seq * 7 + at + (gsize)y * w + x);
		at += (gsize)w * h;
	}
	gst_video_frame_unmap(&frame);
	return same;
}

static const char *const i420_caps = "video/x-raw,format=I420,width=64,height=48,framerate=50/1";

Test(daemon, gst_sink_to_src_round_trip_keeps_caps_pixels_and_seq, .init = init)
{
	struct daemon d;
	GstBus *sink_bus, *src_bus;
	GstVideoInfo info;
	char desc[256];

	start(&d, "[daemon]\n");
	snprintf(desc, sizeof(desc), "framebussink socket=%s stream=gst.i420 sync=false", d.socket);
	GstHarness *sink = harness(desc, &sink_bus);
	gst_harness_set_src_caps_str(sink, i420_caps);
	gst_video_info_from_caps(&info, gst_caps_from_string(i420_caps));
	/* The sink published the stream when it took the caps. */

	/* Downstream without GstVideoMeta: the ring's rows (64-byte strides)
	 * are copied into GStreamer's default layout. */
	snprintf(desc, sizeof(desc), "framebussrc socket=%s stream=gst.i420 mode=queue", d.socket);
	GstHarness *src = harness_full(desc, false, &src_bus);
	gst_harness_play(src);
	/* The subscription is made when the source starts. */
	for (guint64 seq = 1; seq <= 20; seq++) {
		cr_assert_eq(gst_harness_push(sink, pattern(&info, seq)), GST_FLOW_OK);
		GstBuffer *buf = gst_harness_pull(src);
		cr_assert_not_null(buf, "frame %lu never came", (unsigned long)seq);
		GstCaps *caps = gst_pad_get_current_caps(src->sinkpad);
		GstVideoInfo got;
		gst_video_info_from_caps(&got, caps);
		cr_assert_eq(GST_VIDEO_INFO_FORMAT(&got), GST_VIDEO_FORMAT_I420);
		cr_assert_eq(GST_VIDEO_INFO_WIDTH(&got), 64);
		cr_assert_eq(GST_VIDEO_INFO_HEIGHT(&got), 48);
		gst_caps_unref(caps);
		cr_assert_eq(GST_BUFFER_OFFSET(buf), seq, "offset %lu for pattern %lu",
			     (unsigned long)GST_BUFFER_OFFSET(buf), (unsigned long)seq);
		cr_assert(has_pattern(&got, buf, seq), "frame %lu's pixels differ",
			  (unsigned long)seq);
		cr_assert_null(gst_buffer_get_video_meta(buf));
		const GstStructure *meta = gst_custom_meta_get_structure(
		    gst_buffer_get_custom_meta(buf, "FramebusFrameMeta"));
		guint64 meta_seq;
		cr_assert(gst_structure_get_uint64(meta, "seq", &meta_seq));
		cr_assert_eq(meta_seq, seq);
		cr_assert_str_eq(gst_structure_get_string(meta, "stream"), "gst.i420");
		cr_assert(GST_BUFFER_PTS_IS_VALID(buf));
		gst_buffer_unref(buf);
	}
	gst_harness_teardown(src);
	gst_harness_teardown(sink);
	stop(&d);
}

Test(daemon, gst_src_buffers_are_the_ring_slots_and_go_back_when_freed, .init = init)
{
	struct daemon d;
	GstBus *bus;
	char desc[256];

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 5);
	snprintf(desc, sizeof(desc), "framebussrc socket=%s stream=bars max-holds=4", d.socket);
	GstHarness *src = harness(desc, &bus);
	gst_harness_play(src);

	/* Downstream keeps three: each is a slot, read-only, described. */
	GstBuffer *held[3];
	for (int i = 0; i < 3; i++) {
		held[i] = gst_harness_pull(src);
		cr_assert_not_null(held[i]);
		GstMapInfo map;
		cr_assert(gst_buffer_map(held[i], &map, GST_MAP_READ));
		cr_assert(in_memfd(map.data), "buffer memory at %p is not in a ring's memfd",
			  map.data);
		gst_buffer_unmap(held[i], &map);
		cr_assert(GST_MEMORY_IS_READONLY(gst_buffer_peek_memory(held[i], 0)));
		cr_assert_not_null(gst_buffer_get_video_meta(held[i]));
		cr_assert_not_null(gst_buffer_get_reference_timestamp_meta(held[i], NULL));
	}
	/* The fourth hold would be the last (max-holds 4): from now on frames
	 * are copies, and they keep coming, while the daemon sees three held. */
	for (int i = 0; i < 10; i++) {
		GstBuffer *copy = gst_harness_pull(src);
		cr_assert_not_null(copy, "the source stopped while downstream kept frames");
		GstMapInfo map;
		cr_assert(gst_buffer_map(copy, &map, GST_MAP_READ));
		cr_assert(!in_memfd(map.data), "frame %d after three held is a slot", i);
		gst_buffer_unmap(copy, &map);
		gst_buffer_unref(copy);
	}
	struct fb_subscription_info *subs;
	size_t n;
	cr_assert_eq(fb_client_get_subscriptions(c, "bars", &subs, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(subs[0].held, 3, "held %u", subs[0].held);
	free(subs);

	/* A writable map of a slot's buffer is a copy, never the slot. */
	GstBuffer *w = gst_buffer_make_writable(gst_buffer_ref(held[0]));
	GstMapInfo map;
	cr_assert(gst_buffer_map(w, &map, GST_MAP_WRITE));
	cr_assert(!in_memfd(map.data));
	gst_buffer_unmap(w, &map);
	gst_buffer_unref(w);

	/* Given back, they free their slots: frames are slots again. */
	for (int i = 0; i < 3; i++)
		gst_buffer_unref(held[i]);
	bool slot = false;
	for (int i = 0; i < 400 && !slot; i++) {
		GstBuffer *next = gst_harness_pull(src);
		cr_assert_not_null(next);
		cr_assert(gst_buffer_map(next, &map, GST_MAP_READ));
		slot = in_memfd(map.data);
		gst_buffer_unmap(next, &map);
		gst_buffer_unref(next);
	}
	cr_assert(slot, "frames stayed copies after the held ones came back");
	cr_assert_eq(fb_client_get_subscriptions(c, "bars", &subs, &n), 0);
	cr_assert_leq(subs[0].held, 3);
	free(subs);
	gst_harness_teardown(src);
	fb_client_free(c);
	stop(&d);
}

/* Pushes count pattern buffers into a sink harness (a block stream waits). */
struct pusher {
	GstHarness *sink;
	GstVideoInfo info;
	guint64 count;
};

static gpointer push_all(gpointer data)
{
	struct pusher *p = data;
	for (guint64 seq = 1; seq <= p->count; seq++)
		cr_assert_eq(gst_harness_push(p->sink, pattern(&p->info, seq)), GST_FLOW_OK);
	return NULL;
}

Test(daemon, gst_slow_queue_source_of_a_block_sink_loses_nothing, .init = init)
{
	struct daemon d;
	GstBus *sink_bus, *src_bus;
	char desc[256];
	struct pusher p = {.count = 60};

	start(&d, "[daemon]\n");
	snprintf(desc, sizeof(desc),
		 "framebussink socket=%s stream=gst.block sync=false policy=block slots=4",
		 d.socket);
	p.sink = harness(desc, &sink_bus);
	gst_harness_set_src_caps_str(p.sink, i420_caps);
	gst_video_info_from_caps(&p.info, gst_caps_from_string(i420_caps));
	snprintf(desc, sizeof(desc),
		 "framebussrc socket=%s stream=gst.block mode=queue max-holds=2", d.socket);
	GstHarness *src = harness(desc, &src_bus);
	gst_harness_play(src);

	GThread *t = g_thread_new("pusher", push_all, &p);
	/* Downstream takes a frame every 10 ms while the sink pushes flat out:
	 * the sink waits for it. */
	for (guint64 seq = 1; seq <= p.count; seq++) {
		GstBuffer *buf = gst_harness_pull(src);
		cr_assert_not_null(buf);
		cr_assert_eq(GST_BUFFER_OFFSET(buf), seq, "got %lu, expected %lu",
			     (unsigned long)GST_BUFFER_OFFSET(buf), (unsigned long)seq);
		cr_assert(!GST_BUFFER_FLAG_IS_SET(buf, GST_BUFFER_FLAG_DISCONT) || seq == 1);
		cr_assert(has_pattern(&p.info, buf, seq), "frame %lu differs", (unsigned long)seq);
		gst_buffer_unref(buf);
		th_sleep_us(10000);
	}
	g_thread_join(t);
	guint64 dropped;
	GstElement *sink = gst_harness_find_element(p.sink, "framebussink");
	g_object_get(sink, "dropped", &dropped, NULL);
	gst_object_unref(sink);
	cr_assert_eq(dropped, 0);
	gst_harness_teardown(src);
	gst_harness_teardown(p.sink);
	stop(&d);
}

Test(daemon, gst_src_follows_a_daemon_restart_and_a_new_geometry, .init = init)
{
	struct daemon d;
	GstBus *bus;
	char desc[256];

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 5);
	fb_client_free(c);
	snprintf(desc, sizeof(desc), "framebussrc socket=%s stream=bars", d.socket);
	GstHarness *src = harness(desc, &bus);
	gst_harness_play(src);
	GstBuffer *before = gst_harness_pull(src);
	cr_assert_not_null(before);

	/* Killed, and back with the stream at another size; the buffer still
	 * held keeps its old ring mapped. */
	kill(d.pid, SIGKILL);
	th_wait(d.pid);
	unlink(d.socket);
	char config[512];
	snprintf(config, sizeof(config), "%s", lavfi_config);
	char *size = strstr(config, "width = 320\nheight = 240");
	memcpy(size, "width = 160\nheight = 120", strlen("width = 160\nheight = 120"));
	write_file(d.config, config);
	d.pid = spawn_daemon(&d, NULL);

	GstBuffer *after = NULL;
	GstVideoInfo info;
	for (int i = 0; i < 400; i++) { /* 8 s at 50 fps */
		after = gst_harness_pull(src);
		cr_assert_not_null(after, "no frame after the restart");
		GstCaps *caps = gst_pad_get_current_caps(src->sinkpad);
		gst_video_info_from_caps(&info, caps);
		gst_caps_unref(caps);
		if (GST_VIDEO_INFO_WIDTH(&info) == 160)
			break;
		gst_buffer_unref(after);
		after = NULL;
	}
	cr_assert_not_null(after, "the source never took the stream's new size");
	cr_assert_eq(GST_VIDEO_INFO_HEIGHT(&info), 120);
	GstVideoMeta *vmeta = gst_buffer_get_video_meta(after);
	cr_assert_not_null(vmeta);
	cr_assert_eq(vmeta->width, 160);
	cr_assert_eq(vmeta->stride[0], 512, "stride %d: not the ring's", vmeta->stride[0]);
	GstMapInfo map;
	cr_assert(gst_buffer_map(before, &map, GST_MAP_READ), "the old buffer lost its memory");
	cr_assert_eq(map.size, 320 * 240 * 3);
	gst_buffer_unmap(before, &map);
	gst_buffer_unref(before);
	gst_buffer_unref(after);
	gst_harness_teardown(src);
	stop(&d);
}

Test(daemon, gst_bad_properties_and_caps_are_element_errors_naming_them, .init = init)
{
	struct daemon d;
	GstBus *bus;
	char desc[256];

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 5);
	fb_client_free(c);

	snprintf(desc, sizeof(desc), "framebussrc socket=%s stream=nope", d.socket);
	GstHarness *h = harness(desc, &bus);
	gst_element_set_state(h->element, GST_STATE_PLAYING);
	char *text = error_text(bus, 5);
	cr_assert(strstr(text, "'nope'") && strstr(text, "no stream of that name"), "%s", text);
	g_free(text);
	gst_harness_teardown(h);

	h = harness("framebussrc socket=/nonexistent/framebus.sock stream=bars", &bus);
	gst_element_set_state(h->element, GST_STATE_PLAYING);
	text = error_text(bus, 5);
	cr_assert(strstr(text, "Cannot connect to framebusd at /nonexistent/framebus.sock"), "%s",
		  text);
	g_free(text);
	gst_harness_teardown(h);

	/* A name the bus has. */
	snprintf(desc, sizeof(desc), "framebussink socket=%s stream=bars sync=false", d.socket);
	h = harness(desc, &bus);
	gst_harness_set_src_caps_str(h, i420_caps);
	GstVideoInfo info;
	gst_video_info_from_caps(&info, gst_caps_from_string(i420_caps));
	cr_assert_neq(gst_harness_push(h, pattern(&info, 1)), GST_FLOW_OK);
	text = error_text(bus, 5);
	cr_assert(strstr(text, "Cannot publish stream 'bars'") &&
		      strstr(text, "already has a stream of that name"),
		  "%s", text);
	g_free(text);
	gst_harness_teardown(h);

	/* Caps the bus cannot carry: a 4:2:0 picture of odd width. */
	snprintf(desc, sizeof(desc), "framebussink socket=%s stream=odd sync=false", d.socket);
	h = harness(desc, &bus);
	gst_harness_set_src_caps_str(h, "video/x-raw,format=NV12,width=63,height=48,framerate=5/1");
	gst_video_info_from_caps(&info, gst_caps_from_string("video/x-raw,format=NV12,width=63,"
							     "height=48,framerate=5/1"));
	cr_assert_neq(gst_harness_push(h, gst_buffer_new_allocate(NULL, info.size, NULL)),
		      GST_FLOW_OK);
	text = error_text(bus, 5);
	cr_assert(strstr(text, "Cannot publish stream 'odd' (63x48 nv12"), "%s", text);
	g_free(text);
	gst_harness_teardown(h);
	stop(&d);
}

Test(daemon, gst_launch_pipelines_read_and_feed_the_bus, .init = init)
{
	struct daemon d;
	char cmd[1024];

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 5);

	/* Into the bus from videotestsrc, out again into a PNG. */
	snprintf(cmd, sizeof(cmd),
		 "gst-launch-1.0 -q videotestsrc is-live=true num-buffers=150 ! "
		 "video/x-raw,format=BGR,width=96,height=64,framerate=30/1 ! "
		 "framebussink socket=%s stream=launched >%s/sink.log 2>&1 &",
		 d.socket, d.dir);
	cr_assert_eq(run(cmd), 0);
	wait_state(c, "launched", FB_STREAM_RUNNING, 10);
	snprintf(cmd, sizeof(cmd),
		 "gst-launch-1.0 -q framebussrc socket=%s stream=launched num-buffers=5 ! "
		 "videoconvert ! pngenc snapshot=true ! filesink location=%s/out.png",
		 d.socket, d.dir);
	cr_assert_eq(run(cmd), 0, "gst-launch-1.0 failed");
	char png[160];
	snprintf(png, sizeof(png), "%s/out.png", d.dir);
	cr_assert_eq(strncmp(read_file(png) + 1, "PNG", 3), 0, "%s is no PNG", png);

	snprintf(cmd, sizeof(cmd),
		 "gst-launch-1.0 framebussrc socket=%s stream=nope ! fakesink >%s/bad.log 2>&1",
		 d.socket, d.dir);
	cr_assert_neq(run(cmd), 0);
	char log[160];
	snprintf(log, sizeof(log), "%s/bad.log", d.dir);
	cr_assert(strstr(read_file(log), "Cannot subscribe to stream 'nope'"), "%s",
		  read_file(log));
	fb_client_free(c);
	stop(&d);
}

Test(daemon, gst_src_to_sink_keeps_each_frames_identity_and_side_data, .init = init)
{
	struct daemon d;
	char desc[512];

	start(&d, "[daemon]\n");
	fb_client *c = client(&d);
	struct fb_ring_params params = th_params(64, 48, FB_FORMAT_GRAY8, 4, FB_POLICY_BLOCK);
	fb_producer *producer;
	cr_assert_eq(fb_client_publish(c, "made", &params, &producer), 0);

	/* made -> framebussrc -> framebussink -> made.copy, in a pipeline. */
	snprintf(desc, sizeof(desc),
		 "framebussrc socket=%s stream=made mode=queue ! "
		 "framebussink socket=%s stream=made.copy sync=false policy=block",
		 d.socket, d.socket);
	GError *error = NULL;
	GstElement *pipeline = gst_parse_launch(desc, &error);
	cr_assert_not_null(pipeline, "%s", error ? error->message : "");
	gst_element_set_state(pipeline, GST_STATE_PLAYING);

	/* The copy appears when the sink has caps, after the first frame. */
	fb_subscriber *sub = NULL;
	for (uint64_t seq = 1; seq <= 10; seq++) {
		struct fb_frame *f;
		cr_assert_eq(fb_producer_acquire(producer, 5000, &f), 0);
		memset(f->data[0], (int)seq, (size_t)f->stride[0] * 48);
		f->meta_size =
		    (uint32_t)snprintf((char *)f->meta, 64, "{\"n\": %lu}", (unsigned long)seq);
		cr_assert_eq(fb_producer_publish(producer, f), 0);
		if (seq == 1) {
			for (int i = 0; i < 500 && !sub; i++) {
				if (fb_client_subscribe(c, "made.copy", FB_MODE_QUEUE, 0, &sub) < 0)
					th_sleep_us(10000);
			}
			cr_assert_not_null(sub, "made.copy never appeared");
		}
	}
	/* The first frame made the copy's ring: its subscriber sees every frame
	 * from the first published after it subscribed. */
	const struct fb_frame *f;
	cr_assert_eq(fb_subscriber_acquire(sub, 5000, &f), 0);
	uint64_t first = f->source_seq;
	cr_assert(first == 1 || first == 2, "the copy began at frame %lu", (unsigned long)first);
	for (uint64_t seq = first; seq <= 10; seq++) {
		if (seq > first) {
			int r = fb_subscriber_acquire(sub, 5000, &f);
			cr_assert_eq(r, 0, "frame %lu: %s", (unsigned long)seq, fb_strerror(r));
		}
		cr_assert_eq(f->source_seq, seq, "%lu after %lu", (unsigned long)f->source_seq,
			     (unsigned long)seq - 1);
		cr_assert_eq(f->data[0][0], seq);
		char text[64];
		snprintf(text, sizeof(text), "{\"n\": %lu}", (unsigned long)seq);
		cr_assert_eq(f->meta_size, strlen(text));
		cr_assert_eq(memcmp(f->meta, text, f->meta_size), 0);
		cr_assert_eq(f->trace->n_hops, 1);
		cr_assert_str_eq(f->trace->hops[0].stream, "made");
		cr_assert_eq(f->trace->hops[0].seq, seq);
		fb_subscriber_release(sub, f);
	}
	fb_client_unsubscribe(c, sub);
	gst_element_set_state(pipeline, GST_STATE_NULL);
	gst_object_unref(pipeline);
	fb_client_unpublish(c, producer);
	fb_client_free(c);
	stop(&d);
}

/* Frames of videotestsrc's bouncing ball through framebussink, upstream's
 * buffers taken from the sink's pool or not (identity drop-allocation=true):
 * the stream's pixels are the same either way, and only the second copies. */
Test(daemon, gst_sink_lends_slots_to_upstream_with_zero_copies, .init = init)
{
	struct daemon d;
	char desc[1024];
	const char *pipes[2] = {"", "identity drop-allocation=true !"};
	const char *names[2] = {"zero", "copy"};
	GstElement *pipeline[2];
	fb_subscriber *sub[2];

	start(&d, "[daemon]\n");
	fb_client *c = client(&d);
	for (int i = 0; i < 2; i++) {
		snprintf(
		    desc, sizeof(desc),
		    "videotestsrc num-buffers=20 pattern=ball ! "
		    "video/x-raw,format=I420,width=64,height=48,framerate=30/1 ! %s "
		    "framebussink name=sink socket=%s stream=%s policy=block slots=4 sync=false",
		    pipes[i], d.socket, names[i]);
		pipeline[i] = gst_parse_launch(desc, NULL);
		cr_assert_not_null(pipeline[i]);
		/* Prerolled: the stream is there, no frame published yet. */
		cr_assert_neq(gst_element_set_state(pipeline[i], GST_STATE_PAUSED),
			      GST_STATE_CHANGE_FAILURE);
		cr_assert_neq(gst_element_get_state(pipeline[i], NULL, NULL, 5 * GST_SECOND),
			      GST_STATE_CHANGE_FAILURE);
		cr_assert_eq(fb_client_subscribe(c, names[i], FB_MODE_QUEUE, 0, &sub[i]), 0);
		gst_element_set_state(pipeline[i], GST_STATE_PLAYING);
	}
	for (int n = 1; n <= 20; n++) {
		const struct fb_frame *f[2];
		for (int i = 0; i < 2; i++)
			cr_assert_eq(fb_subscriber_acquire(sub[i], 5000, &f[i]), 0, "%s frame %d",
				     names[i], n);
		cr_assert_eq(f[0]->seq, (uint64_t)n);
		const struct fb_layout *l = fb_subscriber_get_layout(sub[0]);
		for (uint32_t p = 0; p < l->n_planes; p++)
			for (uint32_t y = 0; y < l->plane_height[p]; y++)
				cr_assert_eq(memcmp(f[0]->data[p] + (size_t)y * f[0]->stride[p],
						    f[1]->data[p] + (size_t)y * f[1]->stride[p],
						    p ? 32 : 64),
					     0, "frame %d, plane %u, row %u differ", n, p, y);
		for (int i = 0; i < 2; i++)
			fb_subscriber_release(sub[i], f[i]);
	}
	for (int i = 0; i < 2; i++) {
		GstElement *sink = gst_bin_get_by_name(GST_BIN(pipeline[i]), "sink");
		guint64 copied;
		g_object_get(sink, "copied", &copied, NULL);
		cr_assert_eq(copied, i == 0 ? 0 : 20, "%s: %lu frames copied", names[i],
			     (unsigned long)copied);
		gst_object_unref(sink);
		fb_client_unsubscribe(c, sub[i]);
		gst_element_set_state(pipeline[i], GST_STATE_NULL);
		gst_object_unref(pipeline[i]);
	}
	fb_client_free(c);
	stop(&d);
}

/* A buffer lent by the sink's pool outlives the sink: its slot stays mapped
 * (and the stream published) until it goes. */
Test(daemon, gst_a_sink_pool_buffer_outlives_the_sink, .init = init)
{
	struct daemon d;
	GstBus *bus;
	char desc[256];

	start(&d, "[daemon]\n");
	fb_client *c = client(&d);
	snprintf(desc, sizeof(desc), "framebussink socket=%s stream=lent sync=false", d.socket);
	GstHarness *sink = harness(desc, &bus);
	gst_harness_set_src_caps_str(sink, i420_caps);
	GstCaps *caps = gst_caps_from_string(i420_caps);
	GstQuery *q = gst_query_new_allocation(caps, TRUE);
	cr_assert(gst_pad_peer_query(sink->srcpad, q));
	cr_assert_geq(gst_query_get_n_allocation_pools(q), 1, "the sink proposed no pool");
	GstBufferPool *pool;
	guint size, min, max;
	gst_query_parse_nth_allocation_pool(q, 0, &pool, &size, &min, &max);
	cr_assert_eq(max, 1);
	GstStructure *config = gst_buffer_pool_get_config(pool);
	gst_buffer_pool_config_set_params(config, caps, size, 0, 1);
	gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
	cr_assert(gst_buffer_pool_set_config(pool, config));
	cr_assert(gst_buffer_pool_set_active(pool, TRUE));
	GstBuffer *buf;
	cr_assert_eq(gst_buffer_pool_acquire_buffer(pool, &buf, NULL), GST_FLOW_OK);
	GstMapInfo map;
	cr_assert(gst_buffer_map(buf, &map, GST_MAP_WRITE));
	cr_assert(in_memfd(map.data), "the pool's buffer is not a slot");
	gst_buffer_unmap(buf, &map);

	gst_harness_teardown(sink); /* the sink stops and goes */
	cr_assert(gst_buffer_map(buf, &map, GST_MAP_WRITE));
	memset(map.data, 0x5a, map.size); /* still mapped: no fault */
	gst_buffer_unmap(buf, &map);
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(c, "lent", &info), 0);
	gst_buffer_unref(buf);
	gst_buffer_pool_set_active(pool, FALSE);
	gst_object_unref(pool);
	gst_query_unref(q);
	gst_caps_unref(caps);
	/* The last one out withdrew the stream. */
	int r = 0;
	for (int i = 0; i < 200 && r == 0; i++) {
		r = fb_client_get_stream(c, "lent", &info);
		if (r == 0)
			th_sleep_us(10000);
	}
	cr_assert_eq(r, -ENOENT, "the stream outlived its last buffer");
	fb_client_free(c);
	stop(&d);
}

Test(daemon, gst_sink_republishes_on_a_new_size_and_keeps_its_ring_on_a_new_rate, .init = init)
{
	struct daemon d;
	GstBus *bus;
	char desc[256];
	GstVideoInfo info;
	const struct fb_frame *f;

	start(&d, "[daemon]\n");
	fb_client *c = client(&d);
	snprintf(desc, sizeof(desc), "framebussink socket=%s stream=sized sync=false", d.socket);
	GstHarness *sink = harness(desc, &bus);
	gst_harness_set_src_caps_str(sink, i420_caps);
	fb_subscriber *sub;
	cr_assert_eq(fb_client_subscribe(c, "sized", FB_MODE_QUEUE, 0, &sub), 0);
	gst_video_info_from_caps(&info, gst_caps_from_string(i420_caps));
	cr_assert_eq(gst_harness_push(sink, pattern(&info, 1)), GST_FLOW_OK);
	cr_assert_eq(fb_subscriber_acquire(sub, 5000, &f), 0);
	fb_subscriber_release(sub, f);

	/* Another rate: the same ring goes on. */
	gst_harness_set_src_caps_str(sink,
				     "video/x-raw,format=I420,width=64,height=48,framerate=25/1");
	cr_assert_eq(gst_harness_push(sink, pattern(&info, 2)), GST_FLOW_OK);
	cr_assert_eq(fb_subscriber_acquire(sub, 5000, &f), 0, "the ring did not go on");
	cr_assert_eq(f->seq, 2);
	fb_subscriber_release(sub, f);

	/* Another size: a new ring; the old one's subscriber sees it end. */
	const char *big = "video/x-raw,format=I420,width=128,height=96,framerate=25/1";
	gst_harness_set_src_caps_str(sink, big);
	gst_video_info_from_caps(&info, gst_caps_from_string(big));
	cr_assert_eq(gst_harness_push(sink, pattern(&info, 3)), GST_FLOW_OK);
	cr_assert_eq(fb_subscriber_acquire(sub, 5000, &f), -EPIPE);
	fb_client_unsubscribe(c, sub);
	cr_assert_eq(fb_client_subscribe(c, "sized", FB_MODE_QUEUE, 0, &sub), 0);
	cr_assert_eq(fb_subscriber_get_layout(sub)->width, 128);
	cr_assert_eq(gst_harness_push(sink, pattern(&info, 4)), GST_FLOW_OK);
	cr_assert_eq(fb_subscriber_acquire(sub, 5000, &f), 0);
	fb_subscriber_release(sub, f);
	fb_client_unsubscribe(c, sub);
	gst_harness_teardown(sink);
	fb_client_free(c);
	stop(&d);
}

Test(daemon, gst_sink_publishes_again_after_a_daemon_restart, .init = init)
{
	struct daemon d;
	char desc[512];

	start(&d, "[daemon]\n");
	snprintf(desc, sizeof(desc),
		 "videotestsrc is-live=true ! "
		 "video/x-raw,format=GRAY8,width=64,height=48,framerate=50/1 ! "
		 "framebussink socket=%s stream=kept sync=false",
		 d.socket);
	GstElement *pipeline = gst_parse_launch(desc, NULL);
	cr_assert_not_null(pipeline);
	gst_element_set_state(pipeline, GST_STATE_PLAYING);
	fb_client *c = client(&d);
	wait_state(c, "kept", FB_STREAM_RUNNING, 5);
	fb_client_free(c);

	kill(d.pid, SIGKILL);
	th_wait(d.pid);
	unlink(d.socket);
	d.pid = spawn_daemon(&d, NULL);
	for (int i = 0; i < 500 && fb_client_connect(d.socket, "test", &c) < 0; i++)
		th_sleep_us(10000);
	wait_state(c, "kept", FB_STREAM_RUNNING, 10);
	fb_subscriber *sub;
	cr_assert_eq(fb_client_subscribe(c, "kept", FB_MODE_QUEUE, 0, &sub), 0);
	const struct fb_frame *f;
	cr_assert_eq(fb_subscriber_acquire(sub, 5000, &f), 0, "no frame after the restart");
	fb_subscriber_release(sub, f);
	fb_client_unsubscribe(c, sub);
	gst_element_set_state(pipeline, GST_STATE_NULL);
	gst_object_unref(pipeline);
	fb_client_free(c);
	stop(&d);
}

/* A source waiting for a frame that does not come stops when told. */
Test(daemon, gst_src_waiting_for_a_frame_stops_when_told, .init = init)
{
	struct daemon d;
	char desc[256];

	start(&d, "[daemon]\n");
	fb_client *c = client(&d);
	struct fb_ring_params params = th_params(64, 48, FB_FORMAT_GRAY8, 4, FB_POLICY_DROP);
	fb_producer *producer;
	cr_assert_eq(fb_client_publish(c, "quiet", &params, &producer), 0);
	snprintf(desc, sizeof(desc), "framebussrc socket=%s stream=quiet ! fakesink", d.socket);
	GstElement *pipeline = gst_parse_launch(desc, NULL);
	gst_element_set_state(pipeline, GST_STATE_PLAYING);
	th_sleep_us(300000);
	/* It returns: a source stuck in its wait would hang here (and the
	 * test's timeout would say so). */
	cr_assert_eq(gst_element_set_state(pipeline, GST_STATE_NULL), GST_STATE_CHANGE_SUCCESS);
	gst_object_unref(pipeline);
	fb_client_unpublish(c, producer);
	fb_client_free(c);
	stop(&d);
}
