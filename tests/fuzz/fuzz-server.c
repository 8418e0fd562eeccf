/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: framebusd's side of the control socket.  The daemon's own
 * code (server.c and the stream code behind it) runs in this process on a
 * libuv loop with two configured streams: "live" (a lavfi test pattern, its
 * ring made before the first input) and "starting" (a missing file: retried,
 * never a ring).  Two client connections, A and B, send what the input says;
 * the loop is run after every message, and the replies are read and their
 * descriptors closed.
 *
 * The input is a sequence of records
 *     u8 control, u16 length (little endian), length bytes
 * control bit 0: the connection (A or B); bits 1-2: what to do
 *     0: send the bytes as one message
 *     1: send them with (bits 3-5) empty memfds attached
 *     2: send them with a real ring's frame and control memfds and its
 *        producer's channel, made for the fb__msg_create_stream the bytes
 *        carry (three empty memfds if it is not one); with bit 3 set, a ring
 *        of one slot more than it asks for
 *     3: hang up this connection and connect again (a new client)
 * bit 6: do not read the replies (the daemon's unread-replies limit).
 *
 * After each input both connections hang up, and the daemon must be back
 * where it started: no client, only its two streams, no subscriber on
 * "live", and not one descriptor more or less than before the input.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <libavdevice/avdevice.h>
#include <libavutil/log.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "protocol-private.h"
#include "ring-private.h"
#include "test-helpers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_RINGS 16
#define MAX_RING_BYTES (64u << 20)

static struct fbd_daemon daemon_state = {.listen_fd = -1};
static char dir[64], socket_path[108];

static void fail(const char *what)
{
	fprintf(stderr, "fuzz-server: %s\n", what);
	abort();
}

/* Each open descriptor and what it is, on stderr. */
static void list_fds(void)
{
	struct dirent *e;
	DIR *d = opendir("/proc/self/fd");
	while (d && (e = readdir(d))) {
		char path[300], target[256] = "";
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		if (readlink(path, target, sizeof(target) - 1) >= 0)
			fprintf(stderr, "  fd %s: %s\n", e->d_name, target);
	}
	if (d)
		closedir(d);
}

/* Run the daemon's loop until it has nothing ready to do. */
static void pump(void)
{
	for (int i = 0; i < 4; i++)
		uv_run(daemon_state.loop, UV_RUN_NOWAIT);
}

static void teardown(void)
{
	struct fbd_daemon *d = &daemon_state;
	fbd_streams_stop(d);
	fbd_server_stop(d);
	uv_run(d->loop, UV_RUN_DEFAULT);
	uv_loop_close(d->loop);
	fbd_config_free(d->config);
	char path[128];
	snprintf(path, sizeof(path), "%s/framebusd.conf", dir);
	unlink(path);
	rmdir(dir);
}

static void setup(void)
{
	struct fbd_daemon *d = &daemon_state;
	char path[128], error[512];
	FILE *f;

	snprintf(dir, sizeof(dir), "/tmp/fuzz-server-XXXXXX");
	if (!mkdtemp(dir))
		fail("mkdtemp");
	snprintf(socket_path, sizeof(socket_path), "%s/framebus.sock", dir);
	snprintf(path, sizeof(path), "%s/framebusd.conf", dir);
	f = fopen(path, "w");
	if (!f)
		fail("cannot write the configuration");
	/* Small limits, so that inputs reach them. */
	fprintf(f,
		"[daemon]\n"
		"log_level = error\n"
		"max_clients = 3\n"
		"max_subscriptions_per_client = 6\n"
		"max_streams_per_client = 2\n"
		"max_ring_memory_per_client = 8M\n"
		"[stream live]\n"
		"url = testsrc2=size=32x24:rate=50\n"
		"input_format = lavfi\n"
		"slots = 4\n"
		"[stream starting]\n"
		"url = %s/no-such-file.mp4\n"
		"retry_min = 10s\n"
		"retry_max = 10s\n",
		dir);
	fclose(f);

	signal(SIGPIPE, SIG_IGN);
	av_log_set_level(AV_LOG_QUIET);
	avdevice_register_all();
	fbd_log_init();
	if (fbd_config_load(path, &d->config, error, sizeof(error)) < 0)
		fail(error);
	fbd_log_set_level(d->config->log_level);
	d->config_path = NULL;
	d->socket_override = socket_path;
	d->loop = uv_default_loop();
	if (fbd_streams_start(d) < 0 || fbd_server_start(d) < 0)
		fail("the daemon did not start");
	/* Wait (up to 10 s) for the live stream's ring. */
	struct fbd_stream *live = fbd_streams_find(d, "live");
	for (int i = 0; i < 1000 && !fbd_stream_params(live).width; i++) {
		nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
		pump();
	}
	if (!fbd_stream_params(live).width)
		fail("the live stream made no ring in 10 s");
	atexit(teardown);
}

static int connect_client(void)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	strcpy(addr.sun_path, socket_path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		fail("cannot connect to the daemon");
	pump(); /* it accepts */
	return fd;
}

/* Read every reply waiting on fd, closing the descriptors they carry. */
static void drain(int fd)
{
	struct fb__msg m;
	for (;;) {
		int r = fb__msg_recv(fd, &m);
		if (r == 0)
			fb__msg_close_fds(&m);
		else if (r != -EPROTO) /* -EPROTO: its descriptors are closed */
			return;
	}
}

/* A ring for the create_stream request in bytes (one slot more if wrong),
 * or NULL. */
static fb_producer *ring_for(const uint8_t *bytes, size_t len, bool wrong)
{
	struct fb__msg_create_stream req;
	struct fb__ring_geometry geo;
	fb_producer *p;

	if (len < sizeof(struct fb__msg_header) + sizeof(req))
		return NULL;
	memcpy(&req, bytes + sizeof(struct fb__msg_header), sizeof(req));
	struct fb_ring_params params = {.width = req.width,
					.height = req.height,
					.format = req.format,
					.slots = req.slots + wrong,
					.policy = req.policy,
					.meta_max = req.meta_max};
	if (fb__ring_geometry_compute(&params, &geo) < 0 || geo.total_size > MAX_RING_BYTES ||
	    fb_producer_new(&params, &p) < 0)
		return NULL;
	return p;
}

static void send_record(int fd, const uint8_t *bytes, size_t len, unsigned action, unsigned n_fds,
			fb_producer **rings, unsigned *n_rings)
{
	int fds[7];
	unsigned ours = 0; /* fds[ours..n_fds-1] are ours to close after sending */

	if (action == 0)
		n_fds = 0;
	if (action == 2) {
		fb_producer *p = *n_rings < MAX_RINGS ? ring_for(bytes, len, n_fds & 1) : NULL;
		n_fds = 3;
		if (p && fb__producer_open_channel(p, &fds[2]) == 0) {
			rings[(*n_rings)++] = p;
			fb__producer_get_fds(p, &fds[0], &fds[1]);
			ours = 2; /* the channel's other end */
		} else {
			fb_producer_free(p);
		}
	}
	if (ours == 0)
		for (unsigned i = 0; i < n_fds; i++)
			fds[i] = memfd_create("fuzz-server", MFD_CLOEXEC);
	th_sendmsg_fds(fd, bytes, len, fds, n_fds); /* the socket is non-blocking */
	for (unsigned i = ours; i < n_fds; i++)
		close(fds[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fbd_daemon *d = &daemon_state;
	fb_producer *rings[MAX_RINGS];
	unsigned n_rings = 0;
	int conn[2];

	if (!d->loop)
		setup();
	/* Counted here, not once at setup: libFuzzer opens descriptors of its
	 * own between inputs (its symbolizer's pipes). */
	int fds_at_rest = th_count_fds();
	conn[0] = connect_client();
	conn[1] = connect_client();
	for (size_t at = 0; at + 3 <= size;) {
		unsigned control = data[at];
		size_t len = (size_t)data[at + 1] | (size_t)data[at + 2] << 8;
		int *fd = &conn[control & 1];
		unsigned action = (control >> 1) & 3;
		at += 3;
		if (len > size - at)
			len = size - at;
		if (action == 3) {
			close(*fd);
			pump();
			*fd = connect_client();
		} else {
			send_record(*fd, data + at, len, action, (control >> 3) & 7, rings,
				    &n_rings);
			pump();
		}
		if (!(control & 0x40)) {
			drain(conn[0]);
			drain(conn[1]);
			pump(); /* a paused client reads again */
		}
		at += len;
	}
	close(conn[0]);
	close(conn[1]);
	for (int i = 0; i < 100 && d->n_clients; i++)
		pump();
	for (unsigned i = 0; i < n_rings; i++)
		fb_producer_free(rings[i]);

	struct fbd_stream *live = fbd_streams_find(d, "live");
	struct fbd_counters stats;
	live->ops->counters(live, &stats);
	if (d->n_clients)
		fail("a client is still there after hanging up");
	if (d->n_streams != 2 || !fbd_streams_find(d, "starting"))
		fail("a published stream outlived its publisher, or a configured one is gone");
	if (stats.ring.subscribers)
		fail("a subscription to 'live' outlived its client");
	int fds = th_count_fds();
	if (fds != fds_at_rest) {
		fprintf(stderr, "fuzz-server: %d descriptors open, %d at rest:\n", fds,
			fds_at_rest);
		list_fds();
		fail("descriptors leaked (or closed twice)");
	}
	return 0;
}
