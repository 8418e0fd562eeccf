/* SPDX-License-Identifier: MIT */
/* framebusd's configuration: the shipped config, bad configs refused with
 * file, line and key, and reloads (SIGHUP) that touch only what changed. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon-helpers.h"

Test(daemon, shipped_config_serves_cam0)
{
	struct daemon d;
	char text[16384];
	snprintf(text, sizeof(text), "%s",
		 read_file(FRAMEBUS_SOURCE_ROOT "/config/framebusd.conf"));
	cr_assert(strstr(text, "[stream cam0]"));
	start(&d, text);
	fb_client *c = client(&d);
	struct fb_stream_info info = wait_state(c, "cam0", FB_STREAM_RUNNING, 10);
	cr_assert_eq(info.width, 1280);
	cr_assert_eq(info.height, 720);
	fb_client_free(c);
	stop(&d);
}

struct bad_config {
	const char *text;
	const char *message;
};

Test(daemon, bad_configs_are_refused_with_file_line_and_key)
{
	static const struct bad_config cases[] = {
	    {"[daemon]\nbogus = 1\n", "framebusd.conf:2: [daemon] bogus: unknown key"},
	    {"[stream a]\nurl = x\nslots = 1\n",
	     "framebusd.conf:3: [stream a] slots: '1' is not a number from 2 to 64"},
	    {"[stream a]\nurl = x\nformat = rgb48\n",
	     "framebusd.conf:3: [stream a] format: 'rgb48' is not one of gray8, gray16, bgr24"},
	    {"[stream a]\nurl = x\nformat = results\n",
	     "framebusd.conf:3: [stream a] format: 'results' streams carry no pixels"},
	    {"[stream a]\nurl = x\npolicy = wait\n",
	     "framebusd.conf:3: [stream a] policy: 'wait' is not drop or block"},
	    {"[stream a]\nfrom = b\n",
	     "framebusd.conf: [stream a]: from: no stream 'b' in this file"},
	    {"[stream a]\nfrom = b\n[stream b]\nfrom = c\n[stream c]\nfrom = a\n",
	     "[stream a]: from: a cycle: a -> b -> c -> a"},
	    {"[stream a]\nurl = x\nfrom = b\n[stream b]\nurl = y\n",
	     "[stream a]: url and from both given"},
	    {"[stream a]\nurl = x\nfps = 5\n", "[stream a]: fps limits a derived stream"},
	    {"[stream a]\nurl = x\ncrop = 0,0,8,8\n",
	     "[stream a]: crop takes part of a parent's picture: a derived stream"},
	    {"[stream a]\nfrom = b\ncrop = 0,0,8\n[stream b]\nurl = y\n",
	     "framebusd.conf:3: [stream a] crop: '0,0,8' is not X,Y,WIDTH,HEIGHT"},
	    {"[stream a]\nfrom = b\ncrop = 0,0,0,8\n[stream b]\nurl = y\n",
	     "[stream a] crop: '0,0,0,8' is not X,Y,WIDTH,HEIGHT (a rectangle of at least 1x1"},
	    {"[stream a]\nfrom = b\ncrop = 16000,0,400,8\n[stream b]\nurl = y\n",
	     "[stream a] crop: '16000,0,400,8' is not X,Y,WIDTH,HEIGHT"},
	    {"[stream a]\nurl = x\nscale = nearest\n",
	     "framebusd.conf:3: [stream a] scale: 'nearest' is not bilinear, fast_bilinear, area "
	     "or bicubic"},
	    {"[stream a]\nfrom = b\nfps = fast\n[stream b]\nurl = y\n",
	     "framebusd.conf:3: [stream a] fps: 'fast' is not a rate from 0.1 to 1000"},
	    {"[stream a]\nurl = x\nscale_threads = 65\n",
	     "framebusd.conf:3: [stream a] scale_threads: '65' is not a number from 0 to 64"},
	    {"[stream a]\nurl = x\n[daemon]\nscale_threads = all\n",
	     "framebusd.conf:4: [daemon] scale_threads: 'all' is not a number from 0 to 64"},
	    {"[stream a]\nurl = x\non_end = restart\n",
	     "framebusd.conf:3: [stream a] on_end: 'restart' is not auto, retry or end"},
	    {"[stream a]\nurl = rtsp://cam/\nrtsp_client = gstreamer\n",
	     "framebusd.conf:3: [stream a] rtsp_client: 'gstreamer' is not builtin or ffmpeg"},
	    {"[stream a]\nurl = x\nretry_min = soon\n",
	     "[stream a] retry_min: 'soon' is not a duration"},
	    {"# comment\n[stream a b]\nurl = x\n",
	     "framebusd.conf:3: [stream a b] url: stream name 'a b' must be"},
	    {"[stream a]\nwidth = 640\nheight = 480\n", "framebusd.conf: [stream a]: no url"},
	    {"[stream a]\nurl = x\nwidth = 641\nheight = 480\nformat = nv12\n",
	     "641x480 is not a valid size for nv12"},
	    {"[cameras]\nx = 1\n", "[cameras] x: unknown section"},
	    {"[daemon]\nsocket_mode = 999\n", "socket_mode: '999' is not an octal mode"},
	    {"[stream a]\nurl = x\n[stream a]\nurl = y\n",
	     "framebusd.conf:4: [stream a] url: given twice"},
	    {"[stream a]\nurl = x\n[stream b]\nurl = y\n[stream a]\nslots = 4\n",
	     "[stream a] slots: stream 'a' is defined twice"},
	    {"[daemon\n", "framebusd.conf:1: syntax error"},
	    {"[stream a]\nurl = x\npolicy = block\non_stall = wait\n",
	     "framebusd.conf:4: [stream a] on_stall: 'wait' is not latest or drop"},
	    {"[stream a]\nurl = x\npolicy = block\nblock_timeout = 0\n",
	     "framebusd.conf:4: [stream a] block_timeout: '0' is not a duration"},
	    {"[stream a]\nurl = x\nhold_timeout = soon\n",
	     "framebusd.conf:3: [stream a] hold_timeout: 'soon' is neither off nor a duration"},
	    {"[daemon]\nhold_timeout = 0s\n",
	     "framebusd.conf:2: [daemon] hold_timeout: '0s' is neither off nor a duration"},
	    {"[daemon]\nmax_connections_per_user = 0\n",
	     "framebusd.conf:2: [daemon] max_connections_per_user: '0' is not a number from 1 to "
	     "100000"},
	    {"[daemon]\nmax_memory_per_user = lots\n",
	     "framebusd.conf:2: [daemon] max_memory_per_user: 'lots' is not a size"},
	    {"[access a]\nstreams = cam0\nsubscribe = @video no-such-user-xyz\n",
	     "framebusd.conf:3: [access a] subscribe: no user 'no-such-user-xyz'"},
	    {"[access a]\nstreams = cam0\npublish = root @no-such-group-xyz\n",
	     "framebusd.conf:3: [access a] publish: no group 'no-such-group-xyz'"},
	    {"[access a]\nstreams = cam/0\n",
	     "framebusd.conf:2: [access a] streams: 'cam/0' is not a stream name or pattern"},
	    {"[access a]\nsubscribe = 1000\n", "framebusd.conf: [access a]: no streams"},
	    {"[access a]\nstreams = x\nread = 1000\n",
	     "framebusd.conf:3: [access a] read: unknown key (expected streams, subscribe or "
	     "publish)"},
	    {"[access a b]\nstreams = x\n",
	     "framebusd.conf:2: [access a b] streams: rule name 'a b' must be"},
	    {"[access a]\nstreams = x\n[access b]\nstreams = y\n[access a]\nstreams = z\n",
	     "framebusd.conf:6: [access a] streams: rule 'a' is defined twice"},
	    {"[stream a]\nurl = lavfi:testsrc2=size=64x48:rate=5:duration=1000:decimals=0:"
	     "alpha=0,format=yuv420p,drawbox=x=1:y=1:w=8:h=8:color=red,drawbox=x=2:y=2:w=8:h=8:"
	     "color=blue,drawbox=x=3:y=3:w=8:h=8:color=green,drawbox=x=4:y=4:w=8:h=8\n",
	     "framebusd.conf:2: line longer than 199 characters"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct daemon d;
		make_dir(&d);
		write_file(d.config, cases[i].text);
		pid_t pid = spawn_daemon(&d, NULL);
		int status = -1;
		for (int t = 0; t < 500 && waitpid(pid, &status, WNOHANG) == 0; t++)
			th_sleep_us(10000);
		if (status == -1) {
			kill(pid, SIGKILL);
			th_wait(pid);
		}
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1,
			  "case %zu: framebusd did not refuse:\n%s", i, read_file(d.log));
		const char *log = read_file(d.log);
		cr_assert(strstr(log, cases[i].message), "case %zu: expected '%s' in:\n%s", i,
			  cases[i].message, log);
		cr_assert_eq(access(d.socket, F_OK), -1, "case %zu: it listened anyway", i);
		remove_dir(d.dir);
	}
}

Test(daemon, reload_touches_only_changed_streams)
{
	struct daemon d;
	fb_subscriber *kept, *changed;
	const struct fb_frame *f;
	char config[1024];

	snprintf(config, sizeof(config),
		 "%s\n[stream other]\nurl = testsrc=size=64x48:rate=25\n"
		 "input_format = lavfi\nwidth = 64\nheight = 48\n",
		 lavfi_config);
	start(&d, config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	wait_state(c, "other", FB_STREAM_RUNNING, 10);
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_QUEUE, 1, &kept), 0);
	cr_assert_eq(fb_client_subscribe(c, "other", FB_MODE_QUEUE, 1, &changed), 0);
	cr_assert_eq(fb_subscriber_acquire(kept, 2000, &f), 0);
	uint64_t before = f->seq;
	fb_subscriber_release(kept, f);

	/* bars unchanged, other changed, third added. */
	snprintf(config, sizeof(config),
		 "%s\n[stream other]\nurl = testsrc=size=64x48:rate=25\n"
		 "input_format = lavfi\nwidth = 32\nheight = 24\n"
		 "[stream third]\nurl = testsrc=size=64x48:rate=25\ninput_format = lavfi\n",
		 lavfi_config);
	write_file(d.config, config);
	kill(d.pid, SIGHUP);
	wait_state(c, "third", FB_STREAM_RUNNING, 10);
	struct fb_stream_info other = wait_state(c, "other", FB_STREAM_RUNNING, 10);
	cr_assert_eq(other.width, 32);
	struct fb_stream_info third = wait_state(c, "third", FB_STREAM_RUNNING, 10);
	cr_assert_eq(third.width, 64, "geometry taken from the source");

	/* The kept stream's subscription runs on, frame after frame. */
	cr_assert_eq(fb_subscriber_acquire(kept, 2000, &f), 0);
	cr_assert_eq(f->seq, before + 1 + f->missed);
	fb_subscriber_release(kept, f);
	/* The changed stream's old ring ended. */
	int r;
	while ((r = fb_subscriber_acquire(changed, 2000, &f)) == 0)
		fb_subscriber_release(changed, f);
	cr_assert_eq(r, -EPIPE, "%s", fb_strerror(r));
	fb_subscriber_free(changed);

	/* A broken file is refused and the running configuration kept. */
	write_file(d.config, "[stream bars]\nslots = 100\n");
	kill(d.pid, SIGHUP);
	wait_log(&d, "reload refused, keeping the running configuration", 10);
	cr_assert_eq(fb_subscriber_acquire(kept, 2000, &f), 0);
	fb_subscriber_release(kept, f);
	wait_state(c, "third", FB_STREAM_RUNNING, 1);
	fb_subscriber_free(kept);
	fb_client_free(c);
	stop(&d);
}

/* Client-published streams fill the daemon's stream table; a reload that
 * adds a configured stream then refuses it cleanly. */
Test(daemon, reload_with_a_full_stream_table)
{
	struct daemon d;
	struct fb_ring_params params = th_params(16, 16, FB_FORMAT_GRAY8, 2, FB_POLICY_DROP);
	fb_client *pubs[4];
	fb_producer *prods[4][16];
	char name[32];

	start(&d, "[daemon]\nmax_streams_per_client = 16\n");
	for (int k = 0; k < 4; k++) {
		pubs[k] = client(&d);
		for (int i = 0; i < 16; i++) {
			snprintf(name, sizeof(name), "p%d_%d", k, i);
			cr_assert_eq(fb_client_publish(pubs[k], name, &params, &prods[k][i]), 0,
				     "%s: %s", name, fb_client_last_error(pubs[k]));
		}
	}
	fb_client *c = client(&d);
	write_file(d.config,
		   "[daemon]\nmax_streams_per_client = 16\n"
		   "[stream extra]\nurl = testsrc=size=32x32:rate=5\ninput_format = lavfi\n");
	kill(d.pid, SIGHUP);
	wait_log(&d, "not started: the daemon already runs 64 streams", 10);
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(c, "extra", &info), -ENOENT);
	for (int i = 0; i < 16; i++)
		cr_assert_eq(fb_client_unpublish(pubs[0], prods[0][i]), 0);
	kill(d.pid, SIGHUP); /* now there is room */
	wait_state(c, "extra", FB_STREAM_RUNNING, 10);
	for (int k = 1; k < 4; k++)
		for (int i = 0; i < 16; i++)
			cr_assert_eq(fb_client_unpublish(pubs[k], prods[k][i]), 0);
	for (int k = 0; k < 4; k++)
		fb_client_free(pubs[k]);
	fb_client_free(c);
	stop(&d);
}
