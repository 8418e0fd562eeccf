/* SPDX-License-Identifier: MIT */
/* Stress of the acquire-versus-overwrite race: a producer publishing as fast
 * as it can into a small ring while subscriber processes acquire, check every
 * byte of every frame they get, and release.  ring-threads-test.c runs the
 * same race between threads. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "test-helpers.h"

#define SUBSCRIBERS 3
#define RUN_NS 1500000000ull

struct tally {
	uint64_t frames;
	uint64_t torn;
	uint64_t disorder;
	int end; /* what ended the loop: -EPIPE expected */
};

/* Acquire/check/release until the stream ends. */
static struct tally hammer(fb_subscriber *sub)
{
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	const struct fb_frame *f;
	struct tally t = {0};
	uint64_t last = 0;

	while ((t.end = fb_subscriber_acquire(sub, -1, &f)) == 0) {
		t.torn += !th_frame_is_whole(f, l);
		t.disorder += f->seq <= last;
		last = f->seq;
		t.frames++;
		fb_subscriber_release(sub, f);
	}
	return t;
}

/* Publish as fast as possible for RUN_NS; returns frames published. */
static uint64_t produce(fb_producer *p)
{
	const struct fb_layout *l = fb_producer_get_layout(p);
	uint64_t until = fb_now_ns() + RUN_NS, seq = 0;

	while (fb_now_ns() < until) {
		struct fb_frame *f;
		if (fb_producer_acquire(p, 0, &f) < 0)
			continue;
		th_fill_frame(f, l, seq + 1);
		cr_assert_eq(fb_producer_publish(p, f), 0);
		seq = f->seq;
	}
	return seq;
}

static const uint32_t modes[SUBSCRIBERS] = {FB_MODE_LATEST, FB_MODE_QUEUE, FB_MODE_LATEST};

Test(ring_race, processes_never_see_a_torn_frame)
{
	struct fb_ring_params params = th_params(256, 128, FB_FORMAT_BGRA, 3, FB_POLICY_DROP);
	fb_producer *p;
	pid_t pid[SUBSCRIBERS];
	int report[SUBSCRIBERS][2];

	cr_assert_eq(fb_producer_new(&params, &p), 0);
	for (int i = 0; i < SUBSCRIBERS; i++) {
		struct fb_subscriber_fds fds;
		uint32_t id;
		cr_assert_eq(fb_producer_add_subscriber(p, modes[i], 1, &fds, &id), 0);
		cr_assert_eq(pipe(report[i]), 0);
		pid[i] = fork();
		cr_assert_geq(pid[i], 0);
		if (pid[i] == 0) {
			fb_subscriber *sub;
			if (fb_subscriber_attach(&fds, &sub) < 0)
				_exit(1);
			struct tally t = hammer(sub);
			_exit(write(report[i][1], &t, sizeof(t)) == sizeof(t) ? 0 : 2);
		}
		fb_subscriber_fds_close(&fds);
		close(report[i][1]);
	}
	uint64_t published = produce(p);
	fb_producer_free(p);
	for (int i = 0; i < SUBSCRIBERS; i++) {
		struct tally t;
		cr_assert_eq(read(report[i][0], &t, sizeof(t)), (ssize_t)sizeof(t));
		cr_assert_eq(th_wait(pid[i]), 0);
		cr_assert_eq(t.end, -EPIPE, "subscriber %d ended with %s", i, fb_strerror(t.end));
		cr_assert_eq(t.torn, 0, "subscriber %d saw %lu torn frames of %lu", i,
			     (unsigned long)t.torn, (unsigned long)t.frames);
		cr_assert_eq(t.disorder, 0, "subscriber %d", i);
		cr_assert_gt(t.frames, 100, "subscriber %d checked only %lu frames", i,
			     (unsigned long)t.frames);
	}
	cr_log_info("published %lu frames", (unsigned long)published);
}
