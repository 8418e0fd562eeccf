/* SPDX-License-Identifier: MIT */
/*
 * The producer side of bench/compare for four transports (PROTOCOL.md):
 *
 *   compare-producer framebus --socket PATH   a stream published on framebusd
 *   compare-producer pipe --fds 3,4,...       one pipe per consumer (ffmpeg | python)
 *   compare-producer zmq --endpoint ipc://..  a ZeroMQ PUB (XPUB, to see subscribers)
 *   compare-producer shm --name /NAME         the seeds' named shared-memory block
 *                                             with a POSIX named semaphore per consumer
 *   compare-producer floor --name /NAME       no frame at all: the bare futex wake-up
 *                                             of each consumer (floor.h)
 *
 * common options: --frames N --fps F (0: flat out) --consumers K
 *
 * Each prints "ready" once the consumers can attach, waits for all K of them,
 * then sends N frames of 1920x1080 bgr24: it writes every pixel of each
 * frame, as a camera or decoder makes a new picture each time, then stamps
 * it with its seq and the CLOCK_MONOTONIC time right before it is published.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <framebus/framebus.h>

#include "floor.h"

#define WIDTH 1920
#define HEIGHT 1080
#define FRAME_SIZE ((size_t)WIDTH * HEIGHT * 3)
#define MAX_CONSUMERS 16

struct options {
	const char *transport;
	uint64_t frames;
	double fps;
	int consumers;
	const char *socket;
	const char *endpoint;
	const char *name;
	uint32_t slots;
	int fds[MAX_CONSUMERS];
	int n_fds;
};

static void die(const char *what, const char *why)
{
	fprintf(stderr, "compare-producer: %s: %s\n", what, why);
	exit(1);
}

static void ready(void)
{
	printf("ready\n");
	fflush(stdout);
}

/* A frame buffer of the producer's own, its pages touched before the first
 * frame: faulting 6.2 MB in while the first frames are due (200 ms once on
 * a loaded host) would send them late and in a burst. */
static uint8_t *new_frame(void)
{
	uint8_t *frame = malloc(FRAME_SIZE);
	if (!frame)
		die("malloc", strerror(ENOMEM));
	memset(frame, 0xff, FRAME_SIZE); /* not 0: malloc + memset 0 may become calloc */
	return frame;
}

/* Each frame gets new pixels (PROTOCOL.md), then its stamp. */
static void stamp(uint8_t *p, uint64_t seq)
{
	memset(p + 16, (int)(seq & 0xff), FRAME_SIZE - 16);
	uint64_t t = fb_now_ns();
	memcpy(p, &seq, 8);
	memcpy(p + 8, &t, 8);
}

/* Sleep until frame seq's turn at fps frames a second (none when 0). */
static void pace(const struct options *o, uint64_t start_ns, uint64_t seq)
{
	if (o->fps <= 0)
		return;
	uint64_t at = start_ns + (uint64_t)((double)(seq - 1) * 1e9 / o->fps);
	struct timespec ts = {.tv_sec = (time_t)(at / 1000000000u),
			      .tv_nsec = (long)(at % 1000000000u)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void run_framebus(const struct options *o)
{
	struct fb_ring_params params = {.width = WIDTH,
					.height = HEIGHT,
					.format = FB_FORMAT_BGR24,
					.slots = o->slots,
					.policy = FB_POLICY_BLOCK,
					.meta_max = 0};
	struct fb_stream_info info;
	fb_client *c;
	fb_producer *p;
	int r;

	if ((r = fb_client_connect(o->socket, "compare-producer", &c)) < 0)
		die("cannot connect to framebusd", fb_strerror(r));
	if ((r = fb_client_publish(c, "compare", &params, &p)) < 0)
		die("cannot publish",
		    fb_client_last_error(c)[0] ? fb_client_last_error(c) : fb_strerror(r));
	ready();
	do {
		usleep(1000);
		if ((r = fb_client_get_stream(c, "compare", &info)) < 0)
			die("cannot read the stream's subscribers", fb_strerror(r));
	} while (info.subscribers < (uint32_t)o->consumers);

	uint64_t start = fb_now_ns();
	for (uint64_t seq = 1; seq <= o->frames; seq++) {
		struct fb_frame *f;
		pace(o, start, seq);
		if ((r = fb_producer_acquire(p, 10000, &f)) < 0)
			die("cannot take a slot", fb_strerror(r));
		stamp(f->data[0], seq);
		if ((r = fb_producer_publish(p, f)) < 0)
			die("cannot publish a frame", fb_strerror(r));
	}
	fb_client_unpublish(c, p); /* the consumers read what is left, then see the end */
	fb_client_free(c);
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("writing a pipe", strerror(errno));
		p += w;
		n -= (size_t)w;
	}
}

static void run_pipe(const struct options *o)
{
	uint8_t *frame = new_frame();
	/* The biggest pipe buffer an unprivileged process may ask for: the
	 * best case for this transport. */
	for (int i = 0; i < o->n_fds; i++)
		fcntl(o->fds[i], F_SETPIPE_SZ, 1 << 20);
	ready();
	uint64_t start = fb_now_ns();
	for (uint64_t seq = 1; seq <= o->frames; seq++) {
		pace(o, start, seq);
		stamp(frame, seq);
		for (int i = 0; i < o->n_fds; i++)
			write_all(o->fds[i], frame, FRAME_SIZE);
	}
	for (int i = 0; i < o->n_fds; i++)
		close(o->fds[i]);
	free(frame);
}

static void run_zmq(const struct options *o)
{
	void *ctx = zmq_ctx_new();
	void *pub = zmq_socket(ctx, ZMQ_XPUB);
	int hwm = 8;
	uint8_t *frame = new_frame();

	if (!pub)
		die("zmq", zmq_strerror(zmq_errno()));
	int verbose = 1; /* hand us every subscription, not only the first of a topic */
	zmq_setsockopt(pub, ZMQ_SNDHWM, &hwm, sizeof(hwm));
	zmq_setsockopt(pub, ZMQ_XPUB_VERBOSE, &verbose, sizeof(verbose));
	if (zmq_bind(pub, o->endpoint) < 0)
		die(o->endpoint, zmq_strerror(zmq_errno()));
	ready();
	/* XPUB hands us each subscription: start when all K subscribed, so
	 * that no consumer misses the first frames (the slow-joiner problem). */
	for (int n = 0; n < o->consumers;) {
		uint8_t msg[256];
		int len = zmq_recv(pub, msg, sizeof(msg), 0);
		if (len < 0 && zmq_errno() != EINTR)
			die("waiting for subscribers", zmq_strerror(zmq_errno()));
		if (len > 0 && msg[0] == 1)
			n++;
	}
	uint64_t start = fb_now_ns();
	for (uint64_t seq = 1; seq <= o->frames; seq++) {
		pace(o, start, seq);
		stamp(frame, seq);
		/* zmq copies the frame into the message: PUB cannot lend memory
		 * it does not own without a free callback per subscriber. */
		if (zmq_send(pub, frame, FRAME_SIZE, 0) < 0)
			die("zmq_send", zmq_strerror(zmq_errno()));
	}
	int linger = 5000;
	zmq_setsockopt(pub, ZMQ_LINGER, &linger, sizeof(linger));
	zmq_close(pub);
	zmq_ctx_term(ctx);
	free(frame);
}

/* The seeds' block done with real synchronisation: one frame in a named
 * segment; the producer posts ready_K for each consumer, each consumer posts
 * done when it has read the frame, and the producer waits for all of them
 * before it writes the next frame.  Consumers post attached when they start. */
static sem_t *open_sem(const char *base, const char *what, int k)
{
	char name[128];
	snprintf(name, sizeof(name), "%s-%s%d", base, what, k);
	sem_unlink(name);
	sem_t *s = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
	if (s == SEM_FAILED)
		die(name, strerror(errno));
	return s;
}

static void run_shm(const struct options *o)
{
	sem_t *ready_sems[MAX_CONSUMERS];
	int fd;

	shm_unlink(o->name);
	fd = shm_open(o->name, O_CREAT | O_EXCL | O_RDWR, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)FRAME_SIZE) < 0)
		die(o->name, strerror(errno));
	uint8_t *frame =
	    mmap(NULL, FRAME_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (frame == MAP_FAILED)
		die("mmap", strerror(errno));
	sem_t *done = open_sem(o->name, "done", 0);
	sem_t *attached = open_sem(o->name, "attached", 0);
	for (int k = 0; k < o->consumers; k++)
		ready_sems[k] = open_sem(o->name, "ready", k);
	ready();
	for (int k = 0; k < o->consumers; k++)
		while (sem_wait(attached) < 0 && errno == EINTR)
			;
	uint64_t start = fb_now_ns();
	for (uint64_t seq = 1; seq <= o->frames; seq++) {
		pace(o, start, seq);
		stamp(frame, seq);
		for (int k = 0; k < o->consumers; k++)
			sem_post(ready_sems[k]);
		for (int k = 0; k < o->consumers; k++)
			while (sem_wait(done) < 0 && errno == EINTR)
				;
	}
	char name[128];
	for (int k = 0; k < o->consumers; k++) {
		snprintf(name, sizeof(name), "%s-ready%d", o->name, k);
		sem_unlink(name);
	}
	snprintf(name, sizeof(name), "%s-done0", o->name);
	sem_unlink(name);
	snprintf(name, sizeof(name), "%s-attached0", o->name);
	sem_unlink(name);
	shm_unlink(o->name);
}

/* The floor (floor.h): the same frames written at the same moments, but
 * nothing handed over except a futex wake-up with the stamp. */
static void run_floor(const struct options *o)
{
	uint8_t *frame = new_frame();
	int fd;

	shm_unlink(o->name);
	fd = shm_open(o->name, O_CREAT | O_EXCL | O_RDWR, 0600);
	if (fd < 0 || ftruncate(fd, FLOOR_PAGE_SIZE) < 0)
		die(o->name, strerror(errno));
	struct floor_page *page =
	    mmap(NULL, FLOOR_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (page == MAP_FAILED)
		die("mmap", strerror(errno));
	close(fd);
	sem_t *attached = open_sem(o->name, "attached", 0);
	ready();
	for (int k = 0; k < o->consumers; k++)
		while (sem_wait(attached) < 0 && errno == EINTR)
			;
	/* A consumer that posted may not sleep yet, and the floor keeps no
	 * frame for it: the first one comes a moment later. */
	uint64_t start = fb_now_ns() + 100000000u;
	for (uint64_t seq = 1; seq <= o->frames; seq++) {
		pace(o, start, seq);
		stamp(frame, seq);
		memcpy(&page->t_pub[seq % FLOOR_STAMPS], frame + 8, 8);
		atomic_store_explicit(&page->seq, (uint32_t)seq, memory_order_release);
		syscall(SYS_futex, &page->seq, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
	}
	char name[128];
	snprintf(name, sizeof(name), "%s-attached0", o->name);
	sem_unlink(name);
	shm_unlink(o->name);
	free(frame);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"frames", required_argument, NULL, 'n'},
	    {"fps", required_argument, NULL, 'f'},
	    {"consumers", required_argument, NULL, 'k'},
	    {"socket", required_argument, NULL, 's'},
	    {"endpoint", required_argument, NULL, 'e'},
	    {"name", required_argument, NULL, 'N'},
	    {"fds", required_argument, NULL, 'd'},
	    {"slots", required_argument, NULL, 'S'},
	    {0},
	};
	struct options o = {.frames = 300, .fps = 30, .consumers = 1, .slots = 8};
	int ch;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			o.frames = strtoull(optarg, NULL, 10);
			break;
		case 'f':
			o.fps = strtod(optarg, NULL);
			break;
		case 'k':
			o.consumers = atoi(optarg);
			break;
		case 's':
			o.socket = optarg;
			break;
		case 'e':
			o.endpoint = optarg;
			break;
		case 'N':
			o.name = optarg;
			break;
		case 'S':
			o.slots = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 'd':
			for (char *tok = strtok(optarg, ","); tok && o.n_fds < MAX_CONSUMERS;
			     tok = strtok(NULL, ","))
				o.fds[o.n_fds++] = atoi(tok);
			break;
		default:
			return 2;
		}
	}
	if (optind != argc - 1 || o.consumers < 1 || o.consumers > MAX_CONSUMERS || !o.frames) {
		fprintf(stderr,
			"usage: compare-producer framebus|pipe|zmq|shm|floor --frames N --fps F "
			"--consumers K [--socket PATH | --fds A,B | --endpoint E | --name /N]\n");
		return 2;
	}
	o.transport = argv[optind];
	if (!strcmp(o.transport, "framebus"))
		run_framebus(&o);
	else if (!strcmp(o.transport, "pipe") && o.n_fds == o.consumers)
		run_pipe(&o);
	else if (!strcmp(o.transport, "zmq") && o.endpoint)
		run_zmq(&o);
	else if (!strcmp(o.transport, "shm") && o.name)
		run_shm(&o);
	else if (!strcmp(o.transport, "floor") && o.name)
		run_floor(&o);
	else
		die(o.transport, "unknown transport, or its option missing");
	return 0;
}
