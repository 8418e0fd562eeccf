/* SPDX-License-Identifier: MIT */
/* The ring across processes: fan-out, queue gaps, both policies, subscribers
 * and producers killed with SIGKILL. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test-helpers.h"

/* Child exit codes, so a failure says what the child saw. */
enum {
	CHILD_OK = 0,
	CHILD_ATTACH = 10,
	CHILD_ACQUIRE = 11,
	CHILD_TORN = 12,
	CHILD_ORDER = 13,
	CHILD_COUNT = 14,
	CHILD_LOST = 15,
};

struct child_report {
	uint64_t received;
	uint64_t missed;
	uint64_t last_seq;
};

typedef int (*child_fn)(fb_subscriber *sub, int report_fd, void *arg);

/* Fork a subscriber process running fn; the parent keeps no descriptor of it
 * but report_fd's read end (if ret_report is given). */
static pid_t spawn(fb_producer *p, uint32_t mode, uint32_t max_holds, child_fn fn, void *arg,
		   uint32_t *ret_id, int *ret_report)
{
	struct fb_subscriber_fds fds;
	int report[2];
	uint32_t id;

	cr_assert_eq(fb_producer_add_subscriber(p, mode, max_holds, &fds, &id), 0);
	cr_assert_eq(pipe2(report, O_CLOEXEC), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		fb_subscriber *sub;
		close(report[0]);
		if (fb_subscriber_attach(&fds, &sub) < 0)
			_exit(CHILD_ATTACH);
		_exit(fn(sub, report[1], arg));
	}
	fb_subscriber_fds_close(&fds);
	close(report[1]);
	if (ret_report)
		*ret_report = report[0];
	else
		close(report[0]);
	if (ret_id)
		*ret_id = id;
	return pid;
}

static struct child_report read_report(int fd)
{
	struct child_report r = {0};
	cr_assert_eq(read(fd, &r, sizeof(r)), (ssize_t)sizeof(r), "child sent no report");
	close(fd);
	return r;
}

static uint64_t publish_one(fb_producer *p, int timeout_ms)
{
	struct fb_frame *f;
	struct fb_ring_stats st;
	int r = fb_producer_acquire(p, timeout_ms, &f);
	cr_assert_eq(r, 0, "producer acquire: %s", fb_strerror(r));
	fb_producer_get_stats(p, &st);
	th_fill_frame(f, fb_producer_get_layout(p), st.published + 1);
	cr_assert_eq(fb_producer_publish(p, f), 0);
	return f->seq;
}

/* Read every frame until end of stream; check each is whole and in order. */
static int read_all(fb_subscriber *sub, int report_fd, void *arg)
{
	uint64_t delay_us = arg ? *(uint64_t *)arg : 0;
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	struct child_report rep = {0};
	const struct fb_frame *f;
	int r;

	while ((r = fb_subscriber_acquire(sub, 10000, &f)) == 0) {
		if (!th_frame_is_whole(f, l))
			return CHILD_TORN;
		/* The cursor starts at frame 1: every frame is received or missed. */
		if (f->seq != rep.last_seq + 1 + f->missed)
			return CHILD_ORDER;
		rep.received++;
		rep.missed += f->missed;
		rep.last_seq = f->seq;
		if (delay_us)
			th_sleep_us(delay_us);
		fb_subscriber_release(sub, f);
	}
	if (r != -EPIPE)
		return CHILD_ACQUIRE;
	if (write(report_fd, &rep, sizeof(rep)) != sizeof(rep))
		return CHILD_COUNT;
	fb_subscriber_free(sub);
	return CHILD_OK;
}

Test(ring_fork, fanout_to_four_subscribers_checks_every_frame)
{
	struct fb_ring_params params = th_params(320, 240, FB_FORMAT_BGR24, 8, FB_POLICY_BLOCK);
	fb_producer *p;
	pid_t pid[4];
	int report[4];
	const uint64_t frames = 300;

	cr_assert_eq(fb_producer_new(&params, &p), 0);
	for (int i = 0; i < 4; i++)
		pid[i] = spawn(p, FB_MODE_QUEUE, 2, read_all, NULL, NULL, &report[i]);
	for (uint64_t i = 0; i < frames; i++)
		publish_one(p, 10000);
	fb_producer_free(p); /* end of stream */
	for (int i = 0; i < 4; i++) {
		struct child_report rep = read_report(report[i]);
		cr_assert_eq(th_wait(pid[i]), CHILD_OK, "subscriber %d", i);
		cr_assert_eq(rep.received, frames, "subscriber %d got %lu", i,
			     (unsigned long)rep.received);
		cr_assert_eq(rep.missed, 0);
		cr_assert_eq(rep.last_seq, frames);
	}
}

Test(ring_fork, block_never_loses_a_frame_under_a_slow_subscriber)
{
	struct fb_ring_params params = th_params(160, 120, FB_FORMAT_NV12, 4, FB_POLICY_BLOCK);
	fb_producer *p;
	int report;
	uint64_t delay_us = 500;
	const uint64_t frames = 300;

	cr_assert_eq(fb_producer_new(&params, &p), 0);
	pid_t slow = spawn(p, FB_MODE_QUEUE, 1, read_all, &delay_us, NULL, &report);
	for (uint64_t i = 0; i < frames; i++)
		publish_one(p, 10000);
	fb_producer_free(p);
	struct child_report rep = read_report(report);
	cr_assert_eq(th_wait(slow), CHILD_OK);
	cr_assert_eq(rep.received, frames);
	cr_assert_eq(rep.missed, 0);
}

Test(ring_fork, queue_gaps_are_counted_under_drop)
{
	struct fb_ring_params params = th_params(160, 120, FB_FORMAT_GRAY8, 4, FB_POLICY_DROP);
	fb_producer *p;
	int report;
	uint64_t delay_us = 2000;
	const uint64_t frames = 400;
	struct fb_ring_stats st;

	cr_assert_eq(fb_producer_new(&params, &p), 0);
	pid_t slow = spawn(p, FB_MODE_QUEUE, 1, read_all, &delay_us, NULL, &report);
	for (uint64_t i = 0; i < frames; i++) {
		publish_one(p, 0);
		th_sleep_us(100);
	}
	fb_producer_get_stats(p, &st);
	cr_assert_eq(st.dropped, 0, "one subscriber holding one frame never fills 4 slots");
	fb_producer_free(p);
	struct child_report rep = read_report(report);
	cr_assert_eq(th_wait(slow), CHILD_OK);
	cr_assert_gt(rep.missed, 0, "a subscriber 20x slower than the producer missed nothing");
	cr_assert_eq(rep.received + rep.missed, rep.last_seq,
		     "received %lu + missed %lu != frames up to %lu", (unsigned long)rep.received,
		     (unsigned long)rep.missed, (unsigned long)rep.last_seq);
	cr_assert_eq(rep.last_seq, frames);
}

/* Hold max_holds frames, say so, then never release them. */
static int hold_and_stall(fb_subscriber *sub, int report_fd, void *arg)
{
	const struct fb_frame *f;
	uint32_t n = *(uint32_t *)arg;
	for (uint32_t i = 0; i < n; i++)
		if (fb_subscriber_acquire(sub, 10000, &f) < 0)
			return CHILD_ACQUIRE;
	struct child_report rep = {.received = n};
	if (write(report_fd, &rep, sizeof(rep)) != sizeof(rep))
		return CHILD_COUNT;
	pause();
	return CHILD_OK;
}

Test(ring_fork, drop_never_blocks_under_a_stuck_subscriber)
{
	struct fb_ring_params params = th_params(160, 120, FB_FORMAT_GRAY8, 4, FB_POLICY_DROP);
	fb_producer *p;
	int report;
	uint32_t holds = 3;
	struct fb_ring_stats st;

	cr_assert_eq(fb_producer_new(&params, &p), 0);
	pid_t stuck = spawn(p, FB_MODE_QUEUE, holds, hold_and_stall, &holds, NULL, &report);
	for (int i = 0; i < 3; i++)
		publish_one(p, 0);
	cr_assert_eq(read_report(report).received, 3);
	/* Three of four slots pinned for good: every publish still goes
	 * through the last one, none waits and none is dropped. */
	for (int i = 0; i < 1000; i++)
		publish_one(p, 0);
	fb_producer_get_stats(p, &st);
	cr_assert_eq(st.published, 1003);
	cr_assert_eq(st.dropped, 0);
	cr_assert_eq(st.held, 3);
	kill(stuck, SIGKILL);
	cr_assert_eq(th_wait(stuck), 128 + SIGKILL);
	fb_producer_free(p);
}

/* Acquire and release at random, holding up to max_holds frames, forever. */
static int churn(fb_subscriber *sub, int report_fd, void *arg)
{
	const struct fb_frame *held[4];
	uint32_t n = 0, max = *(uint32_t *)arg;
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	unsigned seed = (unsigned)getpid();

	for (;;) {
		const struct fb_frame *f;
		if (n < max && fb_subscriber_acquire(sub, 100, &f) == 0) {
			if (!th_frame_is_whole(f, l))
				return CHILD_TORN;
			if (report_fd >= 0) { /* tell the parent we are running */
				close(report_fd);
				report_fd = -1;
			}
			held[n++] = f;
		}
		if (n && rand_r(&seed) % 2) {
			fb_subscriber_release(sub, held[--n]);
		}
	}
}

Test(ring_fork, sigkill_of_holding_subscribers_leaves_no_slot_pinned)
{
	struct fb_ring_params params = th_params(64, 48, FB_FORMAT_BGR24, 4, FB_POLICY_DROP);
	fb_producer *p;
	struct fb_subscriber_fds fds;
	fb_subscriber *survivor;
	uint32_t max_holds = 3, survivor_id;
	unsigned seed = (unsigned)getpid();
	const int rounds = 300;
	int pinned_rounds = 0;

	cr_assert_eq(fb_producer_new(&params, &p), 0);
	cr_assert_eq(fb_producer_add_subscriber(p, FB_MODE_LATEST, 1, &fds, &survivor_id), 0);
	cr_assert_eq(fb_subscriber_attach(&fds, &survivor), 0);
	int fds_before = th_count_fds();

	for (int round = 0; round < rounds; round++) {
		uint32_t id;
		struct fb_ring_stats st;
		uint32_t mode = round % 2 ? FB_MODE_QUEUE : FB_MODE_LATEST;
		int ready;
		char byte;
		pid_t pid = spawn(p, mode, max_holds, churn, &max_holds, &id, &ready);
		publish_one(p, 0);
		cr_assert_eq(read(ready, &byte, 1), 0, "round %d: the child did not start", round);
		close(ready);
		uint64_t until = fb_now_ns() + (uint64_t)(rand_r(&seed) % 3000) * 1000u;

		do {
			struct fb_frame *f;
			int r = fb_producer_acquire(p, 0, &f);
			cr_assert(r == 0 || r == -ENOBUFS, "round %d: %s", round, fb_strerror(r));
			if (r == 0) {
				struct fb_ring_stats s0;
				fb_producer_get_stats(p, &s0);
				th_fill_frame(f, fb_producer_get_layout(p), s0.published + 1);
				cr_assert_eq(fb_producer_publish(p, f), 0);
			}
		} while (fb_now_ns() < until);
		fb_producer_get_stats(p, &st);
		pinned_rounds += st.held > 0;

		kill(pid, SIGKILL);
		cr_assert_eq(th_wait(pid), 128 + SIGKILL, "round %d: the child died on its own",
			     round);
		cr_assert_eq(fb_producer_remove_subscriber(p, id), 0);
		fb_producer_get_stats(p, &st);
		cr_assert_eq(st.held, 0, "round %d: %u slots still pinned", round, st.held);
		cr_assert_eq(st.subscribers, 1);

		/* The survivor still gets the newest frame, whole. */
		const struct fb_frame *f;
		uint64_t seq = publish_one(p, 0);
		cr_assert_eq(fb_subscriber_acquire(survivor, 0, &f), 0, "round %d", round);
		cr_assert_eq(f->seq, seq);
		cr_assert(th_frame_is_whole(f, fb_subscriber_get_layout(survivor)));
		cr_assert_eq(fb_subscriber_release(survivor, f), 0);
	}
	cr_assert_gt(pinned_rounds, rounds / 4, "children rarely held frames when killed (%d)",
		     pinned_rounds);
	cr_assert_eq(th_count_fds(), fds_before, "descriptors leaked over the rounds");
	fb_subscriber_free(survivor);
	fb_producer_free(p);
}

/* A producer process that writes frames slowly and forever. */
static void slow_producer(int sock)
{
	struct fb_ring_params params = th_params(640, 480, FB_FORMAT_BGR24, 4, FB_POLICY_DROP);
	struct fb_subscriber_fds fds;
	fb_producer *p;
	uint32_t id;

	if (fb_producer_new(&params, &p) < 0 ||
	    fb_producer_add_subscriber(p, FB_MODE_QUEUE, 1, &fds, &id) < 0 ||
	    th_send_fds(sock, &fds) < 0)
		_exit(CHILD_ATTACH);
	fb_subscriber_fds_close(&fds);
	const struct fb_layout *l = fb_producer_get_layout(p);
	for (uint64_t seq = 1;; seq++) {
		struct fb_frame *f;
		if (fb_producer_acquire(p, 0, &f) < 0)
			continue;
		/* Fill row by row so that a kill lands mid-frame most of the time. */
		th_fill_frame(f, l, seq);
		th_sleep_us(200);
		fb_producer_publish(p, f);
	}
}

Test(ring_fork, producer_killed_mid_write_never_exposes_a_half_frame)
{
	unsigned seed = (unsigned)getpid();

	for (int round = 0; round < 40; round++) {
		int sv[2];
		struct fb_subscriber_fds fds;
		fb_subscriber *sub;
		const struct fb_frame *f;
		uint64_t seen = 0;

		cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
		pid_t pid = fork();
		cr_assert_geq(pid, 0);
		if (pid == 0) {
			close(sv[0]);
			slow_producer(sv[1]);
		}
		close(sv[1]);
		cr_assert_eq(th_recv_fds(sv[0], &fds), 0);
		close(sv[0]);
		cr_assert_eq(fb_subscriber_attach(&fds, &sub), 0);
		const struct fb_layout *l = fb_subscriber_get_layout(sub);

		/* Let it start, then kill it at a random moment of its loop. */
		cr_assert_eq(fb_subscriber_acquire(sub, 10000, &f), 0, "round %d: no frame", round);
		cr_assert(th_frame_is_whole(f, l));
		seen = f->seq;
		fb_subscriber_release(sub, f);
		uint64_t until = fb_now_ns() + (rand_r(&seed) % 5000) * 1000u;
		while (fb_now_ns() < until) {
			if (fb_subscriber_acquire(sub, 1, &f) == 0) {
				cr_assert(th_frame_is_whole(f, l), "round %d: seq %lu torn", round,
					  (unsigned long)f->seq);
				seen = f->seq;
				fb_subscriber_release(sub, f);
			}
		}
		kill(pid, SIGKILL);
		cr_assert_eq(th_wait(pid), 128 + SIGKILL);
		/* Everything left is whole; the frame it died writing never shows. */
		int r;
		while ((r = fb_subscriber_acquire(sub, 0, &f)) == 0) {
			cr_assert(th_frame_is_whole(f, l), "round %d: seq %lu torn after death",
				  round, (unsigned long)f->seq);
			cr_assert_gt(f->seq, seen);
			seen = f->seq;
			fb_subscriber_release(sub, f);
		}
		/* Then the subscriber learns that nothing more can come, from an
		 * event loop's poll and from a blocking wait alike. */
		cr_assert_eq(r, -EOWNERDEAD, "round %d: %s", round, fb_strerror(r));
		struct pollfd pfd = {.fd = fb_subscriber_get_fd(sub), .events = POLLIN};
		cr_assert_eq(poll(&pfd, 1, 0), 1, "round %d: the descriptor does not wake", round);
		if (round < 4) { /* (a blocking wait looks every 250 ms) */
			r = fb_subscriber_acquire(sub, -1, &f);
			cr_assert_eq(r, -EOWNERDEAD, "round %d: %s", round, fb_strerror(r));
		}
		fb_subscriber_free(sub);
	}
}
