/* SPDX-License-Identifier: MIT */
/*
 * The acquire-versus-overwrite race between threads of one process, the way
 * the daemon (decoder threads publishing, clients reading) and Python use the
 * ring.  A plain TAP program rather than a Criterion suite so that it also runs
 * under ThreadSanitizer: Criterion cannot start under TSan (its inheritable
 * arena collides with TSan's shadow memory, Snaipe/Criterion#274).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "test-helpers.h"

#define SUBSCRIBERS 3

static int failures;
static int test_number;

static void check(bool ok, const char *fmt, ...)
{
	if (ok)
		return;
	va_list ap;
	va_start(ap, fmt);
	printf("# ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	failures++;
}

struct thread_sub {
	pthread_t thread;
	fb_subscriber *sub;
	uint64_t frames;
	uint64_t torn;
	uint64_t disorder;
	int end;
};

static void *subscriber_main(void *arg)
{
	struct thread_sub *ts = arg;
	const struct fb_layout *l = fb_subscriber_get_layout(ts->sub);
	const struct fb_frame *f;
	uint64_t last = 0;

	while ((ts->end = fb_subscriber_acquire(ts->sub, -1, &f)) == 0) {
		ts->torn += !th_frame_is_whole(f, l);
		ts->disorder += f->seq <= last;
		last = f->seq;
		ts->frames++;
		fb_subscriber_release(ts->sub, f);
	}
	fb_subscriber_free(ts->sub);
	return NULL;
}

static const uint32_t modes[SUBSCRIBERS] = {FB_MODE_LATEST, FB_MODE_QUEUE, FB_MODE_LATEST};

/* One producer (this thread) and three subscriber threads on one ring.
 * A drop ring runs for a fixed time; a block ring for a fixed frame count,
 * and then its queue subscriber must have seen every frame. */
static void race(const char *name, uint32_t format, uint32_t policy)
{
	struct fb_ring_params params = th_params(128, 64, format, 3, policy);
	struct thread_sub subs[SUBSCRIBERS] = {0};
	const uint64_t block_frames = 20000, drop_run_ns = 1500000000u;
	fb_producer *p;
	int before = failures;
	uint64_t t0 = fb_now_ns();

	check(fb_producer_new(&params, &p) == 0, "fb_producer_new");
	for (int i = 0; i < SUBSCRIBERS; i++) {
		struct fb_subscriber_fds fds;
		uint32_t id;
		check(fb_producer_add_subscriber(p, modes[i], 1, &fds, &id) == 0, "add subscriber");
		check(fb_subscriber_attach(&fds, &subs[i].sub) == 0, "attach");
		check(pthread_create(&subs[i].thread, NULL, subscriber_main, &subs[i]) == 0,
		      "pthread_create");
	}

	const struct fb_layout *l = fb_producer_get_layout(p);
	uint64_t until = fb_now_ns() + drop_run_ns, published = 0;
	while (policy == FB_POLICY_BLOCK ? published < block_frames : fb_now_ns() < until) {
		struct fb_frame *f;
		int r = fb_producer_acquire(p, 5000, &f);
		if (policy == FB_POLICY_DROP && r == -ENOBUFS)
			continue;
		check(r == 0, "producer acquire: %s", fb_strerror(r));
		if (r < 0)
			break;
		th_fill_frame(f, l, published + 1);
		check(fb_producer_publish(p, f) == 0, "publish");
		published = f->seq;
	}
	fb_producer_free(p);

	for (int i = 0; i < SUBSCRIBERS; i++) {
		const struct thread_sub *t = &subs[i];
		pthread_join(subs[i].thread, NULL);
		check(t->end == -EPIPE, "subscriber %d ended with %s", i, fb_strerror(t->end));
		check(t->torn == 0, "subscriber %d saw %lu torn frames of %lu", i,
		      (unsigned long)t->torn, (unsigned long)t->frames);
		check(t->disorder == 0, "subscriber %d saw frames out of order", i);
		check(t->frames > 100, "subscriber %d checked only %lu frames", i,
		      (unsigned long)t->frames);
	}
	if (policy == FB_POLICY_BLOCK)
		check(subs[1].frames == published, "queue subscriber got %lu of %lu frames",
		      (unsigned long)subs[1].frames, (unsigned long)published);
	printf("%s %d - %s (%lu frames published, %.2f s)\n", failures == before ? "ok" : "not ok",
	       ++test_number, name, (unsigned long)published, (fb_now_ns() - t0) / 1e9);
}

/* Frames taken by one thread and released by another, as a garbage
 * collector in a language runtime releases them, while the taking thread
 * already waits for the next frame. */
struct handoff {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	const struct fb_frame *frames[FB_MAX_SLOTS];
	unsigned head, tail;
	bool done;
	fb_subscriber *sub;
	const struct fb_layout *layout;
	uint64_t released, torn;
};

static void *releaser_main(void *arg)
{
	struct handoff *h = arg;

	pthread_mutex_lock(&h->lock);
	for (;;) {
		while (h->head == h->tail && !h->done)
			pthread_cond_wait(&h->cond, &h->lock);
		if (h->head == h->tail)
			break;
		const struct fb_frame *f = h->frames[h->tail++ % FB_MAX_SLOTS];
		pthread_mutex_unlock(&h->lock);
		/* Still whole: nothing reused the slot while we held it. */
		h->torn += !th_frame_is_whole(f, h->layout);
		h->released += fb_subscriber_release(h->sub, f) == 0;
		pthread_mutex_lock(&h->lock);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

static void *producer_main(void *arg)
{
	fb_producer *p = arg;
	const struct fb_layout *l = fb_producer_get_layout(p);

	for (uint64_t n = 1; n <= 5000; n++) {
		struct fb_frame *f;
		if (fb_producer_acquire(p, 5000, &f) != 0)
			break;
		th_fill_frame(f, l, n);
		fb_producer_publish(p, f);
	}
	fb_producer_end(p);
	return NULL;
}

static void release_from_another_thread(void)
{
	struct fb_ring_params params = th_params(64, 32, FB_FORMAT_BGR24, 4, FB_POLICY_BLOCK);
	struct handoff h = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	struct fb_subscriber_fds fds;
	pthread_t producer, releaser;
	fb_producer *p;
	uint32_t id;
	uint64_t got = 0, disorder = 0, last = 0;
	int before = failures, r;
	uint64_t give_up = fb_now_ns() + 20000000000u;

	check(fb_producer_new(&params, &p) == 0, "fb_producer_new");
	check(fb_producer_add_subscriber(p, FB_MODE_QUEUE, 3, &fds, &id) == 0, "add subscriber");
	check(fb_subscriber_attach(&fds, &h.sub) == 0, "attach");
	h.layout = fb_subscriber_get_layout(h.sub);
	pthread_create(&releaser, NULL, releaser_main, &h);
	pthread_create(&producer, NULL, producer_main, p);
	for (;;) {
		const struct fb_frame *f;
		r = fb_subscriber_acquire(h.sub, 5000, &f);
		if (r == -EDQUOT && fb_now_ns() < give_up) { /* the releaser is behind */
			sched_yield();
			continue;
		}
		if (r < 0)
			break;
		disorder += f->seq != last + 1;
		last = f->seq;
		got++;
		pthread_mutex_lock(&h.lock);
		h.frames[h.head++ % FB_MAX_SLOTS] = f;
		pthread_cond_signal(&h.cond);
		pthread_mutex_unlock(&h.lock);
	}
	pthread_mutex_lock(&h.lock);
	h.done = true;
	pthread_cond_signal(&h.cond);
	pthread_mutex_unlock(&h.lock);
	pthread_join(releaser, NULL);
	pthread_join(producer, NULL);
	check(r == -EPIPE, "acquire ended with %s", fb_strerror(r));
	check(got == 5000 && h.released == got, "got %lu frames, released %lu",
	      (unsigned long)got, (unsigned long)h.released);
	check(h.torn == 0 && disorder == 0, "%lu torn, %lu out of order", (unsigned long)h.torn,
	      (unsigned long)disorder);
	check(fb_subscriber_get_held(h.sub) == 0, "still holding frames");
	fb_subscriber_free(h.sub);
	fb_producer_free(p);
	printf("%s %d - threads_release_while_another_thread_acquires\n",
	       failures == before ? "ok" : "not ok", ++test_number);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n1..4\n");
	race("threads_drop_ring_never_shows_a_torn_frame", FB_FORMAT_YUV420P, FB_POLICY_DROP);
	race("threads_drop_ring_bgra", FB_FORMAT_BGRA, FB_POLICY_DROP);
	race("threads_block_ring_queue_subscriber_sees_every_frame", FB_FORMAT_GRAY8,
	     FB_POLICY_BLOCK);
	release_from_another_thread();
	return failures ? 1 : 0;
}
