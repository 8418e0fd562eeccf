/* SPDX-License-Identifier: MIT */
/* Stress of the acquire-versus-overwrite race: a producer publishing as fast
 * as it can into a small ring while subscribers acquire, check every byte of
 * every frame they get, and release, in processes and in threads. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
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

	while ((t.end = fb_subscriber_acquire(sub, 5000, &f)) == 0) {
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
	uint64_t until = th_now_ns() + RUN_NS, seq = 0;

	while (th_now_ns() < until) {
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

struct thread_sub {
	pthread_t thread;
	fb_subscriber *sub;
	struct tally tally;
};

static void *thread_main(void *arg)
{
	struct thread_sub *ts = arg;
	ts->tally = hammer(ts->sub);
	fb_subscriber_free(ts->sub);
	return NULL;
}

Test(ring_race, threads_never_see_a_torn_frame)
{
	struct fb_ring_params params = th_params(128, 64, FB_FORMAT_YUV420P, 3, FB_POLICY_DROP);
	struct thread_sub subs[SUBSCRIBERS];
	fb_producer *p;

	cr_assert_eq(fb_producer_new(&params, &p), 0);
	for (int i = 0; i < SUBSCRIBERS; i++) {
		struct fb_subscriber_fds fds;
		uint32_t id;
		cr_assert_eq(fb_producer_add_subscriber(p, modes[i], 1, &fds, &id), 0);
		cr_assert_eq(fb_subscriber_attach(&fds, &subs[i].sub), 0);
		cr_assert_eq(pthread_create(&subs[i].thread, NULL, thread_main, &subs[i]), 0);
	}
	produce(p);
	fb_producer_free(p);
	for (int i = 0; i < SUBSCRIBERS; i++) {
		const struct tally *t = &subs[i].tally;
		cr_assert_eq(pthread_join(subs[i].thread, NULL), 0);
		cr_assert_eq(t->end, -EPIPE, "subscriber %d ended with %s", i, fb_strerror(t->end));
		cr_assert_eq(t->torn, 0, "subscriber %d saw %lu torn frames", i,
			     (unsigned long)t->torn);
		cr_assert_eq(t->disorder, 0);
		cr_assert_gt(t->frames, 100, "subscriber %d checked only %lu frames", i,
			     (unsigned long)t->frames);
	}
}

/* The same race under the block policy: a queue subscriber must see every
 * frame exactly once, in order, while latest subscribers race beside it. */
Test(ring_race, block_policy_queue_subscriber_sees_every_frame)
{
	struct fb_ring_params params = th_params(128, 64, FB_FORMAT_GRAY8, 3, FB_POLICY_BLOCK);
	struct thread_sub subs[SUBSCRIBERS];
	fb_producer *p;

	cr_assert_eq(fb_producer_new(&params, &p), 0);
	for (int i = 0; i < SUBSCRIBERS; i++) {
		struct fb_subscriber_fds fds;
		uint32_t id;
		cr_assert_eq(fb_producer_add_subscriber(p, modes[i], 1, &fds, &id), 0);
		cr_assert_eq(fb_subscriber_attach(&fds, &subs[i].sub), 0);
		cr_assert_eq(pthread_create(&subs[i].thread, NULL, thread_main, &subs[i]), 0);
	}
	const struct fb_layout *l = fb_producer_get_layout(p);
	const uint64_t frames = 20000;
	for (uint64_t seq = 1; seq <= frames; seq++) {
		struct fb_frame *f;
		int r = fb_producer_acquire(p, 5000, &f);
		cr_assert_eq(r, 0, "frame %lu: %s", (unsigned long)seq, fb_strerror(r));
		th_fill_frame(f, l, seq);
		cr_assert_eq(fb_producer_publish(p, f), 0);
	}
	fb_producer_free(p);
	for (int i = 0; i < SUBSCRIBERS; i++) {
		cr_assert_eq(pthread_join(subs[i].thread, NULL), 0);
		cr_assert_eq(subs[i].tally.torn, 0);
		cr_assert_eq(subs[i].tally.disorder, 0);
	}
	cr_assert_eq(subs[1].tally.frames, frames, "the queue subscriber got %lu of %lu",
		     (unsigned long)subs[1].tally.frames, (unsigned long)frames);
}
