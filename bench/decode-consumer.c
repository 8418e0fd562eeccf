/* SPDX-License-Identifier: MIT */
/*
 * decode-consumer: the subscriber side of `scripts/bench decode`.  Subscribes
 * to a stream in queue mode, takes FRAMES frames as they come without
 * touching them, and prints the rate it got them at (from the first frame to
 * the last) and how many it missed.
 *
 * usage: decode-consumer SOCKET STREAM FRAMES
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "framebus/framebus.h"

int main(int argc, char **argv)
{
	fb_client *c;
	fb_subscriber *sub;
	const struct fb_frame *f;
	uint64_t frames, got = 0, missed = 0, first = 0, last = 0;
	int r;

	if (argc != 4 || (frames = strtoull(argv[3], NULL, 10)) < 2) {
		fprintf(stderr, "usage: decode-consumer SOCKET STREAM FRAMES (FRAMES >= 2)\n");
		return 2;
	}
	r = fb_client_connect(argv[1], "decode-bench", &c);
	if (r < 0) {
		fprintf(stderr, "decode-consumer: connect: %s\n", fb_strerror(r));
		return 1;
	}
	for (int i = 0;
	     i < 500 && (r = fb_client_subscribe(c, argv[2], FB_MODE_QUEUE, 1, &sub)) == -EAGAIN;
	     i++) {
		struct timespec ts = {0, 10000000};
		nanosleep(&ts, NULL);
	}
	if (r < 0) {
		fprintf(stderr, "decode-consumer: subscribe: %s\n", fb_client_last_error(c));
		return 1;
	}
	while (got < frames && (r = fb_subscriber_acquire(sub, 10000, &f)) == 0) {
		last = fb_now_ns();
		if (!first)
			first = last;
		else
			missed += f->missed;
		got++;
		fb_subscriber_release(sub, f);
	}
	if (got < frames) {
		fprintf(stderr, "decode-consumer: after %llu frames: %s\n", (unsigned long long)got,
			fb_strerror(r));
		return 1;
	}
	printf("%.2f %llu\n", (double)(got - 1) * 1e9 / (double)(last - first),
	       (unsigned long long)missed);
	fb_client_unsubscribe(c, sub);
	fb_client_free(c);
	return 0;
}
