/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: a client of the bus (libframebus's fb_client) facing a hostile
 * or broken daemon.  The input is a sequence of records
 *     u8 n_fds, u16 length (little endian), length bytes
 * each sent as one SOCK_SEQPACKET message (with n_fds & 7 empty memfds
 * attached) by a fake daemon thread, which then hangs up.  The client
 * connects, lists streams, asks for one, subscribes to it and processes
 * events; every answer must be an error code, never a crash, a leak of the
 * descriptors it was sent, or a read outside what it received.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <framebus/framebus.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char socket_path[108];
static int listener = -1;

struct feed {
	const uint8_t *data;
	size_t size;
};

static void send_record(int fd, const uint8_t *p, size_t len, unsigned n_fds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 7)];
		struct cmsghdr align;
	} u;
	int fds[7];
	struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

	for (unsigned i = 0; i < n_fds; i++)
		fds[i] = memfd_create("fuzz-client", MFD_CLOEXEC);
	if (n_fds) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
	}
	(void)!sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
	for (unsigned i = 0; i < n_fds; i++)
		close(fds[i]);
}

/* The fake daemon: takes one connection, sends every record, then hangs up
 * and is gone (the client's attempts to connect again find no socket). */
static void *daemon_main(void *arg)
{
	const struct feed *feed = arg;
	int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	unlink(socket_path);
	close(listener);
	listener = -1;
	if (fd < 0)
		return NULL;
	for (size_t at = 0; at + 3 <= feed->size;) {
		unsigned n_fds = feed->data[at] & 7;
		size_t len = (size_t)feed->data[at + 1] | (size_t)feed->data[at + 2] << 8;
		at += 3;
		if (len > feed->size - at)
			len = feed->size - at;
		send_record(fd, feed->data + at, len, n_fds);
		at += len;
	}
	shutdown(fd, SHUT_WR);
	/* Wait for the client to hang up too, so that nothing is lost unread. */
	char buf[4096];
	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
	close(fd);
	return NULL;
}

static int open_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		abort();
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void setup(void)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(socket_path, sizeof(socket_path), "/tmp/fuzz-client-%d.sock", getpid());
	unlink(socket_path);
	strcpy(addr.sun_path, socket_path);
	listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(listener, 4) < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct feed feed = {data, size};
	pthread_t thread;
	fb_client *c;

	int fds_before = open_fds();
	setup();
	if (pthread_create(&thread, NULL, daemon_main, &feed) != 0)
		abort();
	if (fb_client_connect(socket_path, "fuzz", &c) == 0) {
		struct fb_stream_info *infos, info;
		struct fb_subscription_info *subs;
		fb_subscriber *sub;
		size_t n;
		if (fb_client_list_streams(c, &infos, &n) == 0)
			free(infos);
		fb_client_get_stream(c, "cam0", &info);
		if (fb_client_inspect(c, "cam0", &info, &subs, &n) == 0)
			free(subs);
		if (fb_client_subscribe(c, "cam0", FB_MODE_QUEUE, 0, &sub) == 0)
			fb_client_unsubscribe(c, sub);
		while (fb_client_process(c) > 0)
			;
		fb_client_free(c);
	}
	pthread_join(thread, NULL);
	if (open_fds() != fds_before)
		abort(); /* a descriptor the daemon sent (or a socket) was leaked */
	return 0;
}
