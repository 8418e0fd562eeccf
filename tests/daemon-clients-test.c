/* SPDX-License-Identifier: MIT */
/* Subscribers and framebusctl on a running daemon: a subscriber or the
 * daemon going away, the daemon stopping, a signal during a call. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon-helpers.h"

Test(daemon, killed_subscriber_gives_its_slots_back)
{
	struct daemon d;
	int ready[2];

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(pipe(ready), 0);
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fb_client *mine;
		fb_subscriber *sub;
		const struct fb_frame *f;
		if (fb_client_connect(d.socket, "victim", &mine) < 0 ||
		    fb_client_subscribe(mine, "bars", FB_MODE_QUEUE, 3, &sub) < 0)
			_exit(1);
		for (int i = 0; i < 3; i++)
			if (fb_subscriber_acquire(sub, 2000, &f) < 0)
				_exit(2);
		(void)!write(ready[1], "x", 1);
		pause();
	}
	char byte;
	cr_assert_eq(read(ready[0], &byte, 1), 1, "the victim did not get its frames");
	struct fb_subscription_info *subs;
	size_t n;
	cr_assert_eq(fb_client_get_subscriptions(c, "bars", &subs, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(subs[0].held, 3);
	free(subs);
	kill(pid, SIGKILL);
	th_wait(pid);
	for (int i = 0; i < 100; i++) {
		cr_assert_eq(fb_client_get_subscriptions(c, "bars", &subs, &n), 0);
		free(subs);
		if (n == 0)
			break;
		th_sleep_us(10000);
	}
	cr_assert_eq(n, 0, "the dead subscriber is still there");
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(c, "bars", &info), 0);
	cr_assert_eq(info.subscribers, 0);
	cr_assert(strstr(read_file(d.log), "client victim["), "%s", read_file(d.log));
	fb_client_free(c);
	stop(&d);
}

Test(daemon, framebusctl_status_and_snapshot)
{
	struct daemon d;
	char cmd[512];

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	snprintf(cmd, sizeof(cmd), "%s --socket %s status --json > %s/status.json",
		 FRAMEBUSCTL_PATH, d.socket, d.dir);
	cr_assert_eq(run(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/status.json", d.dir);
	char *json = read_file(cmd);
	cr_assert(strstr(json, "\"name\": \"bars\""), "%s", json);
	cr_assert(strstr(json, "\"state\": \"running\""), "%s", json);
	cr_assert(strstr(json, "\"width\": 320, \"height\": 240, \"format\": \"bgr24\""), "%s",
		  json);
	snprintf(cmd, sizeof(cmd), "%s --socket %s snapshot bars %s/snap.png >/dev/null",
		 FRAMEBUSCTL_PATH, d.socket, d.dir);
	cr_assert_eq(run(cmd), 0);
	snprintf(cmd, sizeof(cmd),
		 "ffprobe -v error -show_entries stream=codec_name,width,height -of csv=p=0 "
		 "%s/snap.png > %s/probe.txt",
		 d.dir, d.dir);
	cr_assert_eq(run(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/probe.txt", d.dir);
	cr_assert_str_eq(read_file(cmd), "png,320,240\n");
	snprintf(cmd, sizeof(cmd), "%s --socket %s snapshot nope /dev/null 2>/dev/null",
		 FRAMEBUSCTL_PATH, d.socket);
	cr_assert_eq(run(cmd), 1);
	fb_client_free(c);
	stop(&d);
}

Test(daemon, frames_stay_readable_when_the_daemon_dies)
{
	struct daemon d;
	fb_subscriber *sub;
	const struct fb_frame *f;

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 1, &sub), 0);
	cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0);
	kill(d.pid, SIGKILL);
	th_wait(d.pid);
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(c, "bars", &info), -ECONNRESET);
	cr_assert_str_eq(fb_strerror(-ECONNRESET), "the connection to framebusd was lost");
	cr_assert_eq(fb_client_process(c), -ECONNRESET);
	const uint8_t *px = f->data[0] + 120 * f->stride[0] + 10 * 3;
	cr_assert(px[0] < 40 && px[1] < 40 && px[2] > 200, "the held frame changed");
	cr_assert_eq(fb_subscriber_release(sub, f), 0);
	fb_subscriber_free(sub);
	fb_client_free(c);
	remove_dir(d.dir);
}

struct seen_event {
	char stream[64];
	uint32_t state;
	char detail[192];
	int count;
};

static void on_event(void *data, const char *stream, uint32_t state, const char *detail)
{
	struct seen_event *e = data;
	snprintf(e->stream, sizeof(e->stream), "%s", stream);
	snprintf(e->detail, sizeof(e->detail), "%s", detail);
	e->state = state;
	e->count++;
}

/* Start a daemon again on d's socket, with config (the last one exited). */
static void respawn(struct daemon *d, const char *config)
{
	write_file(d->config, config);
	d->pid = spawn_daemon(d, NULL);
	for (int i = 0; i < 1000; i++) {
		fb_client *c;
		if (fb_client_connect(d->socket, "probe", &c) == 0) {
			fb_client_free(c);
			return;
		}
		th_sleep_us(10000);
	}
	cr_assert_fail("framebusd did not come back:\n%s", read_file(d->log));
}

/* SIGKILL the daemon and start it again on the same socket with config. */
static void restart(struct daemon *d, const char *config)
{
	kill(d->pid, SIGKILL);
	th_wait(d->pid);
	respawn(d, config);
}

/* Read (and release) what is left of sub until its acquire fails. */
static int read_to_the_end(fb_subscriber *sub)
{
	const struct fb_frame *f;
	int r;
	while ((r = fb_subscriber_acquire(sub, 3000, &f)) == 0)
		fb_subscriber_release(sub, f);
	return r;
}

/* SIGTERM is no end of stream: subscribers are told the daemon is stopping
 * (an event), read what is left, see their producer go (-EOWNERDEAD, not
 * -EPIPE) and subscribe again to the next daemon; the subscribers of a
 * client's stream read its ring on, until its publisher publishes it again
 * to the next daemon. */
Test(daemon, sigterm_is_no_end_of_stream)
{
	struct daemon d;
	struct seen_event seen = {0};
	fb_subscriber *sub, *psub, *again;
	fb_producer *prod;
	const struct fb_frame *f;
	struct fb_frame *w;
	struct fb_ring_params params = th_params(64, 48, FB_FORMAT_GRAY8, 4, FB_POLICY_DROP);

	start(&d, lavfi_config);
	fb_client *c = client(&d), *pc = client(&d);
	fb_client_set_event_callback(c, on_event, &seen);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 1, &sub), 0);
	cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0);
	fb_subscriber_release(sub, f);
	cr_assert_eq(fb_client_publish(pc, "mine", &params, &prod), 0);
	cr_assert_eq(fb_client_subscribe(c, "mine", FB_MODE_QUEUE, 1, &psub), 0);

	kill(d.pid, SIGTERM);
	int r = read_to_the_end(sub);
	cr_assert_eq(r, -EOWNERDEAD, "%s", fb_strerror(r));
	cr_assert_eq(th_wait(d.pid), 0, "%s", read_file(d.log));
	cr_assert_eq(fb_client_process(c), -ECONNRESET);
	cr_assert_geq(seen.count, 1, "no event before the daemon went");
	cr_assert_eq(seen.state, FB_STREAM_REMOVED);
	cr_assert_str_eq(seen.detail, "the daemon is stopping");
	/* The publisher's ring lives on without a daemon. */
	cr_assert_eq(fb_producer_acquire(prod, 0, &w), 0);
	th_fill_frame(w, fb_producer_get_layout(prod), 1);
	cr_assert_eq(fb_producer_publish(prod, w), 0);
	cr_assert_eq(fb_subscriber_acquire(psub, 2000, &f), 0, "the publisher's ring ended");
	cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(psub)));
	fb_subscriber_release(psub, f);

	respawn(&d, lavfi_config);
	for (int i = 0; i < 500 && (r = fb_client_resubscribe(c, sub, &again)) == -EAGAIN; i++)
		th_sleep_us(20000);
	cr_assert_eq(r, 0, "%s", fb_strerror(r));
	cr_assert_eq(fb_subscriber_acquire(again, 3000, &f), 0, "a frame from the next daemon");
	fb_subscriber_release(again, f);
	fb_client_unsubscribe(c, sub);
	fb_client_unsubscribe(c, again);

	/* The publisher publishes again: its old subscriber is cancelled and
	 * follows it. */
	cr_assert_eq(fb_client_reconnect(pc), 0);
	cr_assert_eq(read_to_the_end(psub), -ECANCELED);
	cr_assert_eq(fb_client_resubscribe(c, psub, &again), 0, "%s", fb_client_last_error(c));
	cr_assert_eq(fb_producer_acquire(prod, 0, &w), 0);
	th_fill_frame(w, fb_producer_get_layout(prod), 2);
	cr_assert_eq(fb_producer_publish(prod, w), 0);
	cr_assert_eq(fb_subscriber_acquire(again, 2000, &f), 0);
	/* The same ring: on after the frame the old subscription took. */
	cr_assert_eq(f->seq, 2, "frame %" PRIu64 " again after the restart", f->seq);
	cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(again)));
	fb_subscriber_release(again, f);
	fb_client_unsubscribe(c, psub);
	fb_client_unsubscribe(c, again);
	cr_assert_eq(fb_client_unpublish(pc, prod), 0);
	fb_client_free(pc);
	fb_client_free(c);
	stop(&d);
}

static void on_alarm(int sig)
{
	(void)sig;
}

/* A signal during a blocking call does not desynchronise the client: the
 * call goes on waiting for its own reply, and the next call gets its own. */
Test(daemon, a_signal_during_a_call_keeps_replies_in_step)
{
	struct daemon d;
	struct fb_stream_info info;
	struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART */

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(sigaction(SIGALRM, &sa, NULL), 0);
	kill(d.pid, SIGSTOP);
	pid_t waker = fork();
	if (waker == 0) {
		th_sleep_us(600000);
		kill(d.pid, SIGCONT);
		_exit(0);
	}
	ualarm(200000, 0);
	cr_assert_eq(fb_client_get_stream(c, "bars", &info), 0, "interrupted call");
	cr_assert_str_eq(info.name, "bars");
	th_wait(waker);
	struct fb_stream_info *list;
	size_t n;
	cr_assert_eq(fb_client_list_streams(c, &list, &n), 0, "the next call");
	cr_assert_eq(n, 1);
	free(list);
	fb_subscriber *sub;
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 1, &sub), 0);
	cr_assert_eq(fb_client_unsubscribe(c, sub), 0);
	fb_client_free(c);
	stop(&d);
}

/* fb_client_resubscribe(): a subscription that ended with its daemon comes
 * back on the daemon that replaces it, the same stream and mode; one that
 * has not ended, one whose stream came back with another size and one whose
 * stream ended say so. */
Test(daemon, resubscribe_follows_the_daemon_or_says_why_not)
{
	static const char *const smaller = "[stream bars]\n"
					   "url = testsrc2=size=160x120:rate=50\n"
					   "input_format = lavfi\n"
					   "format = bgr24\n"
					   "slots = 6\n";
	struct daemon d;
	fb_subscriber *sub, *again;
	const struct fb_frame *f;

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_QUEUE, 2, &sub), 0);
	cr_assert_eq(fb_client_resubscribe(c, sub, &again), -EINVAL, "it has not ended");

	kill(d.pid, SIGKILL);
	th_wait(d.pid);
	cr_assert_eq(read_to_the_end(sub), -EOWNERDEAD);
	cr_assert_eq(fb_client_resubscribe(c, sub, &again), -EAGAIN, "no daemon yet");
	restart(&d, lavfi_config);
	int r;
	for (int i = 0; i < 500 && (r = fb_client_resubscribe(c, sub, &again)) == -EAGAIN; i++)
		th_sleep_us(20000);
	cr_assert_eq(r, 0, "%s: %s", fb_strerror(r), fb_client_last_error(c));
	cr_assert_eq(fb_subscriber_get_mode(again), FB_MODE_QUEUE);
	cr_assert_eq(fb_subscriber_acquire(again, 3000, &f), 0, "a frame of the new ring");
	cr_assert_eq(fb_subscriber_release(again, f), 0);
	cr_assert_eq(fb_client_unsubscribe(c, sub), 0, "the old one is just freed");

	/* The stream comes back smaller: not the ring this subscriber knew. */
	restart(&d, smaller);
	cr_assert_eq(read_to_the_end(again), -EOWNERDEAD);
	for (int i = 0; i < 500 && (r = fb_client_resubscribe(c, again, &sub)) == -EAGAIN; i++)
		th_sleep_us(20000);
	cr_assert_eq(r, -ESTALE, "%s", fb_strerror(r));
	cr_assert(strstr(fb_client_last_error(c), "came back as 160x120 bgr24"), "%s",
		  fb_client_last_error(c));
	fb_subscriber_free(again);

	/* A reload that drops the stream ends it: nothing to follow. */
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 1, &sub), 0, "%s",
		     fb_client_last_error(c));
	write_file(d.config, "");
	kill(d.pid, SIGHUP);
	cr_assert_eq(read_to_the_end(sub), -EPIPE);
	cr_assert_eq(fb_client_resubscribe(c, sub, &again), -EPIPE);
	fb_subscriber_free(sub);
	fb_client_free(c);
	stop(&d);
}

/* A client built with an older library (protocol 2, before DETAIL) still
 * gets STATS answered as it knows it: a record per subscription with the
 * read rate over the last second, then the stream. */
Test(daemon, an_older_clients_stats_request_is_still_answered)
{
	struct daemon d;
	start(&d, lavfi_config);
	fb_client *c = client(&d);
	fb_subscriber *sub;
	const struct fb_frame *f;
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 1, &sub), 0);
	for (uint64_t end = fb_now_ns() + 2500000000u; fb_now_ns() < end;)
		if (fb_subscriber_acquire(sub, 200, &f) == 0)
			fb_subscriber_release(sub, f);

	int fd = raw_connect(&d);
	raw_hello(fd, "old-client", 0, NULL);
	struct {
		uint32_t opcode, size, seq, n_fds;
		char name[64];
	} stats = {6 /* STATS */, sizeof(stats), 2, 0, "bars"};
	cr_assert_eq(send(fd, &stats, sizeof(stats), 0), (ssize_t)sizeof(stats));
	struct {
		uint32_t opcode, size, seq, n_fds;
		uint32_t id, client_id, mode, held, fps_out_milli, reserved_;
		uint64_t lag, missed, next_seq;
		char client[64];
	} reply;
	uint32_t opcodes[3] = {0};
	uint32_t fps_milli = 0;
	for (int i = 0; i < 3; i++) {
		ssize_t n = recv(fd, &reply, sizeof(reply), 0);
		cr_assert_gt(n, 16);
		opcodes[i] = reply.opcode;
		if (reply.opcode == 69 /* SUBSCRIBER_STATS */) {
			cr_assert_eq(n, (ssize_t)sizeof(reply));
			fps_milli = reply.fps_out_milli;
		}
		if (reply.opcode == 67 /* STREAM_INFO */)
			break;
	}
	cr_assert_eq(opcodes[0], 64 /* HELLO_REPLY */);
	cr_assert_eq(opcodes[1], 69, "a subscription record, not %u", opcodes[1]);
	cr_assert_eq(opcodes[2], 67, "then the stream, not %u", opcodes[2]);
	/* bars runs at 50 fps and the subscriber kept up. */
	cr_assert(fps_milli > 35000 && fps_milli < 65000, "%u milli-fps", fps_milli);
	close(fd);
	fb_client_unsubscribe(c, sub);
	fb_client_free(c);
	stop(&d);
}

/* /metrics is served from libmicrohttpd's thread while the loop rewrites it
 * every second and a subscriber reads: under TSan (scripts/test) this is the
 * test that the two threads share nothing unguarded. */
/* framebusd's metrics page, from its HTTP endpoint on port; the reply
 * (200) stays valid until the next call. */
static const char *scrape(int port)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_port = htons((uint16_t)port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
	cr_assert_eq(send(fd, req, sizeof(req) - 1, 0), (ssize_t)sizeof(req) - 1);
	static char reply[65536];
	size_t n = 0;
	ssize_t r;
	while (n < sizeof(reply) - 1 && (r = recv(fd, reply + n, sizeof(reply) - 1 - n, 0)) > 0)
		n += (size_t)r;
	reply[n] = '\0';
	close(fd);
	cr_assert(!strncmp(reply, "HTTP/1.0 200", 12) || !strncmp(reply, "HTTP/1.1 200", 12),
		  "%.200s", reply);
	return reply;
}

Test(daemon, metrics_are_served_while_the_bus_runs)
{
	struct daemon d;
	char config[1024];
	int port = free_port();
	snprintf(config, sizeof(config), "[daemon]\nmetrics = 127.0.0.1:%d\n%s", port,
		 lavfi_config);
	start(&d, config);
	fb_client *c = client(&d);
	fb_subscriber *sub;
	const struct fb_frame *f;
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_QUEUE, 1, &sub), 0);
	int served = 0;
	for (uint64_t end = fb_now_ns() + 3000000000u; fb_now_ns() < end;) {
		if (fb_subscriber_acquire(sub, 100, &f) == 0)
			fb_subscriber_release(sub, f);
		const char *reply = scrape(port);
		served += strstr(reply, "framebus_subscriber_frames_total{stream=\"bars\"") != NULL;
	}
	cr_assert_gt(served, 0, "no scrape named the subscription");
	fb_client_unsubscribe(c, sub);
	fb_client_free(c);
	stop(&d);
}

/* Subscribe c to bars made over as spec says; the error, with its text in
 * *why (the client's last error). */
static int derive(fb_client *c, struct fb_derived spec, fb_subscriber **ret, const char **why)
{
	int r = fb_client_subscribe_derived(c, "bars", &spec, FB_MODE_LATEST, 0, ret);
	*why = fb_client_last_error(c);
	return r;
}

/* A stream made on a client's request: from the parent's ring, named after
 * what it is, shared by the clients that ask the same, gone with its last
 * subscriber; bad requests and requests past the limit are refused with the
 * reason. */
Test(daemon, derived_streams_are_made_on_request_shared_and_removed)
{
	struct daemon d;
	char config[1024];
	fb_subscriber *a, *b, *x;
	const struct fb_frame *f;
	struct fb_stream_info info;
	const char *why;

	snprintf(config, sizeof(config), "[daemon]\nmax_derived_per_client = 2\n%s", lavfi_config);
	start(&d, config);
	fb_client *ca = client(&d), *cb = client(&d);
	wait_state(ca, "bars", FB_STREAM_RUNNING, 10);
	th_sleep_us(1200000); /* the parent's rate is known */

	struct fb_derived small = {.width = 160, .height = 120, .format = FB_FORMAT_GRAY8};
	cr_assert_eq(derive(ca, small, &a, &why), 0, "%s", why);
	cr_assert_str_eq(fb_subscriber_get_name(a), "bars~160x120.gray8");
	cr_assert_eq(derive(cb, small, &b, &why), 0, "%s", why);
	cr_assert_str_eq(fb_subscriber_get_name(b), "bars~160x120.gray8");
	cr_assert_eq(fb_client_get_stream(ca, "bars~160x120.gray8", &info), 0);
	cr_assert_eq(info.subscribers, 2, "one stream for both");
	cr_assert(strstr(info.source, "from:bars (on request)"), "%s", info.source);
	cr_assert_eq(fb_subscriber_acquire(a, 2000, &f), 0);
	const struct fb_layout *l = fb_subscriber_get_layout(a);
	cr_assert(l->width == 160 && l->height == 120 && l->format == FB_FORMAT_GRAY8);
	cr_assert_gt(f->source_seq, 0);
	cr_assert_str_eq(f->trace->hops[0].stream, "bars");
	fb_subscriber_release(a, f);

	static const struct {
		struct fb_derived spec;
		int error;
		const char *why;
	} bad[] = {
	    {{.width = 160}, -EINVAL, "width and height must be given together"},
	    {{.width = 161, .height = 120, .format = FB_FORMAT_NV12},
	     -EINVAL,
	     "161x120 is not a valid size for nv12"},
	    {{.format = 99}, -EINVAL, "format 99 is not a pixel format"},
	    {{.format = FB_FORMAT_RESULTS}, -EINVAL, "format 7 is not a pixel format"},
	    {{.fps_milli = 200000}, -EINVAL, "fps 200 is above bars's "},
	    {{.crop = {300, 200, 100, 100}},
	     -EINVAL,
	     "crop 300,200,100,100 does not fit bars's 320x240 bgr24"},
	    {{.reserved_ = {1}}, -EINVAL, "reserved fields are not zero"},
	    {{.crop = {UINT32_MAX, 0, 2, 2}}, -EINVAL, "does not fit bars's"},
	    {{.crop = {0, 0, 0, 8}}, -EINVAL, "crop 0,0,0,8 does not fit"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(derive(ca, bad[i].spec, &x, &why), bad[i].error, "case %zu", i);
		cr_assert(strstr(why, bad[i].why), "case %zu: %s", i, why);
	}
	cr_assert_eq(fb_client_subscribe_derived(ca, "nope", &small, FB_MODE_LATEST, 0, &x),
		     -ENOENT);

	/* Its own size from a crop, a rate: a second stream of ca's; a third
	 * is past its limit, and the one it shares with cb counts once. */
	struct fb_derived part = {.fps_milli = 5000, .crop = {40, 30, 200, 100}};
	cr_assert_eq(derive(ca, part, &x, &why), 0, "%s", why);
	cr_assert_str_eq(fb_subscriber_get_name(x), "bars~200x100.bgr24@5+40,30,200,100");
	fb_subscriber *y;
	struct fb_derived third = {.width = 80, .height = 60};
	cr_assert_eq(derive(ca, third, &y, &why), -EDQUOT);
	cr_assert(strstr(why, "max_derived_per_client"), "%s", why);
	cr_assert_eq(derive(cb, third, &y, &why), 0, "%s", why);

	/* Gone with its last subscriber; the parent runs on. */
	cr_assert_eq(fb_client_unsubscribe(ca, a), 0);
	cr_assert_eq(fb_client_get_stream(ca, "bars~160x120.gray8", &info), 0, "b still reads");
	cr_assert_eq(fb_client_unsubscribe(cb, b), 0);
	cr_assert_eq(fb_client_get_stream(ca, "bars~160x120.gray8", &info), -ENOENT);
	fb_client_free(cb); /* y goes with its client, once the daemon sees it hang up */
	fb_subscriber_free(y);
	int r = 0;
	for (int i = 0; i < 100 && r == 0; i++, th_sleep_us(20000))
		r = fb_client_get_stream(ca, "bars~80x60.bgr24", &info);
	cr_assert_eq(r, -ENOENT);
	cr_assert_eq(fb_client_unsubscribe(ca, x), 0);
	struct fb_stream_info *all;
	size_t n;
	cr_assert_eq(fb_client_list_streams(ca, &all, &n), 0);
	cr_assert_eq(n, 1, "only bars is left");
	cr_assert_eq(all[0].state, FB_STREAM_RUNNING);
	free(all);
	fb_client_free(ca);
	stop(&d);
}

/* A derived stream counts the parent frames it passes over: busy with an
 * earlier one (a costly scale under a fast parent: its parent never waits)
 * or by its fps limit, apart; one that keeps up at its parent's rate skips
 * none.  framebusctl status and the metrics show the counts. */
/* fb_client_inspect() for the stream's counters alone. */
static struct fb_stream_info inspect(fb_client *c, const char *stream)
{
	struct fb_stream_info info;
	struct fb_subscription_info *subs;
	size_t n;
	cr_assert_eq(fb_client_inspect(c, stream, &info, &subs, &n), 0, "%s", stream);
	free(subs);
	return info;
}

Test(daemon, derived_streams_count_the_parent_frames_they_skip)
{
	struct daemon d;
	char config[2048], cmd[512], line[160];
	struct fb_stream_info info;
	int port = free_port();
	snprintf(config, sizeof(config),
		 "[daemon]\nmetrics = 127.0.0.1:%d\n"
		 "[stream quick]\nurl = testsrc2=size=320x240:rate=100\ninput_format = lavfi\n"
		 "width = 320\nheight = 240\n"
		 /* bicubic up to 4K: many times a parent frame's 10 ms */
		 "[stream quick.huge]\nfrom = quick\nwidth = 3840\nheight = 2160\n"
		 "scale = bicubic\nslots = 2\n"
		 "[stream quick.rare]\nfrom = quick\nwidth = 32\nheight = 24\nformat = gray8\n"
		 "fps = 2\n"
		 "[stream calm]\nurl = testsrc2=size=320x240:rate=10\ninput_format = lavfi\n"
		 "width = 320\nheight = 240\n"
		 "[stream calm.small]\nfrom = calm\nwidth = 32\nheight = 24\nformat = gray8\n",
		 port);
	start(&d, config);
	fb_client *c = client(&d);
	wait_state(c, "calm.small", FB_STREAM_RUNNING, 10);
	struct fb_stream_info huge = {0}, rare = {0};
	for (int i = 0; i < 200 && !(huge.parent_skipped_busy && rare.parent_skipped_rate &&
				     rare.published >= 3);
	     i++, th_sleep_us(50000)) {
		huge = inspect(c, "quick.huge");
		rare = inspect(c, "quick.rare");
	}
	cr_assert(huge.flags & FB_STREAM_DERIVED);
	cr_assert_gt(huge.parent_skipped_busy, 0, "a costly scale under a 100 fps parent");
	cr_assert_eq(huge.parent_skipped_rate, 0, "it has no fps limit");
	cr_assert_gt(rare.parent_skipped_rate, rare.published, "2 fps of 100");
	/* Keeping up: 10 frames, none skipped. */
	while ((info = inspect(c, "calm.small")).published < 10)
		th_sleep_us(50000);
	cr_assert(info.flags & FB_STREAM_DERIVED);
	cr_assert_eq(info.parent_skipped_busy, 0);
	cr_assert_eq(info.parent_skipped_rate, 0);
	cr_assert_eq(inspect(c, "quick").flags, 0, "quick decodes: not derived");

	snprintf(cmd, sizeof(cmd), "%s --socket %s status > %s/status.txt", FRAMEBUSCTL_PATH,
		 d.socket, d.dir);
	cr_assert_eq(run(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/status.txt", d.dir);
	char *text = read_file(cmd);
	cr_assert(strstr(text, "parent frames while busy, 0 by its fps limit"), "%s", text);
	snprintf(cmd, sizeof(cmd), "%s --socket %s status --json > %s/status.json",
		 FRAMEBUSCTL_PATH, d.socket, d.dir);
	cr_assert_eq(run(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/status.json", d.dir);
	char *json = read_file(cmd);
	cr_assert(strstr(json, "\"parent_skipped_busy\": 0, \"parent_skipped_rate\": 0, "),
		  "calm.small: %s", json);
	const char *reply = scrape(port);
	snprintf(line, sizeof(line),
		 "framebus_stream_parent_frames_skipped_total{stream=\"calm.small\",reason="
		 "\"busy\"} 0\n");
	cr_assert(strstr(reply, line), "%s", reply);
	cr_assert(strstr(reply, "framebus_stream_parent_frames_skipped_total{stream=\"quick.rare\","
				"reason=\"rate\"} "),
		  "%s", reply);
	cr_assert_null(
	    strstr(reply, "framebus_stream_parent_frames_skipped_total{stream=\"quick\""),
	    "only derived streams have it");
	fb_client_free(c);
	stop(&d);
}
