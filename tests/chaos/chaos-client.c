/* SPDX-License-Identifier: MIT */
/*
 * chaos-client: a C client for tests/chaos/chaos.py, on a poll() loop the
 * way an event-loop program uses libframebus: it subscribes to a stream, or
 * publishes one at 30 fps, and goes on across daemon restarts by itself.
 * One line on stdout per event, for the driver:
 *
 *   frames N           every 10 frames read (subscriber)
 *   published N        every 30 frames published (publisher)
 *   lost | connected   the connection callback
 *   subscribed         (again) to the stream
 *   error TEXT         something no restart explains: exits 1
 *
 *   chaos-client SOCKET sub STREAM
 *   chaos-client SOCKET pub NAME
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <framebus/framebus.h>

struct chaos {
	fb_client *client;
	fb_subscriber *sub;
	fb_subscriber *lost; /* ended with the daemon: to subscribe again */
	fb_producer *producer;
	const char *stream;
	uint64_t count;
};

static void on_connection(void *userdata, bool connected, const char *detail)
{
	printf("%s %s\n", connected ? "connected" : "lost", detail);
}

static void try_subscribe(struct chaos *c)
{
	if (fb_client_check(c->client) < 0 && fb_client_reconnect(c->client) < 0)
		return;
	int r = fb_client_subscribe(c->client, c->stream, FB_MODE_LATEST, 0, &c->sub);
	if (r == 0) {
		printf("subscribed\n");
	} else if (r != -ENOENT && r != -EAGAIN && r != -ECONNRESET) {
		/* (-EAGAIN: the stream is starting, its size not known yet) */
		printf("error subscribing: %s\n", fb_strerror(r));
		exit(1);
	}
}

/* Subscribe again to what the daemon that went away served. */
static void try_resubscribe(struct chaos *c)
{
	int r = fb_client_resubscribe(c->client, c->lost, &c->sub);
	if (r == -EAGAIN)
		return; /* not back yet */
	if (r == 0)
		printf("subscribed\n");
	else if (r != -EPIPE && r != -ECANCELED) {
		printf("error subscribing again: %s\n", fb_strerror(r));
		exit(1);
	}
	/* (-EPIPE, -ECANCELED: it ended for good; try_subscribe() waits for
	 * a stream of that name) */
	fb_client_unsubscribe(c->client, c->lost);
	c->lost = NULL;
}

/* Read every frame waiting; set the subscription aside once it ended. */
static void read_frames(struct chaos *c)
{
	const struct fb_frame *f;
	int r;

	while ((r = fb_subscriber_acquire(c->sub, 0, &f)) == 0) {
		/* Touch the frame, as a consumer would. */
		volatile uint8_t sum = 0;
		for (uint32_t i = 0; i < fb_subscriber_get_layout(c->sub)->frame_size; i += 64)
			sum += f->data[0][i];
		fb_subscriber_release(c->sub, f);
		if (++c->count % 10 == 0)
			printf("frames %llu\n", (unsigned long long)c->count);
	}
	/* The daemon went away (or restarted), or the stream ended with its
	 * publisher: subscribe again once it is back. */
	if (r == -EOWNERDEAD || r == -ECANCELED || r == -EPIPE) {
		printf("ended %s\n", fb_strerror(r));
		c->lost = c->sub;
		c->sub = NULL;
	} else if (r != -EAGAIN) {
		printf("error reading: %s\n", fb_strerror(r));
		exit(1);
	}
}

static void publish_frame(struct chaos *c)
{
	struct fb_frame *f;
	int r = fb_producer_acquire(c->producer, 0, &f);
	if (r == -ENOBUFS)
		return;
	if (r < 0) {
		printf("error publishing: %s\n", fb_strerror(r));
		exit(1);
	}
	const struct fb_layout *l = fb_producer_get_layout(c->producer);
	memset(f->data[0], (int)(c->count & 0xff), l->frame_size);
	f->source_seq = c->count;
	fb_producer_publish(c->producer, f);
	if (++c->count % 30 == 0)
		printf("published %llu\n", (unsigned long long)c->count);
}

int main(int argc, char **argv)
{
	struct chaos c = {0};
	int r;

	if (argc != 4 || (strcmp(argv[2], "sub") != 0 && strcmp(argv[2], "pub") != 0)) {
		fprintf(stderr, "usage: chaos-client SOCKET sub|pub STREAM\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	c.stream = argv[3];
	char name[32];
	snprintf(name, sizeof(name), "chaos-client[%d]", (int)getpid());
	r = fb_client_connect(argv[1], name, &c.client);
	if (r < 0) {
		printf("error connecting: %s\n", fb_strerror(r));
		return 1;
	}
	fb_client_set_connection_callback(c.client, on_connection, &c);
	if (strcmp(argv[2], "pub") == 0) {
		struct fb_ring_params params = {.width = 160, .height = 120,
						 .format = FB_FORMAT_GRAY8, .slots = 4,
						 .policy = FB_POLICY_DROP, .meta_max = 64};
		r = fb_client_publish(c.client, c.stream, &params, &c.producer);
		if (r < 0) {
			printf("error publishing: %s\n", fb_strerror(r));
			return 1;
		}
	}
	uint64_t next_frame = fb_now_ns();
	for (;;) {
		if (c.lost)
			try_resubscribe(&c);
		if (!c.producer && !c.sub && !c.lost)
			try_subscribe(&c);
		struct pollfd pfd[2] = {{.fd = fb_client_get_fd(c.client), .events = POLLIN},
					{.fd = c.sub ? fb_subscriber_get_fd(c.sub) : -1,
					 .events = POLLIN}};
		int timeout = 100;
		if (c.producer) {
			uint64_t now = fb_now_ns();
			timeout = next_frame > now ? (int)((next_frame - now) / 1000000u) : 0;
		}
		if (poll(pfd, 2, timeout) < 0 && errno != EINTR)
			return 1;
		if (pfd[0].revents)
			fb_client_process(c.client); /* events; connects again when due */
		if (c.sub && pfd[1].revents)
			read_frames(&c);
		if (c.producer && fb_now_ns() >= next_frame) {
			publish_frame(&c);
			next_frame += 33333333u;
		}
	}
}
