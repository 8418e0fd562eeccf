/* SPDX-License-Identifier: MIT */
/*
 * collector: the C side of the seeds' loop, on a libuv event loop.
 *
 * A capture stream (cam0) goes to a Python analytic (python/examples/gray.py)
 * that publishes processed frames (cam0.gray) with source_seq naming the
 * frame each was made from and its result in meta.  This program takes both
 * streams: it remembers when each source frame was captured, matches every
 * processed frame to its source by source_seq, reads the result, and prints
 * the capture-to-result latency per frame (or a live line every second) and
 * p50/p99 at the end.
 *
 * The library needs no thread of its own: each subscriber's descriptor and
 * the client's socket go into the loop as uv_poll handles; when one is
 * readable, fb_subscriber_acquire(.., 0, ..) is called until -EAGAIN, which
 * re-arms the descriptor.  When framebusd stops or restarts, the client
 * connects again by itself and each subscription is made again with
 * fb_client_resubscribe(), from a timer, until the daemon and the stream
 * are back.
 *
 * With --publish NAME it also publishes a results stream: for each matched
 * result a record {"seq": ..., "capture_to_result_us": ...} made from it, so
 * its source_seq names the result and its trace the camera frame.
 *
 *   framebus-collector [--socket PATH] [--source cam0] [--processed cam0.gray]
 *                      [--publish NAME] [--frames N] [--seconds N] [--live]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <framebus/framebus.h>

/* Bytes of a --publish record, at most. */
#define RECORD_MAX 128

/* Capture times of the last source frames, by seq. */
#define HISTORY 4096

struct collector;

/* One subscription, followed across daemon restarts. */
struct subscription {
	struct collector *c;
	const char *name;
	fb_subscriber *sub;
	uv_poll_t *poll;     /* on sub's descriptor; a new one for each subscriber */
	fb_subscriber *lost; /* ended with its daemon: to subscribe again */
	uv_poll_cb ready;
};

struct collector {
	uv_loop_t *loop;
	fb_client *client;
	struct subscription source, processed;
	uv_poll_t client_poll;
	uv_signal_t sigint, sigterm;
	uv_timer_t tick, deadline, resubscribe;
	bool live;
	uint64_t max_frames;
	struct {
		uint64_t seq;
		uint64_t captured_ns;
	} history[HISTORY];
	uint64_t *latency_ns; /* one per matched result */
	size_t n_latency, cap_latency;
	uint64_t results, unmatched, missed;
	fb_producer *latency; /* --publish: the results stream of latencies */
	uint64_t unsent;      /* latency records its subscribers left no room for */
	/* for the live line */
	uint64_t tick_results, tick_start_ns;
	size_t tick_first_latency;
	uint64_t started_ns; /* results published before this waited in the ring */
	const char *stop_reason;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double percentile_us(uint64_t *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof(v[0]), cmp_u64);
	size_t i = (size_t)(p / 100.0 * (double)n);
	return (double)v[i < n ? i : n - 1] / 1e3;
}

static void stop(struct collector *c, const char *why)
{
	if (!c->stop_reason)
		c->stop_reason = why;
	uv_stop(c->loop);
}

/* Watch s's descriptor (a new subscriber: a new handle). */
static int watch(struct subscription *s)
{
	s->poll = malloc(sizeof(*s->poll));
	if (!s->poll)
		return -ENOMEM;
	uv_poll_init(s->c->loop, s->poll, fb_subscriber_get_fd(s->sub));
	s->poll->data = s->c;
	return uv_poll_start(s->poll, UV_READABLE, s->ready);
}

static void free_handle(uv_handle_t *handle)
{
	free(handle);
}

static void unwatch(struct subscription *s)
{
	if (s->poll)
		uv_close((uv_handle_t *)s->poll, free_handle);
	s->poll = NULL;
}

/* The resubscribe timer: each lost subscription, made again once its daemon
 * and stream are back. */
static void on_resubscribe(uv_timer_t *handle)
{
	struct collector *c = handle->data;
	struct subscription *all[] = {&c->source, &c->processed};
	bool waiting = false;

	for (size_t i = 0; i < 2; i++) {
		struct subscription *s = all[i];
		if (!s->lost)
			continue;
		int r = fb_client_resubscribe(c->client, s->lost, &s->sub);
		if (r == -EAGAIN) {
			waiting = true;
			continue;
		}
		fb_client_unsubscribe(c->client, s->lost);
		s->lost = NULL;
		if (r < 0 || watch(s) < 0) {
			stop(c, r == -EPIPE
				    ? "a stream ended while framebusd was away"
				    : "could not subscribe again after framebusd came back");
			return;
		}
		fprintf(stderr, "collector: %s: subscribed again\n", s->name);
	}
	if (!waiting)
		uv_timer_stop(handle);
}

/* After acquire failed with r: a subscription whose daemon went away (or
 * restarted) waits for the resubscribe timer.  Returns false if it ended
 * for good. */
static bool follow(struct subscription *s, int r)
{
	if (r != -EOWNERDEAD && r != -ECANCELED)
		return false;
	unwatch(s);
	s->lost = s->sub;
	s->sub = NULL;
	fprintf(stderr, "collector: %s: %s; waiting for framebusd\n", s->name, fb_strerror(r));
	uv_timer_start(&s->c->resubscribe, on_resubscribe, 250, 250);
	return true;
}

/* Remember when every source frame waiting now was captured. */
static void drain_source(struct collector *c)
{
	const struct fb_frame *f;
	int r;

	if (!c->source.sub)
		return;
	while ((r = fb_subscriber_acquire(c->source.sub, 0, &f)) == 0) {
		c->history[f->seq % HISTORY].seq = f->seq;
		c->history[f->seq % HISTORY].captured_ns = f->monotonic_ns;
		fb_subscriber_release(c->source.sub, f);
	}
	if (r != -EAGAIN && r != -EPIPE && !follow(&c->source, r))
		fprintf(stderr, "collector: source %s: %s\n", c->source.name, fb_strerror(r));
}

static void on_source(uv_poll_t *handle, int status, int events)
{
	drain_source(handle->data);
}

static void record_latency(struct collector *c, uint64_t ns)
{
	if (c->n_latency == c->cap_latency) {
		size_t cap = c->cap_latency ? 2 * c->cap_latency : 1024;
		uint64_t *grown = realloc(c->latency_ns, cap * sizeof(*grown));
		if (!grown)
			return;
		c->latency_ns = grown;
		c->cap_latency = cap;
	}
	c->latency_ns[c->n_latency++] = ns;
}

/* One record of the --publish stream, about result f. */
static void send_latency(struct collector *c, const struct fb_frame *f, uint64_t latency_ns)
{
	struct fb_frame *out;

	if (fb_producer_acquire(c->latency, 0, &out) < 0) {
		c->unsent++; /* every slot held: a drop stream never waits */
		return;
	}
	fb_frame_made_from(out, f);
	out->meta_size = (uint32_t)snprintf(
	    (char *)out->meta, RECORD_MAX, "{\"seq\": %" PRIu64 ", \"capture_to_result_us\": %.1f}",
	    f->seq, (double)latency_ns / 1e3);
	fb_producer_publish(c->latency, out);
}

static void on_processed(uv_poll_t *handle, int status, int events)
{
	struct collector *c = handle->data;
	const struct fb_frame *f;
	int r;

	/* The source frame was published before its result: take it first. */
	drain_source(c);
	if (!c->processed.sub)
		return;
	while ((r = fb_subscriber_acquire(c->processed.sub, 0, &f)) == 0) {
		uint64_t seen = fb_now_ns();
		c->missed += f->missed;
		c->results++;
		c->tick_results++;
		bool matched = f->source_seq &&
			       c->history[f->source_seq % HISTORY].seq == f->source_seq &&
			       f->monotonic_ns >= c->started_ns;
		uint64_t latency =
		    matched ? seen - c->history[f->source_seq % HISTORY].captured_ns : 0;
		if (!matched) {
			c->unmatched++;
		} else {
			record_latency(c, latency);
			if (c->latency)
				send_latency(c, f, latency);
		}
		if (!c->live) {
			printf("result seq=%" PRIu64 " source_seq=%" PRIu64 " ", f->seq,
			       f->source_seq);
			if (matched)
				printf("capture_to_result_us=%.1f", (double)latency / 1e3);
			else /* waited in the ring before we came, or its source did */
				printf("capture_to_result_us=?");
			printf(" meta=%.*s\n", (int)f->meta_size, (const char *)f->meta);
		}
		fb_subscriber_release(c->processed.sub, f);
		if (c->max_frames && c->results >= c->max_frames) {
			stop(c, "the frame count was reached");
			return;
		}
	}
	if (r == -EPIPE)
		stop(c, "the processed stream ended");
	else if (r != -EAGAIN && !follow(&c->processed, r))
		stop(c, fb_strerror(r));
}

/* Events, and connecting again while framebusd is away (the descriptor
 * wakes every 250 ms then). */
static void on_client(uv_poll_t *handle, int status, int events)
{
	struct collector *c = handle->data;
	if (status < 0)
		stop(c, "the connection to framebusd broke");
	else
		fb_client_process(c->client);
}

static void on_signal(uv_signal_t *handle, int signum)
{
	stop(handle->data, signum == SIGINT ? "interrupted" : "terminated");
}

static void on_deadline(uv_timer_t *handle)
{
	stop(handle->data, "the time was up");
}

/* The live line: results per second, losses and latency over the last second. */
static void on_tick(uv_timer_t *handle)
{
	struct collector *c = handle->data;
	struct fb_stream_info info = {0};
	uint64_t now = fb_now_ns();
	size_t n = c->n_latency - c->tick_first_latency;
	uint64_t *window = c->latency_ns + c->tick_first_latency;

	fb_client_get_stream(c->client, c->processed.name, &info);
	printf("collector: %5.1f results/s  dropped by %s %" PRIu64 "  missed here %" PRIu64
	       "  capture-to-result p50 %7.1f us  p99 %7.1f us\n",
	       (double)c->tick_results * 1e9 / (double)(now - c->tick_start_ns), c->processed.name,
	       info.dropped, c->missed, percentile_us(window, n, 50), percentile_us(window, n, 99));
	fflush(stdout);
	c->tick_results = 0;
	c->tick_start_ns = now;
	c->tick_first_latency = c->n_latency;
}

static int subscribe(struct collector *c, struct subscription *s, uv_poll_cb ready)
{
	s->c = c;
	s->ready = ready;
	int r = fb_client_subscribe(c->client, s->name, FB_MODE_QUEUE, 0, &s->sub);
	if (r < 0) {
		const char *why = fb_client_last_error(c->client);
		fprintf(stderr, "collector: cannot subscribe to '%s': %s\n", s->name,
			why[0] ? why : fb_strerror(r));
		return r;
	}
	return watch(s);
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: framebus-collector [--socket PATH] [--source NAME] [--processed NAME]\n"
		"                          [--publish NAME] [--frames N] [--seconds N] [--live]\n"
		"Match each processed frame to its source frame by source_seq and print\n"
		"its result and capture-to-result latency (--live: one line a second),\n"
		"then p50/p99; --publish: each latency also as a record of results stream\n"
		"NAME.  Defaults: --source cam0 --processed SOURCE.gray\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"source", required_argument, NULL, 'i'},
	    {"processed", required_argument, NULL, 'o'},
	    {"frames", required_argument, NULL, 'n'},
	    {"seconds", required_argument, NULL, 't'},
	    {"live", no_argument, NULL, 'l'},
	    {"publish", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	static struct collector c = {.source.name = "cam0"};
	const char *socket_path = NULL, *publish = NULL;
	char processed_default[FB_NAME_MAX + 8];
	double seconds = 0;
	int ch, r;

	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			socket_path = optarg;
			break;
		case 'i':
			c.source.name = optarg;
			break;
		case 'o':
			c.processed.name = optarg;
			break;
		case 'n':
			c.max_frames = strtoull(optarg, NULL, 10);
			break;
		case 't':
			seconds = strtod(optarg, NULL);
			break;
		case 'l':
			c.live = true;
			break;
		case 'p':
			publish = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!c.processed.name) {
		snprintf(processed_default, sizeof(processed_default), "%s.gray", c.source.name);
		c.processed.name = processed_default;
	}

	c.loop = uv_default_loop();
	c.started_ns = fb_now_ns();
	r = fb_client_connect(socket_path, "framebus-collector", &c.client);
	if (r < 0) {
		fprintf(stderr, "collector: cannot connect to framebusd: %s\n", fb_strerror(r));
		return 1;
	}
	if (publish && (r = fb_client_publish_results(c.client, publish, 16, FB_POLICY_DROP,
						      RECORD_MAX, &c.latency)) < 0) {
		const char *why = fb_client_last_error(c.client);
		fprintf(stderr, "collector: cannot publish '%s': %s\n", publish,
			why[0] ? why : fb_strerror(r));
		return 1;
	}
	if (subscribe(&c, &c.source, on_source) < 0 ||
	    subscribe(&c, &c.processed, on_processed) < 0)
		return 1;
	uv_poll_init(c.loop, &c.client_poll, fb_client_get_fd(c.client));
	c.client_poll.data = &c;
	uv_poll_start(&c.client_poll, UV_READABLE | UV_DISCONNECT, on_client);
	uv_signal_init(c.loop, &c.sigint);
	uv_signal_init(c.loop, &c.sigterm);
	c.sigint.data = c.sigterm.data = &c;
	uv_signal_start(&c.sigint, on_signal, SIGINT);
	uv_signal_start(&c.sigterm, on_signal, SIGTERM);
	uv_timer_init(c.loop, &c.tick);
	uv_timer_init(c.loop, &c.deadline);
	uv_timer_init(c.loop, &c.resubscribe);
	c.tick.data = c.deadline.data = c.resubscribe.data = &c;
	c.tick_start_ns = fb_now_ns();
	if (c.live)
		uv_timer_start(&c.tick, on_tick, 1000, 1000);
	if (seconds > 0)
		uv_timer_start(&c.deadline, on_deadline, (uint64_t)(seconds * 1000), 0);
	fprintf(stderr, "collector: matching %s to %s\n", c.processed.name, c.source.name);

	uv_run(c.loop, UV_RUN_DEFAULT);

	printf("collector: stopped (%s): %" PRIu64 " results, %" PRIu64 " missed, %" PRIu64
	       " unmatched, %" PRIu64 " not published; capture-to-result p50 %.1f us  p99 %.1f us"
	       "  max %.1f us\n",
	       c.stop_reason ? c.stop_reason : "?", c.results, c.missed, c.unmatched, c.unsent,
	       percentile_us(c.latency_ns, c.n_latency, 50),
	       percentile_us(c.latency_ns, c.n_latency, 99),
	       percentile_us(c.latency_ns, c.n_latency, 100));
	/* Close every handle so that the loop ends clean (valgrind-quiet). */
	unwatch(&c.source);
	unwatch(&c.processed);
	uv_close((uv_handle_t *)&c.client_poll, NULL);
	uv_close((uv_handle_t *)&c.resubscribe, NULL);
	uv_close((uv_handle_t *)&c.sigint, NULL);
	uv_close((uv_handle_t *)&c.sigterm, NULL);
	uv_close((uv_handle_t *)&c.tick, NULL);
	uv_close((uv_handle_t *)&c.deadline, NULL);
	uv_run(c.loop, UV_RUN_DEFAULT);
	uv_loop_close(c.loop);
	struct subscription *all[] = {&c.source, &c.processed};
	for (size_t i = 0; i < 2; i++) {
		fb_client_unsubscribe(c.client, all[i]->sub);
		fb_client_unsubscribe(c.client, all[i]->lost);
	}
	if (c.latency)
		fb_client_unpublish(c.client, c.latency);
	fb_client_free(c.client);
	free(c.latency_ns);
	return c.stop_reason && !strcmp(c.stop_reason, "the connection to framebusd broke") ? 1 : 0;
}
