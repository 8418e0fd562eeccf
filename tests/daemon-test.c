/* SPDX-License-Identifier: MIT */
/* framebusd end to end: a real daemon on a temporary socket, real sources
 * (lavfi, H.264 files made by ffmpeg, a TCP server on 127.0.0.1), real
 * clients, and clients that misbehave. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <grp.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test-helpers.h"

struct daemon {
	pid_t pid;
	char dir[64];
	char socket[128];
	char config[128];
	char log[128];
};

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
}

static char *read_file(const char *path)
{
	static char buf[65536];
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	buf[n] = '\0';
	if (f)
		fclose(f);
	return buf;
}

static void make_dir(struct daemon *d)
{
	strcpy(d->dir, "/tmp/framebus-test-XXXXXX");
	cr_assert_not_null(mkdtemp(d->dir));
	snprintf(d->socket, sizeof(d->socket), "%s/framebus.sock", d->dir);
	snprintf(d->config, sizeof(d->config), "%s/framebusd.conf", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/framebusd.log", d->dir);
}

/* Exec framebusd with args (NULL-terminated), under
 * $FRAMEBUS_TEST_DAEMON_WRAPPER if that is set: a command and its options,
 * split at spaces (scripts/test runs the daemon under valgrind this way). */
static void exec_daemon(const char *const *args)
{
	const char *wrapper = getenv("FRAMEBUS_TEST_DAEMON_WRAPPER");
	bool wrapped = wrapper && *wrapper;
	const char *argv[16];
	int n = 0;

	if (wrapped) {
		argv[n++] = "sh";
		argv[n++] = "-c";
		argv[n++] = "exec $FRAMEBUS_TEST_DAEMON_WRAPPER \"$0\" \"$@\"";
		argv[n++] = FRAMEBUSD_PATH; /* $0 */
	} else {
		argv[n++] = "framebusd";
	}
	while (*args && n < 15)
		argv[n++] = *args++;
	argv[n] = NULL;
	execv(wrapped ? "/bin/sh" : FRAMEBUSD_PATH, (char **)argv);
}

static pid_t spawn_daemon(struct daemon *d, const char *notify_socket)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int log = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
		dup2(log, STDOUT_FILENO);
		dup2(log, STDERR_FILENO);
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no daemon behind */
		if (notify_socket)
			setenv("NOTIFY_SOCKET", notify_socket, 1);
		else
			unsetenv("NOTIFY_SOCKET");
		if (notify_socket)
			setenv("WATCHDOG_USEC", "200000", 1);
		exec_daemon((const char *[]){"--config", d->config, "--socket", d->socket,
					     "--verbose", NULL});
		_exit(127);
	}
	return pid;
}

/* Start a daemon on config and wait until it accepts clients. */
static void start(struct daemon *d, const char *config)
{
	/* Under a wrapper (valgrind) the daemon starts far more slowly. */
	int seconds = getenv("FRAMEBUS_TEST_DAEMON_WRAPPER") ? 60 : 5;

	make_dir(d);
	write_file(d->config, config);
	d->pid = spawn_daemon(d, NULL);
	for (int i = 0; i < seconds * 100; i++) {
		fb_client *c;
		if (fb_client_connect(d->socket, "probe", &c) == 0) {
			fb_client_free(c);
			return;
		}
		int status;
		cr_assert_eq(waitpid(d->pid, &status, WNOHANG), 0, "framebusd exited:\n%s",
			     read_file(d->log));
		th_sleep_us(10000);
	}
	cr_assert_fail("framebusd did not listen within %d s:\n%s", seconds, read_file(d->log));
}

static int run(const char *cmd)
{
	int r = system(cmd);
	return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

/* Remove a directory the test made, and everything in it. */
static void remove_dir(const char *dir)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(run(cmd), 0, "cannot remove %s", dir);
}

static void stop(struct daemon *d)
{
	kill(d->pid, SIGTERM);
	cr_assert_eq(th_wait(d->pid), 0, "framebusd did not stop cleanly:\n%s", read_file(d->log));
	cr_assert_eq(access(d->socket, F_OK), -1, "the socket was left behind");
	remove_dir(d->dir);
}

static fb_client *client(struct daemon *d)
{
	fb_client *c;
	int r = fb_client_connect(d->socket, "test", &c);
	cr_assert_eq(r, 0, "connect: %s", fb_strerror(r));
	return c;
}

/* Wait until stream reaches state (or fail after seconds). */
static struct fb_stream_info wait_state(fb_client *c, const char *stream, uint32_t state,
					double seconds)
{
	struct fb_stream_info info = {0};
	uint64_t until = th_now_ns() + (uint64_t)(seconds * 1e9);
	while (th_now_ns() < until) {
		int r = fb_client_get_stream(c, stream, &info);
		cr_assert(r == 0 || r == -ENOENT, "%s: %s", stream, fb_strerror(r));
		if (r == 0 && info.state == state)
			return info;
		th_sleep_us(20000);
	}
	cr_assert_fail("stream %s stayed %s (%s), never %s", stream,
		       fb_stream_state_name(info.state), info.detail, fb_stream_state_name(state));
	return info;
}

static int daemon_fd_count(const struct daemon *d)
{
	char path[64];
	int n = 0;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->pid);
	DIR *dir = opendir(path);
	if (!dir)
		return -1;
	while (readdir(dir))
		n++;
	closedir(dir);
	return n;
}

/* Wait until the daemon has n descriptors open (it closes what a client left
 * once it sees the hang-up), or fail after seconds saying what. */
static void wait_fd_count(const struct daemon *d, int n, double seconds, const char *what)
{
	uint64_t until = th_now_ns() + (uint64_t)(seconds * 1e9);
	int now;
	while ((now = daemon_fd_count(d)) != n && th_now_ns() < until)
		th_sleep_us(20000);
	cr_assert_eq(now, n, "%s: %d descriptors open, %d expected", what, now, n);
}

/* Wait until the daemon's log says text, or fail after seconds. */
static void wait_log(const struct daemon *d, const char *text, double seconds)
{
	uint64_t until = th_now_ns() + (uint64_t)(seconds * 1e9);
	while (!strstr(read_file(d->log), text) && th_now_ns() < until)
		th_sleep_us(20000);
	cr_assert(strstr(read_file(d->log), text), "the log never said '%s':\n%s", text,
		  read_file(d->log));
}

static const char *lavfi_config = "[stream bars]\n"
				  "url = testsrc2=size=320x240:rate=50\n"
				  "input_format = lavfi\n"
				  "width = 320\n"
				  "height = 240\n"
				  "format = bgr24\n"
				  "slots = 6\n";

TestSuite(daemon, .timeout = 60);

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
	uint64_t first_request = th_now_ns();
	for (int i = 0; i < 40 || th_now_ns() - first_request < 600000000u; i++) {
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
	fb_subscriber_free(sub);
	fb_client_free(c);
	stop(&d);
	remove_dir(files);
}

Test(daemon, a_source_that_changes_size_is_scaled_and_says_so)
{
	struct daemon d;
	char cmd[1024], config[1024], files[] = "/tmp/framebus-files-XXXXXX";
	fb_subscriber *sub;

	cr_assert_not_null(mkdtemp(files));
	snprintf(
	    cmd, sizeof(cmd),
	    "cd %s && ffmpeg -loglevel error -y -f lavfi -i color=c=red:size=160x120:rate=25 "
	    "-frames:v 25 -c:v mpeg2video -f mpegts a.ts && ffmpeg -loglevel error -y -f lavfi "
	    "-i color=c=blue:size=320x240:rate=25 -frames:v 25 -c:v mpeg2video -f mpegts b.ts "
	    "&& cat a.ts b.ts > resize.ts",
	    files);
	cr_assert_eq(run(cmd), 0, "ffmpeg could not make the test file");
	snprintf(config, sizeof(config),
		 "%s\n[stream resize]\nurl = %s/resize.ts\npacing = native\npolicy = block\n",
		 lavfi_config, files);
	start(&d, config);
	fb_client *c = client(&d);
	wait_state(c, "resize", FB_STREAM_RUNNING, 10);
	cr_assert_eq(fb_client_subscribe(c, "resize", FB_MODE_QUEUE, 1, &sub), 0, "%s",
		     fb_client_last_error(c));
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	cr_assert(l->width == 160 && l->height == 120, "ring %ux%u", l->width, l->height);
	const struct fb_frame *f;
	int r, red = 0, blue = 0;
	bool marked = false;
	while ((r = fb_subscriber_acquire(sub, 5000, &f)) == 0) {
		const uint8_t *px = f->data[0] + 60 * f->stride[0] + 80 * 3;
		if (px[2] > 200 && px[0] < 40)
			red++;
		else if (px[0] > 200 && px[2] < 40) {
			marked |= blue == 0 && (f->flags & FB_FRAME_DISCONTINUITY);
			blue++;
		}
		fb_subscriber_release(sub, f);
	}
	cr_assert_eq(r, -EPIPE, "the end of the file: %s", fb_strerror(r));
	cr_assert(red >= 10 && blue >= 20, "%d red and %d blue frames", red, blue);
	cr_assert(marked, "the first frame after the change is not marked a discontinuity");
	cr_assert(strstr(read_file(d.log), "changed size from 160x120 to 320x240"), "%s",
		  read_file(d.log));
	wait_state(c, "bars", FB_STREAM_RUNNING, 5);
	fb_subscriber_free(sub);
	fb_client_free(c);
	stop(&d);
	remove_dir(files);
}

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
	     "framebusd.conf:3: [stream a] format: 'rgb48' is not one of gray8, bgr24"},
	    {"[stream a]\nurl = x\npolicy = wait\n",
	     "framebusd.conf:3: [stream a] policy: 'wait' is not drop or block"},
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

static int free_port(void)
{
	return 20000 + (int)(getpid() % 20000);
}

Test(daemon, unreachable_source_retries_then_recovers)
{
	struct daemon d;
	char config[512], cmd[512];
	int port = free_port();

	snprintf(config, sizeof(config),
		 "%s\n[stream net]\nurl = tcp://127.0.0.1:%d\ninput_format = mpegts\n"
		 "retry_min = 200ms\nretry_max = 1s\nstall_timeout = 2s\n",
		 lavfi_config, port);
	start(&d, config);
	fb_client *c = client(&d);
	struct fb_stream_info info = wait_state(c, "net", FB_STREAM_RETRYING, 10);
	cr_assert(strstr(info.detail, "refused"), "detail: %s", info.detail);
	cr_assert_eq(info.width, 0, "no geometry before the first frame");
	/* Every other stream is untouched. */
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);

	snprintf(cmd, sizeof(cmd),
		 "ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=160x120:rate=25 -t 20 "
		 "-c:v mpeg2video -f mpegts 'tcp://127.0.0.1:%d?listen=1' >/dev/null 2>&1 &",
		 port);
	cr_assert_eq(run(cmd), 0);
	info = wait_state(c, "net", FB_STREAM_RUNNING, 15);
	cr_assert_eq(info.width, 160);
	fb_subscriber *sub;
	const struct fb_frame *f;
	cr_assert_eq(fb_client_subscribe(c, "net", FB_MODE_LATEST, 1, &sub), 0);
	cr_assert_eq(fb_subscriber_acquire(sub, 3000, &f), 0);
	fb_subscriber_release(sub, f);
	fb_subscriber_free(sub);
	fb_client_free(c);
	stop(&d); /* the daemon stops the network read at once */
	snprintf(cmd, sizeof(cmd), "pkill -f 'tcp://127.0.0.1:%d' || true", port);
	run(cmd);
}

/* Writes SIZE pseudo-random bytes to DIR/NAME, the same bytes every run:
 * some random byte strings happen to probe as a (broken) container, so a
 * fresh /dev/urandom draw would make the failure the test sees vary. */
static void write_garbage(const char *dir, const char *name, size_t size)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	uint64_t x = 0x9e3779b97f4a7c15u;
	for (size_t i = 0; i < size; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		fputc((int)(x >> 56), f);
	}
	cr_assert_eq(fclose(f), 0);
}

Test(daemon, truncated_and_garbage_files_retry_while_others_run)
{
	struct daemon d;
	char cmd[512], config[1024];

	char files[] = "/tmp/framebus-files-XXXXXX";
	cr_assert_not_null(mkdtemp(files));
	snprintf(cmd, sizeof(cmd),
		 "ffmpeg -loglevel error -y -f lavfi -i testsrc=size=160x120:rate=25 -frames:v 50 "
		 "-c:v libx264 %s/whole.mp4 && head -c $(($(stat -c %%s %s/whole.mp4) / 2)) "
		 "%s/whole.mp4 > %s/truncated.mp4",
		 files, files, files, files);
	cr_assert_eq(run(cmd), 0);
	write_garbage(files, "garbage.mp4", 100000);
	snprintf(config, sizeof(config),
		 "%s\n[stream truncated]\nurl = %s/truncated.mp4\nretry_min = 5s\n"
		 "[stream garbage]\nurl = %s/garbage.mp4\nretry_min = 5s\n",
		 lavfi_config, files, files);
	start(&d, config);
	fb_client *c = client(&d);
	struct fb_stream_info t = wait_state(c, "truncated", FB_STREAM_RETRYING, 10);
	cr_assert_neq(t.detail[0], '\0');
	struct fb_stream_info g = wait_state(c, "garbage", FB_STREAM_RETRYING, 10);
	cr_assert(strstr(g.detail, "garbage.mp4"), "detail: %s", g.detail);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert(strstr(read_file(d.log), "stream garbage:"), "%s", read_file(d.log));
	fb_client_free(c);
	stop(&d);
	remove_dir(files);
}

static int raw_connect(const struct daemon *d)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	strcpy(addr.sun_path, d->socket);
	cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	return fd;
}

/* Whether the daemon hung up on fd (after maybe sending an error). */
static bool hung_up(int fd)
{
	char buf[4096];
	for (int i = 0; i < 100; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0 && errno == EAGAIN)
			th_sleep_us(10000);
	}
	return false;
}

/* Say hello on a raw connection, as the library would. */
static void raw_hello(int fd, const char *name, uint32_t n_fds_claimed, const int *fds)
{
	struct {
		uint32_t opcode, size, seq, n_fds;
		uint32_t version, client_id;
		char name[64];
	} hello = {1, sizeof(hello), 1, n_fds_claimed, 2, 0, ""};
	snprintf(hello.name, sizeof(hello.name), "%s", name);
	cr_assert_eq(th_sendmsg_fds(fd, &hello, sizeof(hello), fds, n_fds_claimed),
		     (ssize_t)sizeof(hello));
}

/* An empty message carrying two descriptors (it reads as a hang-up). */
static void raw_empty_with_fds(int fd)
{
	int fds[2] = {open("/dev/null", O_RDONLY), open("/dev/null", O_RDONLY)};
	cr_assert_eq(th_sendmsg_fds(fd, "", 0, fds, 2), 0);
	close(fds[0]);
	close(fds[1]);
}

Test(daemon, protocol_abuse_hurts_only_the_abuser)
{
	struct daemon d;
	start(&d, lavfi_config);
	fb_client *good = client(&d);
	fb_subscriber *sub;
	const struct fb_frame *f;
	cr_assert_eq(fb_client_subscribe(good, "bars", FB_MODE_LATEST, 1, &sub), 0);
	th_sleep_us(200000);
	int fds_before = daemon_fd_count(&d);

	/* Random bytes. */
	int fd = raw_connect(&d);
	char junk[300];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(rand() & 0xff);
	send(fd, junk, sizeof(junk), 0);
	cr_assert(hung_up(fd), "random bytes");
	close(fd);

	/* Oversized, and shorter than a header. */
	static char big[16384];
	fd = raw_connect(&d);
	send(fd, big, sizeof(big), 0);
	cr_assert(hung_up(fd), "oversized message");
	close(fd);
	fd = raw_connect(&d);
	send(fd, junk, 7, 0);
	cr_assert(hung_up(fd), "truncated header");
	close(fd);

	/* A well-formed hello carrying descriptors it should not. */
	fd = raw_connect(&d);
	int extra[2] = {open("/dev/null", O_RDONLY), open("/dev/null", O_RDONLY)};
	raw_hello(fd, "fds", 2, extra);
	close(extra[0]);
	close(extra[1]);
	cr_assert(hung_up(fd), "unexpected descriptors");
	close(fd);

	/* Empty messages carrying descriptors (found by fuzz-client). */
	for (int i = 0; i < 20; i++) {
		fd = raw_connect(&d);
		raw_empty_with_fds(fd);
		cr_assert(hung_up(fd), "an empty message");
		close(fd);
	}

	/* A request before hello. */
	fd = raw_connect(&d);
	uint32_t list[4] = {2, 16, 1, 0};
	send(fd, list, sizeof(list), 0);
	cr_assert(hung_up(fd), "no hello");
	close(fd);

	/* A thousand connections at once, over the client limit. */
	int many[1000];
	for (int i = 0; i < 1000; i++)
		many[i] = raw_connect(&d);
	th_sleep_us(300000);
	for (int i = 0; i < 1000; i++)
		close(many[i]);

	/* The good client was served throughout, and still is. */
	cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0);
	fb_subscriber_release(sub, f);
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(good, "bars", &info), 0);
	cr_assert_eq(info.state, FB_STREAM_RUNNING);
	wait_fd_count(&d, fds_before, 10, "the daemon leaked descriptors");
	cr_assert(strstr(read_file(d.log), "malformed"), "nothing logged about the abuse");
	fb_subscriber_free(sub);
	fb_client_free(good);
	stop(&d);
}

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

Test(daemon, systemd_notifications)
{
	struct daemon d;
	char notify_path[128];
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	make_dir(&d);
	write_file(d.config, lavfi_config);
	snprintf(notify_path, sizeof(notify_path), "%s/notify", d.dir);
	int ns = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	strcpy(addr.sun_path, notify_path);
	cr_assert_eq(bind(ns, (struct sockaddr *)&addr, sizeof(addr)), 0);
	d.pid = spawn_daemon(&d, notify_path);

	/* Collect datagrams for a while, then signal, then collect again. */
	char all[65536] = "";
	size_t len = 0;
	bool reloaded = false;
	uint64_t until = th_now_ns() + 3000000000u;
	while (th_now_ns() < until) {
		char buf[1024];
		struct timeval tv = {.tv_usec = 100000};
		setsockopt(ns, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		ssize_t n = recv(ns, buf, sizeof(buf) - 1, 0);
		if (n > 0 && len + (size_t)n + 2 < sizeof(all)) {
			memcpy(all + len, buf, (size_t)n);
			len += (size_t)n;
			all[len++] = '\n';
			all[len] = '\0';
		}
		if (!reloaded && strstr(all, "READY=1") && th_now_ns() > until - 1500000000u) {
			kill(d.pid, SIGHUP);
			reloaded = true;
		}
	}
	kill(d.pid, SIGTERM);
	for (int i = 0; i < 20; i++) {
		char buf[1024];
		ssize_t n = recv(ns, buf, sizeof(buf) - 1, 0);
		if (n > 0 && len + (size_t)n + 2 < sizeof(all)) {
			memcpy(all + len, buf, (size_t)n);
			len += (size_t)n;
			all[len++] = '\n';
			all[len] = '\0';
		}
	}
	cr_assert_eq(th_wait(d.pid), 0);
	cr_assert(strstr(all, "READY=1"), "%s", all);
	cr_assert(strstr(all, "STATUS=0 clients; bars running"), "%s", all);
	cr_assert(strstr(all, "WATCHDOG=1"), "%s", all);
	char *reload = strstr(all, "RELOADING=1");
	cr_assert(reload, "%s", all);
	cr_assert(strstr(reload, "READY=1"), "no READY=1 after the reload: %s", all);
	cr_assert(strstr(all, "STOPPING=1"), "%s", all);
	close(ns);
	remove_dir(d.dir);
}

/* A client publishes a stream; another subscribes and gets every frame with
 * its side data; the publisher's death ends the subscription cleanly and
 * frees the name. */
Test(daemon, client_published_stream_reaches_subscribers)
{
	struct daemon d;
	struct fb_ring_params params = th_params(64, 48, FB_FORMAT_GRAY8, 4, FB_POLICY_DROP);
	fb_producer *prod;
	fb_subscriber *sub;
	const struct fb_frame *f;

	start(&d, "[daemon]\nmax_ring_memory_per_client = 2M\n");
	fb_client *pc = client(&d);
	fb_client *sc = client(&d);
	cr_assert_eq(fb_client_publish(pc, "processed", &params, &prod), 0, "%s",
		     fb_client_last_error(pc));
	fb_producer *dup;
	cr_assert_eq(fb_client_publish(sc, "processed", &params, &dup), -EEXIST);
	struct fb_ring_params big = th_params(640, 480, FB_FORMAT_BGR24, 4, FB_POLICY_DROP);
	cr_assert_eq(fb_client_publish(sc, "big", &big, &dup), -EDQUOT);
	cr_assert(strstr(fb_client_last_error(sc), "ring memory"), "%s", fb_client_last_error(sc));

	cr_assert_eq(fb_client_subscribe(sc, "processed", FB_MODE_QUEUE, 1, &sub), 0, "%s",
		     fb_client_last_error(sc));
	for (uint64_t i = 1; i <= 20; i++) {
		struct fb_frame *w;
		cr_assert_eq(fb_producer_acquire(prod, 0, &w), 0);
		th_fill_frame(w, fb_producer_get_layout(prod), i);
		cr_assert_eq(fb_producer_publish(prod, w), 0);
		cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "frame %lu",
			     (unsigned long)i);
		cr_assert_eq(f->seq, i);
		cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(sub)), "frame %lu",
			  (unsigned long)i);
		cr_assert_eq(fb_subscriber_release(sub, f), 0);
	}
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(sc, "processed", &info), 0);
	cr_assert(!strncmp(info.source, "client:test[", 12), "source %s", info.source);
	cr_assert_eq(info.published, 20);
	cr_assert_eq(info.subscribers, 1);
	struct fb_subscription_info *subs;
	size_t n;
	cr_assert_eq(fb_client_get_subscriptions(sc, "processed", &subs, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(subs[0].lag, 0);
	free(subs);

	/* A subscriber that unsubscribes gives back what it held: the
	 * producer (4 slots) keeps going. */
	cr_assert_eq(fb_subscriber_acquire(sub, 0, &f), -EAGAIN);
	cr_assert_eq(fb_client_unpublish(pc, prod), 0);
	cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), -EPIPE);
	fb_subscriber_free(sub);
	cr_assert_eq(fb_client_get_stream(sc, "processed", &info), -ENOENT);
	fb_client_free(pc);
	fb_client_free(sc);
	stop(&d);
}

/* A publisher process that publishes stream name forever, a frame every
 * delay_us (0: flat out); returns once the stream exists. */
static pid_t spawn_publisher(const struct daemon *d, const char *name, struct fb_ring_params params,
			     uint64_t delay_us)
{
	int ready[2];
	char byte;

	cr_assert_eq(pipe(ready), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fb_client *pc;
		fb_producer *prod;
		if (fb_client_connect(d->socket, "publisher", &pc) < 0 ||
		    fb_client_publish(pc, name, &params, &prod) < 0)
			_exit(1);
		(void)!write(ready[1], "x", 1);
		for (uint64_t seq = 1;; seq++) {
			struct fb_frame *w;
			if (fb_producer_acquire(prod, 0, &w) == 0) {
				th_fill_frame(w, fb_producer_get_layout(prod), seq);
				fb_producer_publish(prod, w);
			}
			if (delay_us)
				th_sleep_us(delay_us);
		}
	}
	close(ready[1]);
	cr_assert_eq(read(ready[0], &byte, 1), 1, "the publisher could not publish %s", name);
	close(ready[0]);
	return pid;
}

Test(daemon, killed_publisher_ends_its_stream)
{
	struct daemon d;

	start(&d, "");
	pid_t pid = spawn_publisher(&d, "proc",
				    th_params(64, 48, FB_FORMAT_BGR24, 4, FB_POLICY_DROP), 1000);
	fb_client *sc = client(&d);
	fb_subscriber *sub;
	const struct fb_frame *f;
	cr_assert_eq(fb_client_subscribe(sc, "proc", FB_MODE_QUEUE, 1, &sub), 0, "%s",
		     fb_client_last_error(sc));
	for (int i = 0; i < 20; i++) {
		cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "frame %d", i);
		cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(sub)));
		fb_subscriber_release(sub, f);
	}
	kill(pid, SIGKILL);
	th_wait(pid);
	int r;
	while ((r = fb_subscriber_acquire(sub, 3000, &f)) == 0) {
		cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(sub)));
		fb_subscriber_release(sub, f);
	}
	cr_assert_eq(r, -EPIPE, "%s", fb_strerror(r));
	fb_subscriber_free(sub);
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(sc, "proc", &info), -ENOENT);
	/* The name is free again. */
	struct fb_ring_params params = th_params(64, 48, FB_FORMAT_BGR24, 4, FB_POLICY_DROP);
	fb_producer *again;
	cr_assert_eq(fb_client_publish(sc, "proc", &params, &again), 0);
	cr_assert_eq(fb_client_unpublish(sc, again), 0);
	cr_assert(strstr(read_file(d.log), "its publisher went away"), "%s", read_file(d.log));
	fb_client_free(sc);
	stop(&d);
}

/* The registration race: a publisher flat out into a 3-slot ring while a
 * subscriber comes and goes; every frame any subscription gets is whole. */
Test(daemon, subscribers_joining_a_flat_out_publisher_never_see_torn_frames)
{
	struct daemon d;

	start(&d, "");
	pid_t pid =
	    spawn_publisher(&d, "fast", th_params(256, 64, FB_FORMAT_BGRA, 3, FB_POLICY_DROP), 0);
	fb_client *sc = client(&d);
	uint64_t frames = 0;
	for (int round = 0; round < 150; round++) {
		fb_subscriber *sub;
		const struct fb_frame *f;
		uint32_t mode = round % 2 ? FB_MODE_QUEUE : FB_MODE_LATEST;
		cr_assert_eq(fb_client_subscribe(sc, "fast", mode, 1, &sub), 0, "round %d: %s",
			     round, fb_client_last_error(sc));
		for (int i = 0; i < 20; i++) {
			cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "round %d", round);
			cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(sub)),
				  "round %d: frame %lu torn", round, (unsigned long)f->seq);
			fb_subscriber_release(sub, f);
			frames++;
		}
		cr_assert_eq(fb_client_unsubscribe(sc, sub), 0);
	}
	kill(pid, SIGKILL);
	th_wait(pid);
	cr_assert_eq(frames, 3000);
	fb_client_free(sc);
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

/* systemd socket activation: systemd-socket-activate listens, starts the
 * daemon on the first connection and passes it the listening socket. */
Test(daemon, socket_activation)
{
	struct daemon d;
	make_dir(&d);
	write_file(d.config, lavfi_config);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int log = open(d.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(log, STDOUT_FILENO);
		dup2(log, STDERR_FILENO);
		execlp("systemd-socket-activate", "systemd-socket-activate", "--seqpacket", "-l",
		       d.socket, FRAMEBUSD_PATH, "--config", d.config, (char *)NULL);
		_exit(127);
	}
	fb_client *c = NULL;
	for (int i = 0; i < 500 && fb_client_connect(d.socket, "activated", &c) < 0; i++)
		th_sleep_us(10000);
	cr_assert_not_null(c, "no daemon behind the activation socket:\n%s", read_file(d.log));
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert(strstr(read_file(d.log), "listening on the socket systemd passed"), "%s",
		  read_file(d.log));
	fb_client_free(c);
	kill(pid, SIGTERM);
	cr_assert_eq(th_wait(pid), 0, "%s", read_file(d.log));
	remove_dir(d.dir);
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
	stop(&d);
	snprintf(cmd, sizeof(cmd),
		 "pkill -f '127.0.0.1:%d' ; pkill -f '127.0.0.1:%d'; "
		 "pkill -f '127.0.0.1:%d'; true",
		 port, port + 1, port + 2);
	run(cmd);
}

/* A client that floods requests and never reads the replies: the daemon stops
 * reading it once a few replies wait unread, instead of piling up replies
 * (and the descriptors SUBSCRIBED replies carry), and serves everyone else. */
Test(daemon, a_client_that_never_reads_is_paused)
{
	struct daemon d;
	start(&d, lavfi_config);
	fb_client *good = client(&d);
	wait_state(good, "bars", FB_STREAM_RUNNING, 10);
	int baseline = daemon_fd_count(&d);

	int fd = raw_connect(&d);
	raw_hello(fd, "hog", 0, NULL);
	struct {
		uint32_t opcode, size, seq, n_fds;
		char name[64];
	} info = {3, sizeof(info), 2, 0, "bars"};
	for (int i = 0; i < 1000; i++)
		if (send(fd, &info, sizeof(info), MSG_DONTWAIT) != (ssize_t)sizeof(info))
			break;
	th_sleep_us(500000);

	fb_subscriber *s;
	cr_assert_eq(fb_client_subscribe(good, "bars", FB_MODE_LATEST, 1, &s), 0,
		     "the others are still served: %s", fb_client_last_error(good));
	cr_assert_eq(fb_client_unsubscribe(good, s), 0);

	int replies = 0;
	char buf[4096];
	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		replies++;
	cr_assert_gt(replies, 1, "the hog was not served at all");
	cr_assert_lt(replies, 64, "%d replies piled up unread", replies);
	close(fd);
	wait_fd_count(&d, baseline, 10, "descriptors left after the hog went");
	cr_assert(strstr(read_file(d.log), "client hog["), "%s", read_file(d.log));
	fb_client_free(good);
	stop(&d);
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

/* SIGTERM: subscribers are told (an event, then -EPIPE once they read
 * what is left) and the daemon exits cleanly. */
Test(daemon, sigterm_tells_subscribers)
{
	struct daemon d;
	struct seen_event seen = {0};
	fb_subscriber *sub;
	const struct fb_frame *f;

	start(&d, lavfi_config);
	fb_client *c = client(&d);
	fb_client_set_event_callback(c, on_event, &seen);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 1, &sub), 0);
	cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0);
	fb_subscriber_release(sub, f);
	kill(d.pid, SIGTERM);
	int r;
	while ((r = fb_subscriber_acquire(sub, 5000, &f)) == 0)
		fb_subscriber_release(sub, f);
	cr_assert_eq(r, -EPIPE, "%s", fb_strerror(r));
	cr_assert_eq(th_wait(d.pid), 0, "%s", read_file(d.log));
	cr_assert_eq(fb_client_process(c), -ECONNRESET);
	cr_assert_geq(seen.count, 1, "no event before the daemon went");
	cr_assert_str_eq(seen.stream, "bars");
	cr_assert_eq(seen.state, FB_STREAM_REMOVED);
	cr_assert_str_eq(seen.detail, "the daemon is stopping");
	fb_subscriber_free(sub);
	fb_client_free(c);
	remove_dir(d.dir);
}

/* One client may take at most 16 of a stream's subscriber places. */
Test(daemon, one_client_cannot_take_every_place)
{
	struct daemon d;
	fb_subscriber *subs[17];

	start(&d, lavfi_config);
	fb_client *hog = client(&d), *other = client(&d);
	wait_state(hog, "bars", FB_STREAM_RUNNING, 10);
	for (int i = 0; i < 16; i++)
		cr_assert_eq(fb_client_subscribe(hog, "bars", FB_MODE_LATEST, 1, &subs[i]), 0, "%d",
			     i);
	cr_assert_eq(fb_client_subscribe(hog, "bars", FB_MODE_LATEST, 1, &subs[16]), -EUSERS);
	cr_assert(strstr(fb_client_last_error(hog), "16 subscriptions to 'bars'"), "%s",
		  fb_client_last_error(hog));
	cr_assert_eq(fb_client_subscribe(other, "bars", FB_MODE_LATEST, 1, &subs[16]), 0);
	fb_subscriber_free(subs[16]);
	for (int i = 0; i < 16; i++)
		fb_subscriber_free(subs[i]);
	fb_client_free(hog);
	fb_client_free(other);
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

/* A source waiting for a slot (block policy, a queue subscriber that
 * pauses longer than stall_timeout) is not a stalled input. */
Test(daemon, waiting_for_a_slow_subscriber_is_not_a_stall)
{
	struct daemon d;
	char cmd[512], config[512], files[] = "/tmp/framebus-files-XXXXXX";
	fb_subscriber *sub;
	const struct fb_frame *f;

	/* The file appears only once the subscriber is there (the stream
	 * retries meanwhile; its ring exists from the configured size), so
	 * the block policy holds the source back from the first frame. */
	cr_assert_not_null(mkdtemp(files));
	snprintf(
	    config, sizeof(config),
	    "[stream f]\nurl = %s/f.nut\nwidth = 64\nheight = 48\npolicy = block\n"
	    "pacing = fast\nstall_timeout = 1s\nslots = 3\nretry_min = 100ms\nretry_max = 200ms\n",
	    files);
	start(&d, config);
	fb_client *c = client(&d);
	cr_assert_eq(fb_client_subscribe(c, "f", FB_MODE_QUEUE, 1, &sub), 0);
	snprintf(cmd, sizeof(cmd),
		 "ffmpeg -loglevel error -y -f lavfi -i testsrc=size=320x240:rate=25 -frames:v 150 "
		 "-c:v rawvideo -pix_fmt yuv420p %s/tmp.nut && mv %s/tmp.nut %s/f.nut",
		 files, files, files);
	cr_assert_eq(run(cmd), 0);
	uint64_t last = 0;
	int64_t last_pts = -1;
	/* Past the packets FFmpeg buffered while probing: the pause must come
	 * while the source really reads. */
	for (int i = 0; i < 90; i++) {
		cr_assert_eq(fb_subscriber_acquire(sub, 3000, &f), 0);
		cr_assert(last == 0 || f->seq == last + 1);
		cr_assert_gt(f->pts, last_pts, "the file started over: the source was reopened");
		last = f->seq;
		last_pts = f->pts;
		fb_subscriber_release(sub, f);
		if (i == 70)
			th_sleep_us(2500000); /* longer than stall_timeout */
	}
	/* Retrying before the file existed is expected; not after it opened. */
	const char *opened = strstr(read_file(d.log), "opened");
	cr_assert_not_null(opened, "%s", read_file(d.log));
	cr_assert_null(strstr(opened, "retrying"), "%s", read_file(d.log));
	fb_subscriber_free(sub);
	fb_client_free(c);
	stop(&d);
	remove_dir(files);
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

struct reentry {
	bool in_acquire;
	int calls;
	int calls_inside;
};

static void note_event(void *data, const char *stream, uint32_t state, const char *detail)
{
	struct reentry *r = data;
	(void)stream, (void)state, (void)detail;
	r->calls++;
	r->calls_inside += r->in_acquire;
}

/* Events a publisher's library reads inside fb_producer_acquire (where it
 * takes in new subscribers, the producer locked) are delivered later, from
 * fb_client_process, never from inside the acquire. */
Test(daemon, events_are_not_delivered_inside_a_producer_call)
{
	struct daemon d;
	struct reentry seen = {0};
	struct fb_ring_params params = th_params(32, 32, FB_FORMAT_GRAY8, 3, FB_POLICY_DROP);
	fb_producer *prod;
	fb_subscriber *watch, *sub;
	struct fb_frame *w;

	start(&d, lavfi_config);
	fb_client *pc = client(&d), *sc = client(&d);
	wait_state(pc, "bars", FB_STREAM_RUNNING, 10);
	fb_client_set_event_callback(pc, note_event, &seen);
	cr_assert_eq(fb_client_publish(pc, "out", &params, &prod), 0);
	cr_assert_eq(fb_client_subscribe(pc, "bars", FB_MODE_LATEST, 1, &watch), 0);

	write_file(d.config, "");
	kill(d.pid, SIGHUP);                      /* bars goes: an event for pc */
	wait_log(&d, "stream bars: stopped", 10); /* logged after the event was sent */
	cr_assert_eq(fb_client_subscribe(sc, "out", FB_MODE_QUEUE, 1, &sub),
		     0); /* a registration */

	seen.in_acquire = true;
	cr_assert_eq(fb_producer_acquire(prod, 0, &w), 0);
	seen.in_acquire = false;
	cr_assert_eq(fb_producer_publish(prod, w), 0);
	cr_assert_eq(seen.calls_inside, 0, "an event callback ran inside fb_producer_acquire");
	cr_assert_geq(fb_client_process(pc), 0);
	cr_assert_geq(seen.calls, 1, "the event was lost");

	const struct fb_frame *f;
	cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "the registration was taken in");
	fb_subscriber_release(sub, f);
	fb_subscriber_free(sub);
	fb_subscriber_free(watch);
	cr_assert_eq(fb_client_unpublish(pc, prod), 0);
	fb_client_free(pc);
	fb_client_free(sc);
	stop(&d);
}

/* Try to connect to d as uid 65534 (nobody), with or without group gid among
 * its groups; the connect's result (0 or -errno). */
static int connect_as_nobody(const struct daemon *d, gid_t gid, bool in_group)
{
	int pipefd[2];
	cr_assert_eq(pipe(pipefd), 0);
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		gid_t groups[1] = {gid};
		if (setgroups(in_group ? 1 : 0, groups) < 0 || setgid(65534) < 0 ||
		    setuid(65534) < 0)
			_exit(2);
		fb_client *c;
		int r = fb_client_connect(d->socket, "nobody", &c);
		(void)!write(pipefd[1], &r, sizeof(r));
		_exit(0);
	}
	int r = 1;
	cr_assert_eq(read(pipefd[0], &r, sizeof(r)), (ssize_t)sizeof(r),
		     "the child could not drop privileges");
	th_wait(pid);
	close(pipefd[0]);
	close(pipefd[1]);
	return r;
}

/* Only members of the socket's group (and root) may attach. */
Test(daemon, only_the_socket_group_may_connect)
{
	struct daemon d;
	struct group *video = getgrnam("video");
	cr_assert_not_null(video, "the test needs Debian's video group");
	char config[256];
	snprintf(config, sizeof(config), "[daemon]\nsocket_group = video\nsocket_mode = 0660\n%s",
		 lavfi_config);
	start(&d, config);
	cr_assert_eq(chmod(d.dir, 0755), 0); /* the socket's directory is searchable */
	struct stat st;
	cr_assert_eq(stat(d.socket, &st), 0);
	cr_assert_eq(st.st_gid, video->gr_gid, "socket group");
	cr_assert_eq(st.st_mode & 0777, 0660, "socket mode %o", st.st_mode & 0777);
	cr_assert_eq(connect_as_nobody(&d, video->gr_gid, false), -EACCES, "outside the group");
	cr_assert_eq(connect_as_nobody(&d, video->gr_gid, true), 0, "inside the group");
	stop(&d);
}

/* Under systemd (JOURNAL_STREAM naming its stderr) the daemon logs to the
 * journal with structured fields.  The journal here is a socket of the test's
 * own, at journald's path inside a private mount namespace. */
Test(daemon, logs_to_the_journal_with_fields)
{
	struct daemon d;
	int result[2];

	make_dir(&d);
	write_file(d.config, lavfi_config);
	cr_assert_eq(pipe(result), 0);
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		struct sockaddr_un addr = {.sun_family = AF_UNIX,
					   .sun_path = "/run/systemd/journal/socket"};
		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("tmpfs", "/run", "tmpfs", 0, NULL) < 0 ||
		    system("mkdir -p /run/systemd/journal") != 0)
			_exit(3);
		int js = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (bind(js, (struct sockaddr *)&addr, sizeof(addr)) < 0)
			_exit(4);
		int log = open(d.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		struct stat st;
		fstat(log, &st);
		char stream[64];
		snprintf(stream, sizeof(stream), "%llu:%llu", (unsigned long long)st.st_dev,
			 (unsigned long long)st.st_ino);
		pid_t daemon_pid = fork();
		if (daemon_pid == 0) {
			dup2(log, STDERR_FILENO);
			setenv("JOURNAL_STREAM", stream, 1);
			exec_daemon(
			    (const char *[]){"--config", d.config, "--socket", d.socket, NULL});
			_exit(127);
		}
		/* Wait for a message about the stream, then stop the daemon. */
		char all[65536] = "";
		size_t len = 0;
		uint64_t until = th_now_ns() + 5000000000u;
		struct timeval tv = {.tv_usec = 100000};
		setsockopt(js, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		while (th_now_ns() < until && !strstr(all, "opened testsrc2")) {
			ssize_t n = recv(js, all + len, sizeof(all) - len - 2, 0);
			if (n > 0) {
				len += (size_t)n;
				all[len++] = '\n';
			}
		}
		kill(daemon_pid, SIGTERM);
		th_wait(daemon_pid);
		(void)!write(result[1], all, len + 1);
		_exit(0);
	}
	close(result[1]);
	static char got[65536];
	size_t len = 0;
	ssize_t n;
	while ((n = read(result[0], got + len, sizeof(got) - len - 1)) > 0)
		len += (size_t)n;
	got[len] = '\0';
	int status = th_wait(pid);
	cr_assert_eq(status, 0, "namespace setup failed (%d)", status);
	cr_assert(strstr(got, "MESSAGE=stream bars: opened testsrc2"), "%s", got);
	cr_assert(strstr(got, "FRAMEBUS_STREAM=bars"), "%s", got);
	cr_assert(strstr(got, "PRIORITY=6"), "%s", got);
	cr_assert(strstr(got, "SYSLOG_IDENTIFIER=framebusd"), "%s", got);
	cr_assert_null(strstr(read_file(d.log), "opened testsrc2"), "also on stderr: %s",
		       read_file(d.log));
	remove_dir(d.dir);
}

/* Two inputs this FFmpeg cannot decode, both made by ffmpeg itself: an
 * MPEG-TS whose video is AVS2 (a codec FFmpeg knows and can stream-copy but
 * has no decoder for here), and an AVI from the a64multi encoder, whose
 * FourCC 'a64m' FFmpeg cannot map back to any codec.  Neither can ever
 * decode until someone replaces the file, so each stream says which codec
 * and waits retry_max between tries instead of retrying every retry_min. */
Test(daemon, an_undecodable_codec_is_named_and_not_retried_in_a_tight_loop)
{
	struct daemon d;
	char cmd[1024], config[1024], files[] = "/tmp/framebus-files-XXXXXX";
	fb_subscriber *sub;
	const struct fb_frame *f;

	cr_assert_not_null(mkdtemp(files));
	write_garbage(files, "avs2.raw", 20000);
	snprintf(cmd, sizeof(cmd),
		 "cd %s && ffmpeg -loglevel error -y -f avs2 -framerate 25 -i avs2.raw -c:v copy "
		 "-f mpegts avs2.ts && ffmpeg -loglevel error -y -f lavfi "
		 "-i testsrc=size=64x48:rate=25 -frames:v 10 -c:v a64multi a64.avi",
		 files);
	cr_assert_eq(run(cmd), 0, "ffmpeg could not make the test files");
	snprintf(config, sizeof(config),
		 "%s\n[stream avs2]\nurl = %s/avs2.ts\nretry_min = 100ms\nretry_max = 60s\n"
		 "[stream a64]\nurl = %s/a64.avi\nretry_min = 100ms\nretry_max = 60s\n",
		 lavfi_config, files, files);
	start(&d, config);
	fb_client *c = client(&d);
	struct fb_stream_info avs2 = wait_state(c, "avs2", FB_STREAM_RETRYING, 15);
	cr_assert(strstr(avs2.detail, "no decoder for its video codec avs2"), "detail: %s",
		  avs2.detail);
	struct fb_stream_info a64 = wait_state(c, "a64", FB_STREAM_RETRYING, 15);
	cr_assert(strstr(a64.detail, "a64m"), "detail: %s", a64.detail);

	/* The other stream delivers meanwhile; its frames take a second or
	 * more, several retry_min backoffs. */
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_QUEUE, 1, &sub), 0, "%s",
		     fb_client_last_error(c));
	for (int i = 0; i < 50; i++) {
		int r = fb_subscriber_acquire(sub, 5000, &f);
		cr_assert_eq(r, 0, "bars, frame %d: %s", i, fb_strerror(r));
		fb_subscriber_release(sub, f);
	}
	/* Not tried again before retry_max (60 s) is over. */
	avs2 = wait_state(c, "avs2", FB_STREAM_RETRYING, 5);
	a64 = wait_state(c, "a64", FB_STREAM_RETRYING, 5);
	cr_assert_eq(avs2.retries, 1, "avs2 tried %u times", avs2.retries);
	cr_assert_eq(a64.retries, 1, "a64 tried %u times", a64.retries);
	const char *log = read_file(d.log);
	cr_assert(strstr(log, "stream avs2: no decoder for its video codec avs2"), "%s", log);
	cr_assert(strstr(log, "retrying in 60.0 s"), "%s", log);
	fb_subscriber_free(sub);
	fb_client_free(c);
	stop(&d);
	remove_dir(files);
}

/* A TCP server on 127.0.0.1 for one MPEG-TS file of that many seconds, sent
 * at its own rate, as a camera would.  The first connection to get stall_at
 * bytes gets nothing more (it stays open, and so does the listening socket)
 * until a byte arrives on resume_fd; from then on every connection gets the
 * file over and over. */
static pid_t spawn_stalling_server(const char *path, size_t stall_at, double seconds, int resume_fd,
				   int *ret_port)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(ls, 0);
	cr_assert_eq(bind(ls, (struct sockaddr *)&addr, sizeof(addr)), 0, "%s", strerror(errno));
	cr_assert_eq(listen(ls, 16), 0);
	cr_assert_eq(getsockname(ls, (struct sockaddr *)&addr, &len), 0);
	*ret_port = ntohs(addr.sin_port);

	static char file[4 << 20];
	FILE *in = fopen(path, "r");
	cr_assert_not_null(in, "%s: %s", path, strerror(errno));
	size_t size = fread(file, 1, sizeof(file), in);
	fclose(in);
	cr_assert(size > stall_at && size < sizeof(file), "%s: %zu bytes", path, size);

	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid > 0) {
		close(ls);
		return pid;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	const size_t chunk = 7 * 188;
	const uint64_t pause_us = (uint64_t)(chunk * seconds / (double)size * 1e6);
	for (bool stalled = false;;) {
		int conn = accept(ls, NULL, NULL);
		if (conn < 0)
			_exit(1);
		for (size_t sent = 0;; sent = (sent + chunk) % (size - size % chunk)) {
			if (!stalled && sent >= stall_at) {
				char byte;
				(void)!read(resume_fd, &byte, 1);
				stalled = true;
				break;
			}
			if (send(conn, file + sent, chunk, MSG_NOSIGNAL) < 0)
				break; /* that client gave up on this connection */
			th_sleep_us(pause_us);
		}
		close(conn);
	}
}

/* A network source that stops sending without closing the connection: after
 * stall_timeout the stream retries and says it stalled, while another stream
 * runs on and the daemon answers; once the server sends again, the stream
 * runs again. */
Test(daemon, a_network_source_that_stalls_retries_then_recovers)
{
	struct daemon d;
	char cmd[512], config[1024], path[PATH_MAX], files[] = "/tmp/framebus-files-XXXXXX";
	int resume[2], port;
	fb_subscriber *bars, *net;
	const struct fb_frame *f;

	cr_assert_not_null(mkdtemp(files));
	snprintf(cmd, sizeof(cmd),
		 "ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=160x120:rate=25 -t 10 "
		 "-c:v mpeg2video -f mpegts %s/net.ts",
		 files);
	cr_assert_eq(run(cmd), 0, "ffmpeg could not make the test file");
	snprintf(path, sizeof(path), "%s/net.ts", files);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(pipe2(resume, O_CLOEXEC), 0);
	/* Half the file: a few seconds of frames, then silence. */
	pid_t server = spawn_stalling_server(path, (size_t)st.st_size / 2, 10, resume[0], &port);
	close(resume[0]);

	snprintf(config, sizeof(config),
		 "%s\n[stream net]\nurl = tcp://127.0.0.1:%d\ninput_format = mpegts\n"
		 "retry_min = 200ms\nretry_max = 1s\nstall_timeout = 1s\n",
		 lavfi_config, port);
	start(&d, config);
	fb_client *c = client(&d);
	struct fb_stream_info info = wait_state(c, "net", FB_STREAM_RETRYING, 30);
	cr_assert_gt(info.published, 0, "the stream never ran before it stalled (%s)", info.detail);
	cr_assert(strstr(info.detail, "stalled"), "detail: %s", info.detail);
	cr_assert(strstr(read_file(d.log), "stream net: the input stalled"), "%s",
		  read_file(d.log));
	uint64_t published = info.published;
	cr_assert_eq(fb_client_subscribe(c, "net", FB_MODE_LATEST, 1, &net), 0, "%s",
		     fb_client_last_error(c));

	/* The daemon answers, the other stream runs, and no frame comes from
	 * the silent server (its later connections stall too). */
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_QUEUE, 1, &bars), 0, "%s",
		     fb_client_last_error(c));
	for (int i = 0; i < 50; i++) {
		int r = fb_subscriber_acquire(bars, 5000, &f);
		cr_assert_eq(r, 0, "bars, frame %d: %s", i, fb_strerror(r));
		fb_subscriber_release(bars, f);
	}
	/* A try after the first connects, gets nothing either, and stalls
	 * while opening. */
	uint64_t until = th_now_ns() + 30000000000u;
	do {
		th_sleep_us(20000);
		cr_assert_eq(fb_client_get_stream(c, "net", &info), 0);
	} while (info.retries < 2 && th_now_ns() < until);
	cr_assert_geq(info.retries, 2, "net: %s (%s), %u tries", fb_stream_state_name(info.state),
		      info.detail, info.retries);
	cr_assert_eq(info.state, FB_STREAM_RETRYING);
	cr_assert(strstr(info.detail, "stalled"), "detail: %s", info.detail);
	cr_assert_eq(info.published, published, "frames from a silent server");

	/* The server sends again: the stream comes back by itself, on the
	 * same ring. */
	cr_assert_eq(write(resume[1], "g", 1), 1);
	info = wait_state(c, "net", FB_STREAM_RUNNING, 30);
	cr_assert_eq(info.width, 160);
	int r = fb_subscriber_acquire(net, 10000, &f);
	cr_assert_eq(r, 0, "net after the resume: %s", fb_strerror(r));
	fb_subscriber_release(net, f);
	fb_subscriber_free(net);
	fb_subscriber_free(bars);
	fb_client_free(c);
	stop(&d);
	close(resume[1]);
	kill(server, SIGKILL);
	th_wait(server);
	remove_dir(files);
}
