/* SPDX-License-Identifier: MIT */
/* Streams that clients publish through framebusd: subscribers get every
 * frame whole, a publisher's death ends its stream, and events never reach a
 * publisher inside a producer call. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "daemon-helpers.h"

/* A client publishes a stream; another subscribes and gets every frame with
 * its side data; the publisher's death ends the subscription cleanly and
 * frees the name. */
Test(daemon, client_published_stream_reaches_subscribers)
{
	struct daemon d;
	struct fb_ring_params params = th_params(64, 48, FB_FORMAT_GRAY8, 4, FB_POLICY_DROP);
	fb_producer *prod;
	fb_subscriber *sub;
	const struct fb_frame *f;

	start(&d, "[daemon]\nmax_ring_memory_per_client = 2M\n");
	fb_client *pc = client(&d);
	fb_client *sc = client(&d);
	cr_assert_eq(fb_client_publish(pc, "processed", &params, &prod), 0, "%s",
		     fb_client_last_error(pc));
	fb_producer *dup;
	cr_assert_eq(fb_client_publish(sc, "processed", &params, &dup), -EEXIST);
	struct fb_ring_params big = th_params(640, 480, FB_FORMAT_BGR24, 4, FB_POLICY_DROP);
	cr_assert_eq(fb_client_publish(sc, "big", &big, &dup), -EDQUOT);
	cr_assert(strstr(fb_client_last_error(sc), "ring memory"), "%s", fb_client_last_error(sc));

	cr_assert_eq(fb_client_subscribe(sc, "processed", FB_MODE_QUEUE, 1, &sub), 0, "%s",
		     fb_client_last_error(sc));
	for (uint64_t i = 1; i <= 20; i++) {
		struct fb_frame *w;
		cr_assert_eq(fb_producer_acquire(prod, 0, &w), 0);
		th_fill_frame(w, fb_producer_get_layout(prod), i);
		cr_assert_eq(fb_producer_publish(prod, w), 0);
		cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "frame %lu",
			     (unsigned long)i);
		cr_assert_eq(f->seq, i);
		cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(sub)), "frame %lu",
			  (unsigned long)i);
		cr_assert_eq(fb_subscriber_release(sub, f), 0);
	}
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(sc, "processed", &info), 0);
	cr_assert(!strncmp(info.source, "client:test[", 12), "source %s", info.source);
	cr_assert_eq(info.published, 20);
	cr_assert_eq(info.subscribers, 1);
	struct fb_subscription_info *subs;
	size_t n;
	cr_assert_eq(fb_client_get_subscriptions(sc, "processed", &subs, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(subs[0].lag, 0);
	free(subs);

	/* A subscriber that unsubscribes gives back what it held: the
	 * producer (4 slots) keeps going. */
	cr_assert_eq(fb_subscriber_acquire(sub, 0, &f), -EAGAIN);
	cr_assert_eq(fb_client_unpublish(pc, prod), 0);
	cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), -EPIPE);
	fb_subscriber_free(sub);
	cr_assert_eq(fb_client_get_stream(sc, "processed", &info), -ENOENT);
	fb_client_free(pc);
	fb_client_free(sc);
	stop(&d);
}

/* A results stream: a client's records about the daemon's frames, with no
 * pixels.  Its subscriber reads each record with the picture it names
 * (source_seq, capture time, the hop it came through), status describes it
 * as results, and a config cannot declare one. */
Test(daemon, results_stream_names_the_frame_each_record_is_about)
{
	struct daemon d;
	fb_producer *prod;
	fb_subscriber *cam, *sub;
	const struct fb_frame *f, *r;

	start(&d, lavfi_config);
	fb_client *pc = client(&d);
	fb_client *sc = client(&d);
	cr_assert_eq(fb_client_publish_results(pc, "bars.people", 8, FB_POLICY_BLOCK, 0, &prod),
		     -EINVAL, "meta_max 0");
	cr_assert_eq(fb_client_publish_results(pc, "bars.people", 8, FB_POLICY_BLOCK, 256, &prod),
		     0, "%s", fb_client_last_error(pc));
	cr_assert_eq(fb_client_subscribe(pc, "bars", FB_MODE_QUEUE, 1, &cam), 0);
	cr_assert_eq(fb_client_subscribe(sc, "bars.people", FB_MODE_QUEUE, 2, &sub), 0, "%s",
		     fb_client_last_error(sc));
	cr_assert_eq(fb_subscriber_get_layout(sub)->format, FB_FORMAT_RESULTS);
	cr_assert_eq(fb_subscriber_get_meta_max(sub), 256);

	for (int i = 0; i < 10; i++) {
		struct fb_frame *w;
		cr_assert_eq(fb_subscriber_acquire(cam, 5000, &f), 0);
		cr_assert_eq(fb_producer_acquire(prod, 1000, &w), 0);
		w->meta_size =
		    (uint32_t)snprintf((char *)w->meta, 256, "{\"boxes\": [[%d, 0, 8, 16]]}", i);
		cr_assert_eq(fb_frame_made_from(w, f), 0);
		cr_assert_eq(fb_producer_publish(prod, w), 0);

		cr_assert_eq(fb_subscriber_acquire(sub, 2000, &r), 0, "record %d", i);
		cr_assert_eq(r->source_seq, f->seq);
		cr_assert_eq(r->trace->capture_ns, f->trace->capture_ns);
		cr_assert_neq(r->trace->capture_ns, 0);
		cr_assert_eq(r->trace->n_hops, 1);
		cr_assert_str_eq(r->trace->hops[0].stream, "bars");
		cr_assert_eq(r->trace->hops[0].seq, f->seq);
		char want[64];
		snprintf(want, sizeof(want), "{\"boxes\": [[%d, 0, 8, 16]]}", i);
		cr_assert_eq(r->meta_size, strlen(want));
		cr_assert_eq(memcmp(r->meta, want, r->meta_size), 0);
		cr_assert_eq(fb_subscriber_release(sub, r), 0);
		cr_assert_eq(fb_subscriber_release(cam, f), 0);
	}
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(sc, "bars.people", &info), 0);
	cr_assert_eq(info.format, FB_FORMAT_RESULTS);
	cr_assert_eq(info.width + info.height, 0);
	cr_assert_eq(info.meta_max, 256);
	cr_assert_eq(info.published, 10);
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "%s --socket %s status > %s/status.txt", FRAMEBUSCTL_PATH,
		 d.socket, d.dir);
	cr_assert_eq(run(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/status.txt", d.dir);
	char *out = read_file(cmd);
	cr_assert(strstr(out, "records    results of up to 256 bytes, 8 slots, block"), "%s", out);
	snprintf(cmd, sizeof(cmd), "%s --socket %s snapshot bars.people %s/x.png 2> %s/err.txt",
		 FRAMEBUSCTL_PATH, d.socket, d.dir, d.dir);
	cr_assert_eq(run(cmd), 1);
	snprintf(cmd, sizeof(cmd), "%s/err.txt", d.dir);
	out = read_file(cmd);
	cr_assert(strstr(out, "bars.people is a results stream: it has no picture"), "%s", out);

	fb_client_unsubscribe(sc, sub);
	fb_client_unsubscribe(pc, cam);
	fb_client_unpublish(pc, prod);
	fb_client_free(pc);
	fb_client_free(sc);
	stop(&d);
}

/* A publisher process that publishes stream name forever, a frame every
 * delay_us (0: flat out); returns once the stream exists. */
static pid_t spawn_publisher(const struct daemon *d, const char *name, struct fb_ring_params params,
			     uint64_t delay_us)
{
	int ready[2];
	char byte;

	cr_assert_eq(pipe(ready), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fb_client *pc;
		fb_producer *prod;
		if (fb_client_connect(d->socket, "publisher", &pc) < 0 ||
		    fb_client_publish(pc, name, &params, &prod) < 0)
			_exit(1);
		(void)!write(ready[1], "x", 1);
		for (uint64_t seq = 1;; seq++) {
			struct fb_frame *w;
			if (fb_producer_acquire(prod, 0, &w) == 0) {
				th_fill_frame(w, fb_producer_get_layout(prod), seq);
				fb_producer_publish(prod, w);
			}
			if (delay_us)
				th_sleep_us(delay_us);
		}
	}
	close(ready[1]);
	cr_assert_eq(read(ready[0], &byte, 1), 1, "the publisher could not publish %s", name);
	close(ready[0]);
	return pid;
}

Test(daemon, killed_publisher_ends_its_stream)
{
	struct daemon d;

	start(&d, "");
	pid_t pid = spawn_publisher(&d, "proc",
				    th_params(64, 48, FB_FORMAT_BGR24, 4, FB_POLICY_DROP), 1000);
	fb_client *sc = client(&d);
	fb_subscriber *sub;
	const struct fb_frame *f;
	cr_assert_eq(fb_client_subscribe(sc, "proc", FB_MODE_QUEUE, 1, &sub), 0, "%s",
		     fb_client_last_error(sc));
	for (int i = 0; i < 20; i++) {
		cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "frame %d", i);
		cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(sub)));
		fb_subscriber_release(sub, f);
	}
	kill(pid, SIGKILL);
	th_wait(pid);
	int r;
	while ((r = fb_subscriber_acquire(sub, 3000, &f)) == 0) {
		cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(sub)));
		fb_subscriber_release(sub, f);
	}
	cr_assert_eq(r, -EPIPE, "%s", fb_strerror(r));
	fb_subscriber_free(sub);
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(sc, "proc", &info), -ENOENT);
	/* The name is free again. */
	struct fb_ring_params params = th_params(64, 48, FB_FORMAT_BGR24, 4, FB_POLICY_DROP);
	fb_producer *again;
	cr_assert_eq(fb_client_publish(sc, "proc", &params, &again), 0);
	cr_assert_eq(fb_client_unpublish(sc, again), 0);
	cr_assert(strstr(read_file(d.log), "its publisher went away"), "%s", read_file(d.log));
	fb_client_free(sc);
	stop(&d);
}

/* The registration race: a publisher flat out into a 3-slot ring while a
 * subscriber comes and goes; every frame any subscription gets is whole. */
Test(daemon, subscribers_joining_a_flat_out_publisher_never_see_torn_frames)
{
	struct daemon d;

	start(&d, "");
	pid_t pid =
	    spawn_publisher(&d, "fast", th_params(256, 64, FB_FORMAT_BGRA, 3, FB_POLICY_DROP), 0);
	fb_client *sc = client(&d);
	uint64_t frames = 0;
	for (int round = 0; round < 150; round++) {
		fb_subscriber *sub;
		const struct fb_frame *f;
		uint32_t mode = round % 2 ? FB_MODE_QUEUE : FB_MODE_LATEST;
		cr_assert_eq(fb_client_subscribe(sc, "fast", mode, 1, &sub), 0, "round %d: %s",
			     round, fb_client_last_error(sc));
		for (int i = 0; i < 20; i++) {
			cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "round %d", round);
			cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(sub)),
				  "round %d: frame %lu torn", round, (unsigned long)f->seq);
			fb_subscriber_release(sub, f);
			frames++;
		}
		cr_assert_eq(fb_client_unsubscribe(sc, sub), 0);
	}
	kill(pid, SIGKILL);
	th_wait(pid);
	cr_assert_eq(frames, 3000);
	fb_client_free(sc);
	stop(&d);
}

struct reentry {
	bool in_acquire;
	int calls;
	int calls_inside;
};

static void note_event(void *data, const char *stream, uint32_t state, const char *detail)
{
	struct reentry *r = data;
	(void)stream, (void)state, (void)detail;
	r->calls++;
	r->calls_inside += r->in_acquire;
}

/* A producer reads only its own channel (where it takes in new subscribers,
 * locked): events for its client wait for fb_client_process, never run
 * inside fb_producer_acquire. */
Test(daemon, events_are_not_delivered_inside_a_producer_call)
{
	struct daemon d;
	struct reentry seen = {0};
	struct fb_ring_params params = th_params(32, 32, FB_FORMAT_GRAY8, 3, FB_POLICY_DROP);
	fb_producer *prod;
	fb_subscriber *watch, *sub;
	struct fb_frame *w;

	start(&d, lavfi_config);
	fb_client *pc = client(&d), *sc = client(&d);
	wait_state(pc, "bars", FB_STREAM_RUNNING, 10);
	fb_client_set_event_callback(pc, note_event, &seen);
	cr_assert_eq(fb_client_publish(pc, "out", &params, &prod), 0);
	cr_assert_eq(fb_client_subscribe(pc, "bars", FB_MODE_LATEST, 1, &watch), 0);

	write_file(d.config, "");
	kill(d.pid, SIGHUP);                      /* bars goes: an event for pc */
	wait_log(&d, "stream bars: stopped", 10); /* logged after the event was sent */
	cr_assert_eq(fb_client_subscribe(sc, "out", FB_MODE_QUEUE, 1, &sub),
		     0); /* a registration */

	seen.in_acquire = true;
	cr_assert_eq(fb_producer_acquire(prod, 0, &w), 0);
	seen.in_acquire = false;
	cr_assert_eq(fb_producer_publish(prod, w), 0);
	cr_assert_eq(seen.calls_inside, 0, "an event callback ran inside fb_producer_acquire");
	cr_assert_geq(fb_client_process(pc), 0);
	cr_assert_geq(seen.calls, 1, "the event was lost");

	const struct fb_frame *f;
	cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "the registration was taken in");
	fb_subscriber_release(sub, f);
	fb_subscriber_free(sub);
	fb_subscriber_free(watch);
	cr_assert_eq(fb_client_unpublish(pc, prod), 0);
	fb_client_free(pc);
	fb_client_free(sc);
	stop(&d);
}

struct flat_out {
	fb_producer *producer;
	atomic_bool stop;
	uint64_t published;
};

static void *produce(void *arg)
{
	struct flat_out *o = arg;
	for (uint64_t seq = 1; !atomic_load(&o->stop); seq++) {
		struct fb_frame *w;
		if (fb_producer_acquire(o->producer, 0, &w) < 0)
			continue;
		th_fill_frame(w, fb_producer_get_layout(o->producer), seq);
		if (fb_producer_publish(o->producer, w) == 0)
			o->published++;
	}
	return NULL;
}

/* A published stream's producer runs in a thread of its own, flat out,
 * while the thread that owns its client keeps asking the daemon things and
 * subscribers come and go: the producer takes them in from its own channel,
 * every request gets its own reply, every frame arrives whole. */
Test(daemon, a_publisher_may_produce_in_a_thread_of_its_own)
{
	struct daemon d;
	struct flat_out o = {0};
	pthread_t thread;

	start(&d, lavfi_config);
	fb_client *pc = client(&d), *sc = client(&d);
	struct fb_ring_params params = th_params(128, 64, FB_FORMAT_BGRA, 3, FB_POLICY_DROP);
	cr_assert_eq(fb_client_publish(pc, "threaded", &params, &o.producer), 0);
	cr_assert_eq(pthread_create(&thread, NULL, produce, &o), 0);
	for (int round = 0; round < 60; round++) {
		struct fb_stream_info *list, info;
		size_t n;
		cr_assert_eq(fb_client_list_streams(pc, &list, &n), 0, "round %d", round);
		cr_assert_eq(n, 2);
		free(list);
		cr_assert_eq(fb_client_get_stream(pc, "threaded", &info), 0, "round %d", round);
		cr_assert_geq(fb_client_process(pc), 0);

		fb_subscriber *sub;
		const struct fb_frame *f;
		cr_assert_eq(fb_client_subscribe(sc, "threaded", round % 2, 1, &sub), 0,
			     "round %d: %s", round, fb_client_last_error(sc));
		for (int i = 0; i < 10; i++) {
			cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "round %d", round);
			cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(sub)),
				  "round %d: frame %lu torn", round, (unsigned long)f->seq);
			fb_subscriber_release(sub, f);
		}
		cr_assert_eq(fb_client_unsubscribe(sc, sub), 0);
	}
	atomic_store(&o.stop, true);
	pthread_join(thread, NULL);
	cr_assert_gt(o.published, 600);
	cr_assert_eq(fb_client_unpublish(pc, o.producer), 0);
	fb_client_free(pc);
	fb_client_free(sc);
	stop(&d);
}
