/* SPDX-License-Identifier: MIT */
/* What a broken input does (docs/reliability.md, "Bad video"): files that are
 * truncated, garbage, change size or cannot be decoded, network sources that
 * refuse or stall, and a slow subscriber that is no stall; the other streams
 * run on throughout. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon-helpers.h"

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
	 * the block policy holds the source back from the first frame.  Its
	 * pause is longer than stall_timeout, not block_timeout: the stream
	 * waits for it (a longer pause would stall it: daemon-access-test). */
	cr_assert_not_null(mkdtemp(files));
	snprintf(
	    config, sizeof(config),
	    "[stream f]\nurl = %s/f.nut\nwidth = 64\nheight = 48\npolicy = block\n"
	    "pacing = fast\nstall_timeout = 1s\nblock_timeout = 10s\nslots = 3\nretry_min = 100ms\n"
	    "retry_max = 200ms\n",
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
	uint64_t until = fb_now_ns() + 30000000000u;
	do {
		th_sleep_us(20000);
		cr_assert_eq(fb_client_get_stream(c, "net", &info), 0);
	} while (info.retries < 2 && fb_now_ns() < until);
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

/* A source stuck where FFmpeg cannot interrupt it (opening a FIFO nobody
 * writes blocks in open(2)): after twice its stall_timeout without a sign of
 * life the daemon interrupts the call, says why and retries; a writer that
 * comes later is read; the other stream runs on; and SIGTERM stops the daemon
 * at once even while the thread is stuck (it used to wait for ever). */
Test(daemon, a_source_stuck_in_a_system_call_is_interrupted)
{
	struct daemon d;
	char config[512], fifo[160], cmd[512];

	start(&d, ""); /* then the FIFO in its directory, and a reload */
	snprintf(fifo, sizeof(fifo), "%s/camera.fifo", d.dir);
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	snprintf(config, sizeof(config),
		 "%s[stream pipe]\nurl = %s\ninput_format = mpegts\nstall_timeout = 1s\n"
		 "retry_min = 200ms\nretry_max = 500ms\n",
		 lavfi_config, fifo);
	write_file(d.config, config);
	kill(d.pid, SIGHUP);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 10);
	wait_log(&d, "stream pipe: its source is stuck: no sign of life for 2.", 10);
	wait_log(&d, "interrupting what it waits for", 1);
	struct fb_stream_info info = wait_state(c, "pipe", FB_STREAM_RETRYING, 5);
	cr_assert_eq(info.state, FB_STREAM_RETRYING);

	/* A writer comes: the retried open finds it. */
	snprintf(cmd, sizeof(cmd),
		 "ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=64x48:rate=25 -t 20 "
		 "-c:v mpeg2video -f mpegts -y %s >/dev/null 2>&1 &",
		 fifo);
	cr_assert_eq(run(cmd), 0);
	info = wait_state(c, "pipe", FB_STREAM_RUNNING, 15);
	cr_assert_eq(info.width, 64);
	wait_state(c, "bars", FB_STREAM_RUNNING, 1);

	/* Stuck again once the writer is gone; SIGTERM still stops at once. */
	snprintf(cmd, sizeof(cmd), "pkill -f 'mpegts -y %s' ; true", fifo);
	run(cmd);
	wait_state(c, "pipe", FB_STREAM_RETRYING, 10);
	fb_client_free(c);
	uint64_t t0 = fb_now_ns();
	stop(&d);
	cr_assert_lt(fb_now_ns() - t0, 5000000000u, "stopping waited for the stuck thread");
}
