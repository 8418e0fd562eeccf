/* SPDX-License-Identifier: MIT */
/* Clients that misbehave hurt only themselves: malformed messages, a
 * client that never reads, one that takes every place, and users outside the
 * socket's group. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon-helpers.h"

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

static int try_connect(const struct daemon *d, void *arg, char *error, size_t size)
{
	fb_client *c;
	(void)arg;
	(void)error;
	(void)size;
	return fb_client_connect(d->socket, "nobody", &c);
}

/* Try to connect to d as uid 65534 (nobody), with or without group gid among
 * its groups; the connect's result (0 or -errno). */
static int connect_as_nobody(const struct daemon *d, gid_t gid, bool in_group)
{
	gid_t groups[1] = {gid};
	return as_user(d, 65534, 65534, groups, in_group ? 1 : 0, try_connect, NULL, NULL);
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

/* A publisher's third descriptor must be its channel, a SOCK_SEQPACKET
 * socket: a pipe there is refused with a reason, and the daemon goes on. */
Test(daemon, a_publisher_channel_that_is_not_a_socket_is_refused)
{
	struct daemon d;
	start(&d, lavfi_config);
	int fd = raw_connect(&d);
	raw_hello(fd, "pipe-channel", 0, NULL);
	char reply[4096];
	cr_assert_gt(recv(fd, reply, sizeof(reply), 0), 0, "hello reply");

	struct {
		uint32_t opcode, size, seq, n_fds;
		char name[64];
		uint32_t width, height, format, slots, policy, meta_max;
	} create = {7, sizeof(create), 2, 3, "piped", 64, 48, FB_FORMAT_GRAY8, 3, 0, 0};
	int p[2];
	cr_assert_eq(pipe(p), 0);
	int fds[3] = {memfd_create("ring", MFD_CLOEXEC), memfd_create("control", MFD_CLOEXEC),
		      p[0]};
	cr_assert_eq(th_sendmsg_fds(fd, &create, sizeof(create), fds, 3), (ssize_t)sizeof(create));
	struct {
		uint32_t opcode, size, seq, n_fds;
		int32_t error;
		uint32_t reserved;
		char text[192];
	} error;
	cr_assert_eq(recv(fd, &error, sizeof(error), 0), (ssize_t)sizeof(error));
	cr_assert_eq(error.opcode, 66, "an ERROR");
	cr_assert_eq(error.error, -EINVAL);
	cr_assert(strstr(error.text, "third descriptor is not a SOCK_SEQPACKET socket"), "%s",
		  error.text);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	close(p[1]);
	close(fd);

	fb_client *good = client(&d);
	wait_state(good, "bars", FB_STREAM_RUNNING, 10);
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(good, "piped", &info), -ENOENT);
	fb_client_free(good);
	stop(&d);
}
