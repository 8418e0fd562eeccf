/* SPDX-License-Identifier: MIT */
/*
 * ring-bench: publish-to-acquire latency and frame rate of the ring alone,
 * against the floor of a bare eventfd wake-up between the same processes.
 *
 * One producer (this process) and K subscriber processes per transport.  At a
 * fixed rate the two transports take turns half a period apart, so both see
 * the same machine; at --fps 0 (as fast as possible) they run one after the
 * other.  Latency is CLOCK_MONOTONIC at the subscriber once it has the frame
 * in hand minus CLOCK_MONOTONIC at publish.
 *
 * Last line: ring-bench k=K size=WxH fps=F p50_us=X p99_us=Y max_us=Z lost=N
 *            floor_p50_us=A floor_p99_us=B
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "framebus/framebus.h"

#define MAX_K 16

enum { FLOOR = 0, RING = 1, TRANSPORTS };
static const char *transport_name[TRANSPORTS] = {"eventfd floor", "framebus ring"};

struct options {
	uint32_t k;
	uint32_t width, height, format;
	double fps;
	uint64_t frames;
	uint32_t mode;
	uint32_t slots;
	bool touch;
};

/* Shared with the children (MAP_SHARED | MAP_ANONYMOUS). */
struct shared {
	_Atomic uint64_t floor_seq; /* last floor "frame" sent, 1-based */
	_Atomic uint32_t floor_done;
	uint64_t received[TRANSPORTS][MAX_K];
	uint64_t first_ns[TRANSPORTS][MAX_K];
	uint64_t last_ns[TRANSPORTS][MAX_K];
	uint64_t checksum[MAX_K]; /* keeps --touch reads alive */
				  /* then: uint64_t floor_stamp[frames + 1];
				   *       uint32_t latency_ns[TRANSPORTS][K][frames]; */
};

static struct shared *sh;
static uint64_t *floor_stamp;
static uint32_t *latency;

static uint32_t *lat_slot(const struct options *o, int t, uint32_t k)
{
	return latency + ((size_t)t * o->k + k) * o->frames;
}

static void record(const struct options *o, int t, uint32_t k, uint64_t n, uint64_t lat_ns)
{
	uint64_t now = fb_now_ns();
	if (n < o->frames)
		lat_slot(o, t, k)[n] = lat_ns > UINT32_MAX ? UINT32_MAX : (uint32_t)lat_ns;
	if (n == 0)
		sh->first_ns[t][k] = now;
	sh->last_ns[t][k] = now;
}

static uint64_t touch(const struct fb_frame *f, const struct fb_layout *l)
{
	uint64_t sum = 0;
	for (uint32_t p = 0; p < l->n_planes; p++) {
		const uint64_t *w = (const uint64_t *)f->data[p];
		size_t n = (size_t)l->stride[p] * l->plane_height[p] / 8;
		for (size_t i = 0; i < n; i++)
			sum += w[i];
	}
	return sum;
}

static void floor_child(const struct options *o, uint32_t k, int efd)
{
	uint64_t n = 0, count;

	while (read(efd, &count, sizeof(count)) == sizeof(count)) {
		if (atomic_load(&sh->floor_done))
			break;
		uint64_t seq = atomic_load(&sh->floor_seq);
		record(o, FLOOR, k, n++, fb_now_ns() - floor_stamp[seq]);
	}
	sh->received[FLOOR][k] = n;
	_exit(0);
}

static void ring_child(const struct options *o, uint32_t k, struct fb_subscriber_fds *fds)
{
	fb_subscriber *sub;
	const struct fb_frame *f;
	uint64_t n = 0, sum = 0;
	int r;

	if (fb_subscriber_attach(fds, &sub) < 0)
		_exit(2);
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	while ((r = fb_subscriber_acquire(sub, -1, &f)) == 0) {
		uint64_t now = fb_now_ns();
		if (o->touch)
			sum += touch(f, l);
		record(o, RING, k, n++, now - f->monotonic_ns);
		fb_subscriber_release(sub, f);
	}
	sh->received[RING][k] = n;
	sh->checksum[k] = sum;
	_exit(r == -EPIPE ? 0 : 3);
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u),
			      .tv_nsec = (long)(t % 1000000000u)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void floor_send(const struct options *o, int *efd, uint64_t seq)
{
	uint64_t one = 1;
	floor_stamp[seq] = fb_now_ns();
	atomic_store(&sh->floor_seq, seq);
	for (uint32_t k = 0; k < o->k; k++)
		(void)!write(efd[k], &one, sizeof(one));
}

static int ring_send(fb_producer *p)
{
	struct fb_frame *f;
	int r = fb_producer_acquire(p, 1000, &f);
	if (r < 0)
		return r;
	return fb_producer_publish(p, f);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

struct result {
	double p50_us, p99_us, max_us, fps;
	uint64_t lost;
};

static struct result summarise(const struct options *o, int t)
{
	size_t n = 0;
	uint32_t *all = malloc(sizeof(uint32_t) * o->k * o->frames);
	struct result r = {0};
	double fps_sum = 0;

	for (uint32_t k = 0; k < o->k; k++) {
		uint64_t got = sh->received[t][k] < o->frames ? sh->received[t][k] : o->frames;
		memcpy(all + n, lat_slot(o, t, k), got * sizeof(uint32_t));
		n += got;
		r.lost += o->frames - got;
		uint64_t span = sh->last_ns[t][k] - sh->first_ns[t][k];
		if (got > 1 && span)
			fps_sum += (double)(got - 1) * 1e9 / (double)span;
	}
	if (n) {
		qsort(all, n, sizeof(uint32_t), cmp_u32);
		r.p50_us = all[n / 2] / 1000.0;
		r.p99_us = all[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] / 1000.0;
		r.max_us = all[n - 1] / 1000.0;
	}
	r.fps = fps_sum / o->k;
	free(all);
	return r;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: ring-bench [options]\n"
		"  -k, --subscribers K   subscriber processes (default 4, at most %d)\n"
		"  -s, --size WxH        frame size (default 1920x1080)\n"
		"  -f, --format NAME     gray8, bgr24, rgb24, bgra, nv12, yuv420p (default bgr24)\n"
		"  -r, --fps F           publish rate, 0 = as fast as possible (default 30)\n"
		"  -n, --frames N        frames per transport (default 300)\n"
		"  -m, --mode MODE       latest or queue (default queue)\n"
		"      --slots N         ring slots (default 8)\n"
		"  -t, --touch           subscribers read every byte of every frame\n",
		MAX_K);
}

static int parse(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
	    {"subscribers", required_argument, NULL, 'k'},
	    {"size", required_argument, NULL, 's'},
	    {"format", required_argument, NULL, 'f'},
	    {"fps", required_argument, NULL, 'r'},
	    {"frames", required_argument, NULL, 'n'},
	    {"mode", required_argument, NULL, 'm'},
	    {"slots", required_argument, NULL, 'S'},
	    {"touch", no_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int c, fmt;

	*o = (struct options){.k = 4,
			      .width = 1920,
			      .height = 1080,
			      .format = FB_FORMAT_BGR24,
			      .fps = 30,
			      .frames = 300,
			      .mode = FB_MODE_QUEUE,
			      .slots = 8};
	while ((c = getopt_long(argc, argv, "k:s:f:r:n:m:th", longopts, NULL)) != -1) {
		switch (c) {
		case 'k':
			o->k = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 's':
			if (sscanf(optarg, "%ux%u", &o->width, &o->height) != 2) {
				fprintf(stderr, "ring-bench: --size wants WxH, got '%s'\n", optarg);
				return -1;
			}
			break;
		case 'f':
			fmt = fb_format_from_name(optarg);
			if (fmt < 0) {
				fprintf(stderr, "ring-bench: unknown format '%s'\n", optarg);
				return -1;
			}
			o->format = (uint32_t)fmt;
			break;
		case 'r':
			o->fps = strtod(optarg, NULL);
			break;
		case 'n':
			o->frames = strtoull(optarg, NULL, 10);
			break;
		case 'm':
			if (strcmp(optarg, "latest") && strcmp(optarg, "queue")) {
				fprintf(stderr, "ring-bench: --mode is latest or queue, not '%s'\n",
					optarg);
				return -1;
			}
			o->mode = strcmp(optarg, "latest") ? FB_MODE_QUEUE : FB_MODE_LATEST;
			break;
		case 'S':
			o->slots = (uint32_t)strtoul(optarg, NULL, 10);
			break;
		case 't':
			o->touch = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (o->k < 1 || o->k > MAX_K || o->frames < 2 || o->fps < 0) {
		fprintf(stderr, "ring-bench: need 1 <= K <= %d, at least 2 frames and fps >= 0\n",
			MAX_K);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct fb_ring_params params;
	fb_producer *producer;
	pid_t pids[TRANSPORTS][MAX_K];
	int efd[MAX_K];
	int r;

	if (parse(argc, argv, &o) < 0)
		return 2;
	params = (struct fb_ring_params){.width = o.width,
					 .height = o.height,
					 .format = o.format,
					 .slots = o.slots,
					 .policy = FB_POLICY_DROP};
	r = fb_producer_new(&params, &producer);
	if (r < 0) {
		fprintf(stderr, "ring-bench: cannot create the ring: %s\n", fb_strerror(r));
		return 1;
	}

	size_t size = sizeof(struct shared) + sizeof(uint64_t) * (o.frames + 1) +
		      sizeof(uint32_t) * TRANSPORTS * o.k * o.frames;
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1,
		  0);
	if (sh == MAP_FAILED) {
		perror("ring-bench: mmap");
		return 1;
	}
	floor_stamp = (uint64_t *)(sh + 1);
	latency = (uint32_t *)(floor_stamp + o.frames + 1);

	for (uint32_t k = 0; k < o.k; k++) {
		struct fb_subscriber_fds fds;
		uint32_t id;
		efd[k] = eventfd(0, EFD_CLOEXEC);
		r = fb_producer_add_subscriber(producer, o.mode, 1, &fds, &id);
		if (efd[k] < 0 || r < 0) {
			fprintf(stderr, "ring-bench: cannot add subscriber: %s\n", fb_strerror(r));
			return 1;
		}
		for (int t = 0; t < TRANSPORTS; t++) {
			pids[t][k] = fork();
			if (pids[t][k] == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				if (t == FLOOR)
					floor_child(&o, k, efd[k]);
				ring_child(&o, k, &fds);
			}
		}
		fb_subscriber_fds_close(&fds);
	}
	usleep(100000); /* let every child reach its wait */

	uint64_t period = o.fps > 0 ? (uint64_t)(1e9 / o.fps) : 0;
	uint64_t published = 0, dropped = 0, ring_start = 0, ring_end = 0;
	if (period) {
		uint64_t t0 = fb_now_ns() + period;
		for (uint64_t i = 1; i <= o.frames; i++) {
			sleep_until(t0 + (i - 1) * period);
			floor_send(&o, efd, i);
			sleep_until(t0 + (i - 1) * period + period / 2);
			r = ring_send(producer);
			published += r == 0;
			dropped += r == -ENOBUFS;
		}
	} else {
		for (uint64_t i = 1; i <= o.frames; i++)
			floor_send(&o, efd, i);
		usleep(100000);
		ring_start = fb_now_ns();
		for (uint64_t i = 1; i <= o.frames; i++) {
			r = ring_send(producer);
			published += r == 0;
			dropped += r == -ENOBUFS;
		}
		ring_end = fb_now_ns();
	}
	usleep(100000); /* let the last wake-ups land */
	atomic_store(&sh->floor_done, 1);
	for (uint32_t k = 0; k < o.k; k++) {
		uint64_t one = 1;
		(void)!write(efd[k], &one, sizeof(one));
	}
	fb_producer_free(producer); /* end of stream for the ring children */
	int failed = 0;
	for (int t = 0; t < TRANSPORTS; t++)
		for (uint32_t k = 0; k < o.k; k++) {
			int status;
			waitpid(pids[t][k], &status, 0);
			failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
		}
	if (failed) {
		fprintf(stderr, "ring-bench: %d subscriber processes failed\n", failed);
		return 1;
	}

	struct result res[TRANSPORTS];
	printf("ring-bench: K=%u, %ux%u %s, %s, %lu frames, %s mode, %u slots%s\n", o.k, o.width,
	       o.height, fb_format_name(o.format), period ? "paced" : "as fast as possible",
	       (unsigned long)o.frames, o.mode == FB_MODE_QUEUE ? "queue" : "latest", o.slots,
	       o.touch ? ", frames read in full" : ", frames untouched");
	if (period)
		printf("rate: %.1f fps per transport, the two interleaved half a period apart\n",
		       o.fps);
	printf("%-15s %10s %10s %10s %12s %8s\n", "transport", "p50_us", "p99_us", "max_us",
	       "frames/s", "lost");
	for (int t = 0; t < TRANSPORTS; t++) {
		res[t] = summarise(&o, t);
		printf("%-15s %10.1f %10.1f %10.1f %12.0f %8lu\n", transport_name[t], res[t].p50_us,
		       res[t].p99_us, res[t].max_us, res[t].fps, (unsigned long)res[t].lost);
	}
	for (int t = 0; t < TRANSPORTS; t++)
		for (uint32_t k = 0; k < o.k; k++) {
			uint32_t *l = lat_slot(&o, t, k);
			uint64_t n = sh->received[t][k] < o.frames ? sh->received[t][k] : o.frames;
			qsort(l, n, sizeof(uint32_t), cmp_u32);
			printf("  %s sub %u p50 %.1f\n", transport_name[t], k, l[n / 2] / 1000.0);
		}
	printf("ring: %lu published", (unsigned long)published);
	if (ring_end > ring_start)
		printf(" at %.0f frames/s",
		       (double)published * 1e9 / (double)(ring_end - ring_start));
	printf(", %lu dropped (every slot held); frames/s above is what each subscriber got\n",
	       (unsigned long)dropped);
	printf("ring-bench k=%u size=%ux%u fps=%.1f p50_us=%.1f p99_us=%.1f max_us=%.1f lost=%lu "
	       "floor_p50_us=%.1f floor_p99_us=%.1f\n",
	       o.k, o.width, o.height, res[RING].fps, res[RING].p50_us, res[RING].p99_us,
	       res[RING].max_us, (unsigned long)res[RING].lost, res[FLOOR].p50_us,
	       res[FLOOR].p99_us);
	return 0;
}
