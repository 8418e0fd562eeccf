/* SPDX-License-Identifier: MIT */
/* framebusd's sources delivering: a lavfi test pattern, an H.264 file made by
 * ffmpeg, HTTP, UDP and RTSP inputs from ffmpeg processes on 127.0.0.1. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon-helpers.h"

Test(daemon, lavfi_stream_serves_whole_frames_in_order)
{
	struct daemon d;
	fb_subscriber *sub;
	struct fb_stream_info *list;
	size_t n;

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	cr_assert_eq(fb_client_list_streams(c, &list, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(list[0].name, "bars");
	cr_assert_eq(list[0].width, 320);
	cr_assert_eq(list[0].format, FB_FORMAT_BGR24);
	free(list);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);

	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_QUEUE, 2, &sub), 0, "%s",
		     fb_client_last_error(c));
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	cr_assert_eq(l->width, 320);
	cr_assert_eq(l->height, 240);
	uint64_t last = 0;
	for (int i = 0; i < 25; i++) {
		const struct fb_frame *f;
		int r = fb_subscriber_acquire(sub, 2000, &f);
		cr_assert_eq(r, 0, "frame %d: %s", i, fb_strerror(r));
		cr_assert_gt(f->seq, last);
		if (last)
			cr_assert_eq(f->seq, last + 1 + f->missed);
		last = f->seq;
		/* testsrc2's left bar is red: BGR (0, 0, 255). */
		const uint8_t *px = f->data[0] + 120 * f->stride[0] + 10 * 3;
		cr_assert(px[0] < 40 && px[1] < 40 && px[2] > 200, "pixel %u,%u,%u is not red",
			  px[0], px[1], px[2]);
		cr_assert_eq(fb_subscriber_release(sub, f), 0);
	}
	struct fb_subscription_info *subs;
	cr_assert_eq(fb_client_get_subscriptions(c, "bars", &subs, &n), 0);
	free(subs);
	/* 40 frames (0.8 s at 50 fps) and at least 0.6 s: the daemon measures
	 * the read rate between two requests 0.5 s or more apart, and a source
	 * catching up after a hiccup can deliver 40 frames faster than that. */
	uint64_t first_request = fb_now_ns();
	for (int i = 0; i < 40 || fb_now_ns() - first_request < 600000000u; i++) {
		const struct fb_frame *f;
		cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0);
		cr_assert_eq(fb_subscriber_release(sub, f), 0);
	}
	cr_assert_eq(fb_client_get_subscriptions(c, "bars", &subs, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert(subs[0].fps > 25 && subs[0].fps < 100, "fps out %.1f, expected ~50", subs[0].fps);
	cr_assert_eq(subs[0].mode, FB_MODE_QUEUE);
	cr_assert(strstr(subs[0].client, "test["), "client label '%s'", subs[0].client);
	free(subs);
	cr_assert_eq(fb_client_unsubscribe(c, sub), 0);
	cr_assert_eq(fb_client_subscribe(c, "nope", FB_MODE_QUEUE, 2, &sub), -ENOENT);
	cr_assert_str_eq(fb_client_last_error(c), "no stream named 'nope'");
	cr_assert_eq(fb_client_subscribe(c, "bars", 9, 2, &sub), -EINVAL);
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 6, &sub), -EINVAL);
	cr_assert(strstr(fb_client_last_error(c), "1 to 5"), "%s", fb_client_last_error(c));
	fb_client_free(c);
	stop(&d);
}

Test(daemon, h264_file_decodes_then_ends)
{
	struct daemon d;
	char cmd[512], config[512], files[] = "/tmp/framebus-files-XXXXXX";
	fb_subscriber *sub;

	cr_assert_not_null(mkdtemp(files));
	snprintf(cmd, sizeof(cmd),
		 "ffmpeg -loglevel error -y -f lavfi -i color=c=blue:size=192x108:rate=25 "
		 "-frames:v 50 -c:v libx264 -pix_fmt yuv420p %s/blue.mp4",
		 files);
	cr_assert_eq(run(cmd), 0, "ffmpeg could not make the test file");
	snprintf(config, sizeof(config),
		 "[stream file]\nurl = %s/blue.mp4\nwidth = 192\nheight = 108\n"
		 "pacing = native\npolicy = block\n",
		 files);
	start(&d, config);
	fb_client *c = client(&d);
	cr_assert_eq(fb_client_subscribe(c, "file", FB_MODE_QUEUE, 1, &sub), 0, "%s",
		     fb_client_last_error(c));
	const struct fb_frame *f;
	int r, frames = 0;
	uint64_t last = 0;
	while ((r = fb_subscriber_acquire(sub, 5000, &f)) == 0) {
		const uint8_t *px = f->data[0] + 50 * f->stride[0] + 90 * 3;
		cr_assert(px[0] > 200 && px[1] < 40 && px[2] < 40, "pixel %u,%u,%u is not blue",
			  px[0], px[1], px[2]);
		cr_assert(last == 0 || f->seq == last + 1, "frames lost under block");
		last = f->seq;
		frames++;
		fb_subscriber_release(sub, f);
	}
	cr_assert_eq(r, -EPIPE, "the end of the file: %s", fb_strerror(r));
	cr_assert_geq(frames, 40, "only %d of 50 frames", frames);
	struct fb_stream_info info = wait_state(c, "file", FB_STREAM_ENDED, 5);
	cr_assert_eq(info.published, 50, "published %llu of 50",
		     (unsigned long long)info.published);
	/* A file is decoded with FFmpeg's own threading, frame threads too. */
	cr_assert(strstr(read_file(d.log), "(h264 192x108)"), "%s", read_file(d.log));
	fb_subscriber_free(sub);
	fb_client_free(c);
	stop(&d);
	remove_dir(files);
}

/* HTTP, UDP and RTSP inputs from local ffmpeg processes on 127.0.0.1 (for
 * RTSP framebusd listens and ffmpeg pushes, as an RTSP camera would be
 * pulled: the same RTSP session either way). */
Test(daemon, http_udp_and_rtsp_sources)
{
	struct daemon d;
	char config[1024], cmd[512];
	int port = free_port() + 1;

	snprintf(
	    config, sizeof(config),
	    "[stream http]\nurl = http://127.0.0.1:%d/live.ts\nretry_min = 200ms\nretry_max = 1s\n"
	    "[stream udp]\nurl = udp://127.0.0.1:%d\ninput_format = mpegts\nretry_min = 200ms\n"
	    "retry_max = 1s\noption.timeout = 2000000\n"
	    "[stream rtsp]\nurl = rtsp://127.0.0.1:%d/live\noption.rtsp_flags = listen\n",
	    port, port + 1, port + 2);
	snprintf(
	    cmd, sizeof(cmd),
	    "ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=96x64:rate=25 -t 20 "
	    "-c:v mpeg2video -f mpegts -listen 1 http://127.0.0.1:%d/live.ts >/dev/null 2>&1 & "
	    "ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=112x64:rate=25 -t 20 "
	    "-c:v mpeg2video -f mpegts udp://127.0.0.1:%d >/dev/null 2>&1 &",
	    port, port + 1);
	cr_assert_eq(run(cmd), 0);
	start(&d, config);
	snprintf(
	    cmd, sizeof(cmd),
	    "sleep 0.5; ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=128x96:rate=25 -t 20 "
	    "-c:v mpeg2video -f rtsp rtsp://127.0.0.1:%d/live >/dev/null 2>&1 &",
	    port + 2);
	cr_assert_eq(run(cmd), 0);
	fb_client *c = client(&d);
	struct fb_stream_info rtsp = wait_state(c, "rtsp", FB_STREAM_RUNNING, 15);
	cr_assert_eq(rtsp.width, 128);
	struct fb_stream_info http = wait_state(c, "http", FB_STREAM_RUNNING, 15);
	struct fb_stream_info udp = wait_state(c, "udp", FB_STREAM_RUNNING, 15);
	cr_assert_eq(http.width, 96);
	cr_assert_eq(udp.width, 112);
	fb_subscriber *sub;
	const struct fb_frame *f;
	cr_assert_eq(fb_client_subscribe(c, "udp", FB_MODE_LATEST, 1, &sub), 0);
	cr_assert_eq(fb_subscriber_acquire(sub, 3000, &f), 0);
	fb_subscriber_release(sub, f);
	fb_subscriber_free(sub);
	fb_client_free(c);
	/* A camera is decoded without frame threads, which would hold each
	 * picture back a frame per thread. */
	char opened[128];
	snprintf(opened, sizeof(opened),
		 "opened http://127.0.0.1:%d/live.ts (mpeg2video 96x64, slice threads)", port);
	cr_assert(strstr(read_file(d.log), opened), "no '%s' in:\n%s", opened, read_file(d.log));
	stop(&d);
	snprintf(cmd, sizeof(cmd),
		 "pkill -f '127.0.0.1:%d' ; pkill -f '127.0.0.1:%d'; "
		 "pkill -f '127.0.0.1:%d'; true",
		 port, port + 1, port + 2);
	run(cmd);
}

/* An HTTP camera on 127.0.0.1 (ffmpeg serving 2 s of video) that closes the
 * connection and, later, serves again: a live input that ends is retried
 * (on_end = auto), its subscriber keeps its subscription and gets frames
 * again, the first one marked a discontinuity, and never an end of stream;
 * the same camera with on_end = end ends its stream. */
Test(daemon, a_camera_that_closes_the_connection_comes_back)
{
	struct daemon d;
	char config[512], serve[384];
	int port = free_port() + 3;
	const char *const server =
	    "ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=96x64:rate=25 -t 2 "
	    "-c:v mpeg2video -f mpegts -listen 1 http://127.0.0.1:%d/live.ts >/dev/null 2>&1 &";

	snprintf(config, sizeof(config),
		 "[stream camera]\nurl = http://127.0.0.1:%d/live.ts\nretry_min = 200ms\n"
		 "retry_max = 500ms\n"
		 "[stream once]\nurl = http://127.0.0.1:%d/live.ts\non_end = end\n"
		 "retry_min = 200ms\nretry_max = 500ms\n",
		 port, port + 1);
	snprintf(serve, sizeof(serve), server, port);
	cr_assert_eq(run(serve), 0);
	snprintf(serve, sizeof(serve), server, port + 1);
	cr_assert_eq(run(serve), 0);
	start(&d, config);
	fb_client *c = client(&d);
	wait_state(c, "camera", FB_STREAM_RUNNING, 15);
	fb_subscriber *sub;
	const struct fb_frame *f;
	cr_assert_eq(fb_client_subscribe(c, "camera", FB_MODE_QUEUE, 1, &sub), 0);
	cr_assert_eq(fb_subscriber_acquire(sub, 3000, &f), 0);
	uint64_t last = f->seq;
	fb_subscriber_release(sub, f);

	/* The camera goes away at the end of its 2 s. */
	wait_log(&d, "stream camera: the input ended (the camera or server closed it); retrying",
		 10);
	struct fb_stream_info once = wait_state(c, "once", FB_STREAM_ENDED, 10);
	cr_assert_str_eq(once.detail, "end of input");
	int r;
	while ((r = fb_subscriber_acquire(sub, 300, &f)) == 0) {
		last = f->seq;
		fb_subscriber_release(sub, f);
	}
	cr_assert_eq(r, -ETIMEDOUT, "a camera away is no end of stream: %s", fb_strerror(r));
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(c, "camera", &info), 0);
	cr_assert_eq(info.state, FB_STREAM_RETRYING);

	/* It comes back: the same ring, the same subscription. */
	snprintf(serve, sizeof(serve), server, port);
	cr_assert_eq(run(serve), 0);
	cr_assert_eq(fb_subscriber_acquire(sub, 10000, &f), 0,
		     "no frame after the camera came back");
	cr_assert_gt(f->seq, last);
	cr_assert(f->flags & FB_FRAME_DISCONTINUITY, "the first frame after it is a discontinuity");
	fb_subscriber_release(sub, f);
	wait_state(c, "camera", FB_STREAM_RUNNING, 5);
	fb_subscriber_free(sub);
	fb_client_free(c);
	stop(&d);
	snprintf(serve, sizeof(serve), "pkill -f '127.0.0.1:%d/' ; true", port);
	run(serve);
}
