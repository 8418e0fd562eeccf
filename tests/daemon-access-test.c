/* SPDX-License-Identifier: MIT */
/* Who may do what: [access] rules checked against the peer's credentials on
 * every request, names reserved to their publishers, per-user limits, the
 * holds a stream's subscribers may take, and queue subscribers that stall a
 * block stream.  The test runs as root; its
 * clients run as throwaway uids (61234...) in forked children. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <grp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon-helpers.h"
#include "ring-private.h" /* a hostile subscriber writes its own record */

#define ALICE 61234
#define BOB 61235
#define VIDEO 61000 /* a group */
#define PUBLISHERS 61001

enum op { SUBSCRIBE, SUBSCRIBE_DERIVED, PUBLISH };

struct request {
	enum op op;
	const char *stream;
};

/* Connect and make one request; its result and the daemon's error text. */
static int request(const struct daemon *d, void *arg, char *error, size_t size)
{
	const struct request *req = arg;
	struct fb_ring_params params = th_params(16, 16, FB_FORMAT_GRAY8, 3, FB_POLICY_DROP);
	struct fb_derived spec = {.width = 32, .height = 24};
	fb_subscriber *sub = NULL;
	fb_producer *prod = NULL;
	fb_client *c;
	int r = fb_client_connect(d->socket, "as-user", &c);
	if (r < 0)
		return r;
	switch (req->op) {
	case SUBSCRIBE:
		r = fb_client_subscribe(c, req->stream, FB_MODE_LATEST, 1, &sub);
		break;
	case SUBSCRIBE_DERIVED:
		r = fb_client_subscribe_derived(c, req->stream, &spec, FB_MODE_LATEST, 1, &sub);
		break;
	case PUBLISH:
		r = fb_client_publish(c, req->stream, &params, &prod);
		break;
	}
	snprintf(error, size, "%s", r < 0 ? fb_client_last_error(c) : "");
	fb_subscriber_free(sub);
	if (prod)
		fb_client_unpublish(c, prod);
	fb_client_free(c);
	return r;
}

/* Make one request as uid (primary group gid, and group among its
 * supplementary groups if not 0); its result, and its error text in error. */
static int as(const struct daemon *d, uid_t uid, gid_t gid, gid_t group, enum op op,
	      const char *stream, char *error)
{
	struct request req = {op, stream};
	gid_t groups[1] = {group};
	return as_user(d, uid, gid, groups, group ? 1 : 0, request, &req, error);
}

/* A daemon on config whose socket anyone may reach. */
static void start_open(struct daemon *d, const char *rules)
{
	char config[2048];
	snprintf(config, sizeof(config), "[daemon]\nsocket_mode = 0666\n%s%s", lavfi_config, rules);
	start(d, config);
	cr_assert_eq(chmod(d->dir, 0755), 0);
}

static int count(const char *text, const char *needle)
{
	int n = 0;
	for (const char *at = text; (at = strstr(at, needle)); at++)
		n++;
	return n;
}

Test(daemon, access_rules_allow_and_deny_as_written)
{
	struct daemon d;
	char error[AS_USER_ERROR_MAX];
	char rules[512];
	snprintf(rules, sizeof(rules),
		 "[access cameras]\nstreams = bars\nsubscribe = @%d %d\n"
		 "[access gray]\nstreams = cam*.gray\npublish = %d @%d\n",
		 VIDEO, ALICE, ALICE, PUBLISHERS);
	start_open(&d, rules);
	fb_client *root = client(&d);
	wait_state(root, "bars", FB_STREAM_RUNNING, 10);

	/* subscribe = @video alice: alice, a member of video (primary or
	 * supplementary group), nobody else. */
	cr_assert_eq(as(&d, ALICE, ALICE, 0, SUBSCRIBE, "bars", error), 0, "%s", error);
	cr_assert_eq(as(&d, BOB, VIDEO, 0, SUBSCRIBE, "bars", error), 0, "%s", error);
	cr_assert_eq(as(&d, BOB, BOB, VIDEO, SUBSCRIBE, "bars", error), 0, "%s", error);
	cr_assert_eq(as(&d, BOB, BOB, 0, SUBSCRIBE, "bars", error), -EACCES);
	cr_assert(strstr(error, "[access cameras]"), "%s", error);
	/* A derived stream is subscribed as its parent. */
	cr_assert_eq(as(&d, BOB, BOB, 0, SUBSCRIBE_DERIVED, "bars", error), -EACCES);
	cr_assert(strstr(error, "[access cameras]"), "%s", error);
	cr_assert_eq(as(&d, ALICE, ALICE, 0, SUBSCRIBE_DERIVED, "bars", error), 0, "%s", error);
	/* Nor by the name of one made for another client. */
	struct fb_derived spec = {.width = 32, .height = 24};
	fb_subscriber *derived;
	cr_assert_eq(fb_client_subscribe_derived(root, "bars", &spec, FB_MODE_LATEST, 1, &derived),
		     0);
	cr_assert_eq(as(&d, BOB, BOB, 0, SUBSCRIBE, "bars~32x24.bgr24", error), -EACCES);
	cr_assert(strstr(error, "[access cameras]: uid 61235 may not subscribe to 'bars'"), "%s",
		  error);
	fb_subscriber_free(derived);

	/* publish = alice @publishers, for names matching cam*.gray. */
	cr_assert_eq(as(&d, ALICE, ALICE, 0, PUBLISH, "cam1.gray", error), 0, "%s", error);
	cr_assert_eq(as(&d, BOB, PUBLISHERS, 0, PUBLISH, "cam2.gray", error), 0, "%s", error);
	cr_assert_eq(as(&d, BOB, BOB, 0, PUBLISH, "cam3.gray", error), -EACCES);
	cr_assert(strstr(error, "[access gray]"), "%s", error);
	/* No rule covers other names, and none limits subscribing to cam*.gray. */
	cr_assert_eq(as(&d, BOB, BOB, 0, PUBLISH, "cam3.rgb", error), 0, "%s", error);
	struct fb_ring_params params = th_params(16, 16, FB_FORMAT_GRAY8, 3, FB_POLICY_DROP);
	fb_producer *prod;
	cr_assert_eq(fb_client_publish(root, "cam4.gray", &params, &prod), 0, "root may");
	cr_assert_eq(as(&d, BOB, BOB, 0, SUBSCRIBE, "cam4.gray", error), 0, "%s", error);

	/* Root may do everything. */
	fb_subscriber *sub;
	cr_assert_eq(fb_client_subscribe(root, "bars", FB_MODE_LATEST, 1, &sub), 0);
	fb_subscriber_free(sub);

	/* Refusals are logged, naming the client's uid and the rule: once
	 * per client and rule every 10 s. */
	wait_log(&d, "(uid 61235): denied by [access gray]", 5);
	const char *log = read_file(d.log);
	cr_assert_eq(count(log, "(uid 61235): denied by [access cameras]"), 3,
		     "one line per client:\n%s", log);
	cr_assert_eq(fb_client_unpublish(root, prod), 0);
	fb_client_free(root);
	stop(&d);
}

static int refused_many(const struct daemon *d, void *arg, char *error, size_t size)
{
	fb_subscriber *sub;
	fb_client *c;
	int r = fb_client_connect(d->socket, "persistent", &c);
	(void)arg;
	if (r < 0)
		return r;
	for (int i = 0; i < 5; i++)
		r = fb_client_subscribe(c, "bars", FB_MODE_LATEST, 1, &sub);
	snprintf(error, size, "%s", fb_client_last_error(c));
	fb_client_free(c);
	return r;
}

Test(daemon, access_refusals_are_logged_at_most_once_per_rule_and_client)
{
	struct daemon d;
	char error[AS_USER_ERROR_MAX];
	start_open(&d, "[access cameras]\nstreams = b*\nsubscribe = 61234\n");
	fb_client *root = client(&d);
	wait_state(root, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(as_user(&d, BOB, BOB, NULL, 0, refused_many, NULL, error), -EACCES);
	cr_assert(
	    strstr(error, "denied by [access cameras]: uid 61235 may not subscribe to 'bars'"),
	    "%s", error);
	wait_log(&d, "client persistent", 5);
	/* The client's hang-up comes after its five refusals. */
	wait_log(&d, "disconnected", 5);
	cr_assert_eq(count(read_file(d.log), "(uid 61235): denied by [access cameras]"), 1, "%s",
		     read_file(d.log));
	fb_client_free(root);
	stop(&d);
}

/* A name a rule reserves cannot be taken before its publisher comes. */
Test(daemon, reserved_names_cannot_be_squatted)
{
	struct daemon d;
	char error[AS_USER_ERROR_MAX];
	start_open(&d, "[access analytics]\nstreams = results.* det-[0-9]\npublish = 61234\n"
		       "[access closed]\nstreams = private\n"
		       "[access named]\nstreams = nobody.*\npublish = nobody\n");
	cr_assert_eq(as(&d, BOB, BOB, 0, PUBLISH, "results.cam0", error), -EACCES);
	cr_assert(strstr(error, "[access analytics]"), "%s", error);
	cr_assert_eq(as(&d, BOB, BOB, 0, PUBLISH, "det-7", error), -EACCES);
	cr_assert_eq(as(&d, BOB, BOB, 0, PUBLISH, "private", error), -EACCES);
	cr_assert(strstr(error, "[access closed]"), "%s", error);
	cr_assert_eq(as(&d, ALICE, ALICE, 0, PUBLISH, "private", error), -EACCES, "no publish key");
	cr_assert_eq(as(&d, ALICE, ALICE, 0, PUBLISH, "results.cam0", error), 0, "%s", error);
	cr_assert_eq(as(&d, ALICE, ALICE, 0, PUBLISH, "det-77", error), 0, "not matched: %s",
		     error);
	/* Users by name, resolved at load. */
	cr_assert_eq(as(&d, 65534, 65534, 0, PUBLISH, "nobody.x", error), 0, "%s", error);
	cr_assert_eq(as(&d, ALICE, ALICE, 0, PUBLISH, "nobody.x", error), -EACCES);
	cr_assert(strstr(error, "[access named]"), "%s", error);
	fb_client *root = client(&d);
	struct fb_stream_info info;
	cr_assert_eq(fb_client_get_stream(root, "results.cam0", &info), -ENOENT,
		     "the refused and the withdrawn left nothing");
	fb_client_free(root);
	stop(&d);
}

/* A reload's rules apply to the next requests. */
Test(daemon, reloaded_rules_apply_to_new_requests)
{
	struct daemon d;
	char error[AS_USER_ERROR_MAX];
	start_open(&d, "");
	fb_client *root = client(&d);
	wait_state(root, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(as(&d, BOB, BOB, 0, SUBSCRIBE, "bars", error), 0, "no rules: %s", error);
	char config[1024];
	snprintf(config, sizeof(config),
		 "[daemon]\nsocket_mode = 0666\n%s[access cameras]\nstreams = *\nsubscribe = %d\n",
		 lavfi_config, ALICE);
	write_file(d.config, config);
	kill(d.pid, SIGHUP);
	wait_log(&d, "reloading", 10);
	/* It logs that before it applies the file, in the same turn of its
	 * loop: any request after it meets the new rules. */
	cr_assert_eq(as(&d, BOB, BOB, 0, SUBSCRIBE, "bars", error), -EACCES, "%s", error);
	cr_assert_eq(as(&d, ALICE, ALICE, 0, SUBSCRIBE, "bars", error), 0, "%s", error);
	fb_client_free(root);
	stop(&d);
}

/* One user's hog: 50 connections, then subscriptions and streams on them
 * until refused.  Returns connections x 10000 + subscriptions x 100 +
 * streams x 10 + 1 if the big ring was refused for memory; error: the four
 * refusals, separated by '|'. */
static int hog(const struct daemon *d, void *arg, char *error, size_t size)
{
	struct fb_ring_params small = th_params(16, 16, FB_FORMAT_GRAY8, 3, FB_POLICY_DROP);
	struct fb_ring_params big = th_params(1920, 1080, FB_FORMAT_BGR24, 8, FB_POLICY_DROP);
	fb_client *c[50];
	fb_subscriber *subs[50];
	fb_producer *prods[10], *prod;
	int conns = 0, n_subs = 0, n_streams = 0, r;
	char name[32];
	size_t at = 0;
	(void)arg;
	error[0] = '\0';
	for (int i = 0; i < 50; i++)
		if ((r = fb_client_connect(d->socket, "hog", &c[conns])) == 0)
			conns++;
		else if (r != -EUSERS)
			return r;
	fb_client *refused;
	r = fb_client_connect(d->socket, "hog", &refused);
	at += (size_t)snprintf(error + at, size - at, "%d %s|", r, fb_strerror(r));
	for (int i = 0; conns && i < 50; i++) {
		fb_client *on = c[i % conns];
		if ((r = fb_client_subscribe(on, "wide", FB_MODE_LATEST, 1, &subs[n_subs])) == 0)
			n_subs++;
		else if (at < size)
			at += (size_t)snprintf(error + at, size - at, "%s|",
					       fb_client_last_error(on));
		if (r < 0)
			break;
	}
	for (int i = 0; conns && i < 10; i++) {
		fb_client *on = c[i % conns];
		snprintf(name, sizeof(name), "hog%d", i);
		if ((r = fb_client_publish(on, name, &small, &prods[n_streams])) == 0)
			n_streams++;
		else if (at < size)
			at += (size_t)snprintf(error + at, size - at, "%s|",
					       fb_client_last_error(on));
		if (r < 0)
			break;
	}
	if (conns && n_streams)
		fb_client_unpublish(c[0], prods[0]);
	bool big_refused = conns && fb_client_publish(c[0], "hog.big", &big, &prod) == -EDQUOT;
	if (conns && at < size)
		snprintf(error + at, size - at, "%s", fb_client_last_error(c[0]));
	return conns * 10000 + n_subs * 100 + n_streams * 10 + big_refused;
}

Test(daemon, per_user_limits_hold_over_all_connections)
{
	struct daemon d;
	char error[AS_USER_ERROR_MAX];
	start_open(&d, "[stream wide]\nurl = testsrc2=size=64x48:rate=25\ninput_format = lavfi\n"
		       "width = 64\nheight = 48\nformat = gray8\nslots = 64\n"
		       "[daemon]\nmax_connections_per_user = 8\n"
		       "max_subscriptions_per_user = 10\nmax_streams_per_user = 3\n"
		       "max_memory_per_user = 16M\n");
	fb_client *root = client(&d);
	wait_state(root, "wide", FB_STREAM_RUNNING, 10);
	int r = as_user(&d, ALICE, ALICE, NULL, 0, hog, NULL, error);
	cr_assert_eq(r / 10000, 8, "connections: %d (%s)", r, error);
	cr_assert_eq(r / 100 % 100, 10, "subscriptions: %d (%s)", r, error);
	cr_assert_eq(r / 10 % 10, 3, "streams: %d (%s)", r, error);
	cr_assert_eq(r % 10, 1, "the big ring: %d (%s)", r, error);
	cr_assert(strstr(error, "-87 "), "the 51st connection: %s", error);
	/* 42 refusals, one log line. */
	wait_log(&d, "(uid 61234): uid 61234 already has 8 connections", 5);
	cr_assert_eq(count(read_file(d.log), "(uid 61234): uid 61234 already has 8"), 1, "%s",
		     read_file(d.log));
	cr_assert(strstr(error, "|uid 61234 already has 10 subscriptions, its "
				"max_subscriptions_per_user|uid 61234 already publishes 3 "
				"streams, its max_streams_per_user|"),
		  "%s", error);
	cr_assert(strstr(error, "past its max_memory_per_user"), "%s", error);
	/* Another user is not counted with it. */
	cr_assert_eq(as(&d, BOB, BOB, 0, SUBSCRIBE, "wide", error), 0, "%s", error);
	/* The hog gone (once the daemon saw its hang-ups), its user starts
	 * from nothing. */
	uint64_t until = fb_now_ns() + 5000000000ull;
	while ((r = as(&d, ALICE, ALICE, 0, SUBSCRIBE, "wide", error)) == -EUSERS &&
	       fb_now_ns() < until)
		th_sleep_us(20000);
	cr_assert_eq(r, 0, "%s", error);
	fb_client_free(root);
	stop(&d);
}

/* A subscriber run as uid that takes max_holds of stream (in latest mode)
 * and holds as many frames until it is killed.  Returns the subscribe's
 * result (0: it holds them now) and the daemon's text. */
static int start_holder(const struct daemon *d, const char *stream, uid_t uid, uint32_t max_holds,
			char *error, pid_t *ret_pid)
{
	struct {
		int r;
		char error[256];
	} out = {0};
	int result[2];
	cr_assert_eq(pipe(result), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0)
			_exit(2);
		fb_client *c;
		fb_subscriber *sub;
		const struct fb_frame *f;
		out.r = fb_client_connect(d->socket, "holder", &c);
		if (out.r == 0)
			out.r = fb_client_subscribe(c, stream, FB_MODE_LATEST, max_holds, &sub);
		snprintf(out.error, sizeof(out.error), "%s",
			 out.r < 0 && c ? fb_client_last_error(c) : "");
		/* Each acquire waits for a newer frame: max_holds distinct ones. */
		for (uint32_t i = 0; out.r == 0 && i < max_holds; i++)
			out.r = fb_subscriber_acquire(sub, 5000, &f);
		(void)!write(result[1], &out, sizeof(out));
		for (;;)
			pause();
	}
	close(result[1]);
	cr_assert_eq(read(result[0], &out, sizeof(out)), (ssize_t)sizeof(out), "the holder died");
	close(result[0]);
	snprintf(error, 256, "%s", out.error);
	*ret_pid = pid;
	return out.r;
}

static void stop_holder(pid_t pid)
{
	kill(pid, SIGKILL);
	th_wait(pid);
}

Test(daemon, holding_subscribers_leave_the_producer_a_slot)
{
	struct daemon d;
	char error[AS_USER_ERROR_MAX];
	pid_t alice, bob, refused;
	/* bars: 6 slots, drop; blocky: 3 slots, block */
	start_open(&d, "[stream blocky]\nurl = testsrc2=size=64x48:rate=50\ninput_format = lavfi\n"
		       "width = 64\nheight = 48\nslots = 3\npolicy = block\n");
	fb_client *root = client(&d);
	wait_state(root, "bars", FB_STREAM_RUNNING, 10);
	cr_assert_eq(start_holder(&d, "bars", ALICE, 3, error, &alice), 0, "%s", error);
	/* 3 + 3 would pin all 6 slots: refused, naming what is left. */
	cr_assert_eq(start_holder(&d, "bars", BOB, 3, error, &refused), -EDQUOT);
	stop_holder(refused);
	cr_assert(strstr(error, "stream 'bars' has 6 slots and its subscribers may already "
				"hold 3 frames: 2 holds left"),
		  "%s", error);
	cr_assert_eq(start_holder(&d, "bars", BOB, 2, error, &bob), 0, "%s", error);
	/* Nothing is left: even the default is refused. */
	cr_assert_eq(as(&d, BOB, BOB, 0, SUBSCRIBE, "bars", error), -EDQUOT);
	cr_assert(strstr(error, "0 holds left"), "%s", error);

	struct fb_stream_info info;
	struct fb_subscription_info *subs;
	size_t n;
	cr_assert_eq(fb_client_inspect(root, "bars", &info, &subs, &n), 0);
	cr_assert_eq(info.holds_promised, 5);
	cr_assert_eq(info.block_timeout_ms, 0, "a drop stream");
	cr_assert_eq(n, 2);
	for (size_t i = 0; i < n; i++)
		cr_assert(subs[i].uid == ALICE || subs[i].uid == BOB, "uid %u", subs[i].uid);
	free(subs);

	/* Five frames held: the producer goes on in the sixth slot. */
	fb_subscriber *sub;
	const struct fb_frame *f;
	cr_assert_eq(fb_client_subscribe(root, "bars", FB_MODE_LATEST, 1, &sub), 0);
	uint64_t first = 0, last = 0;
	for (int i = 0; i < 20; i++) {
		cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "frame %d", i);
		first = first ? first : f->seq;
		cr_assert_gt(f->seq, last);
		last = f->seq;
		fb_subscriber_release(sub, f);
	}
	cr_assert_geq(last - first, 19);
	fb_subscriber_free(sub);

	/* A block stream keeps its slot the same way. */
	pid_t blocker;
	wait_state(root, "blocky", FB_STREAM_RUNNING, 10);
	cr_assert_eq(start_holder(&d, "blocky", ALICE, 2, error, &blocker), 0, "%s", error);
	cr_assert_eq(as(&d, BOB, BOB, 0, SUBSCRIBE, "blocky", error), -EDQUOT);
	cr_assert(strstr(error, "stream 'blocky' has 3 slots"), "%s", error);
	cr_assert_eq(fb_client_subscribe(root, "blocky", FB_MODE_QUEUE, 1, &sub), 0);
	last = 0;
	for (int i = 0; i < 20; i++) {
		cr_assert_eq(fb_subscriber_acquire(sub, 2000, &f), 0, "blocky frame %d", i);
		cr_assert(!last || f->seq == last + 1);
		last = f->seq;
		fb_subscriber_release(sub, f);
	}
	fb_subscriber_free(sub);
	stop_holder(blocker);
	stop_holder(alice);
	stop_holder(bob);
	fb_client_free(root);
	stop(&d);
}

static void on_event(void *data, const char *stream, uint32_t state, const char *detail)
{
	(void)stream;
	(void)state;
	snprintf(data, 256, "%s", detail);
}

/* Wait for a queue subscriber that never reads to be found stalling block
 * stream name (its client c sees the event), then check that the stream's
 * other queue subscriber, reader, gets every frame from then on. */
static void expect_stall(struct daemon *d, fb_client *c, const char *name, fb_subscriber *reader,
			 double block_timeout, const char *what)
{
	char event[256] = "";
	const struct fb_frame *f;
	fb_client_set_event_callback(c, on_event, event);
	/* Found within block_timeout and a second of sampling: 3 s is slack
	 * for a loaded host. */
	uint64_t until = fb_now_ns() + (uint64_t)((block_timeout + 3) * 1e9), last = 0;
	while (!strstr(event, what) && fb_now_ns() < until) {
		fb_client_process(c);
		/* The reader reads all there is: it stalls nothing. */
		while (fb_subscriber_acquire(reader, 0, &f) == 0) {
			cr_assert(!last || f->seq == last + 1, "%s: %llu after %llu", name,
				  (unsigned long long)f->seq, (unsigned long long)last);
			last = f->seq;
			fb_subscriber_release(reader, f);
		}
		th_sleep_us(20000);
	}
	cr_assert(strstr(event, "read nothing for"), "%s: no event (%s):\n%s", name, event,
		  read_file(d->log));
	cr_assert(strstr(event, what), "%s: %s", name, event);
	/* From then on the reader gets every frame, none missed. */
	for (int i = 0; i < 100; i++) {
		cr_assert_eq(fb_subscriber_acquire(reader, 3000, &f), 0, "%s: frame %d", name, i);
		cr_assert(!last || f->seq == last + 1, "%s: %llu after %llu", name,
			  (unsigned long long)f->seq, (unsigned long long)last);
		cr_assert_eq(f->missed, 0);
		last = f->seq;
		fb_subscriber_release(reader, f);
	}
}

Test(daemon, a_stalled_queue_subscriber_stops_holding_back_a_block_stream)
{
	struct daemon d;
	char config[1024];
	const struct fb_frame *f;
	const char *stream = "url = testsrc2=size=64x48:rate=100\ninput_format = lavfi\n"
			     "width = 64\nheight = 48\nformat = gray8\nslots = 4\n"
			     "policy = block\nblock_timeout = 1s\n";
	snprintf(config, sizeof(config), "[stream skip]\n%s[stream strict]\n%son_stall = drop\n",
		 stream, stream);
	start(&d, config);
	fb_client *c = client(&d), *readers = client(&d);
	fb_subscriber *stalled, *dropped, *reader1, *reader2;
	wait_state(c, "skip", FB_STREAM_RUNNING, 10);
	wait_state(c, "strict", FB_STREAM_RUNNING, 10);
	cr_assert_eq(fb_client_subscribe(c, "skip", FB_MODE_QUEUE, 1, &stalled), 0);
	cr_assert_eq(fb_client_subscribe(readers, "skip", FB_MODE_QUEUE, 1, &reader1), 0);

	/* on_stall = latest: no longer waited for; it reads on, missing what
	 * it lost. */
	expect_stall(&d, c, "skip", reader1, 1, "no longer waited for");
	wait_log(&d, "stream skip: client test[", 1);
	cr_assert_eq(fb_subscriber_acquire(stalled, 3000, &f), 0);
	cr_assert_gt(f->missed, 0, "the frames it let go were overwritten");
	fb_subscriber_release(stalled, f);

	/* framebusctl status: the count, the flag, each subscription's uid. */
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "%s --socket %s status --json > %s/status.json",
		 FRAMEBUSCTL_PATH, d.socket, d.dir);
	cr_assert_eq(run(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/status.json", d.dir);
	const char *json = read_file(cmd);
	cr_assert(strstr(json, "\"stalls\": 1"), "%s", json);
	cr_assert(strstr(json, "\"uid\": 0, \"stalled\": true"), "%s", json);
	cr_assert(strstr(json, "\"uid\": 0, \"stalled\": false"), "%s", json);
	struct fb_stream_info info;
	struct fb_subscription_info *subs;
	size_t n;
	cr_assert_eq(fb_client_inspect(c, "skip", &info, &subs, &n), 0);
	cr_assert_eq(info.stalls, 1);
	cr_assert_eq(info.block_timeout_ms, 1000);
	cr_assert_eq(n, 2);
	for (size_t i = 0; i < n; i++) {
		bool is_stalled = subs[i].flags & FB_SUBSCRIPTION_STALLED;
		cr_assert(subs[i].flags & FB_SUBSCRIPTION_UID);
		cr_assert_eq(subs[i].uid, 0);
		cr_assert_eq(subs[i].mode, is_stalled ? FB_MODE_LATEST : FB_MODE_QUEUE,
			     "the producer treats it as latest now");
	}
	free(subs);

	/* on_stall = drop: its subscription ends. */
	cr_assert_eq(fb_client_subscribe(c, "strict", FB_MODE_QUEUE, 1, &dropped), 0);
	cr_assert_eq(fb_client_subscribe(readers, "strict", FB_MODE_QUEUE, 1, &reader2), 0);
	expect_stall(&d, c, "strict", reader2, 1, "dropped");
	int r;
	while ((r = fb_subscriber_acquire(dropped, 3000, &f)) == 0)
		fb_subscriber_release(dropped, f);
	cr_assert_eq(r, -ECANCELED, "%s", fb_strerror(r));

	fb_subscriber_free(stalled);
	fb_subscriber_free(dropped);
	fb_subscriber_free(reader1);
	fb_subscriber_free(reader2);
	fb_client_free(readers);
	fb_client_free(c);
	stop(&d);
}

struct publisher {
	fb_producer *producer;
	atomic_bool stop;
};

/* Publish as fast as the ring lets it, until told to stop. */
static void *publish_loop(void *arg)
{
	struct publisher *pub = arg;
	struct fb_frame *f;
	while (!atomic_load(&pub->stop))
		if (fb_producer_acquire(pub->producer, 50, &f) == 0)
			fb_producer_publish(pub->producer, f);
	return NULL;
}

/* A client's block stream has no section: the default block_timeout (2 s),
 * on_stall latest, through the record the daemon keeps mapped. */
Test(daemon, a_stalled_queue_subscriber_stops_holding_back_a_clients_block_stream)
{
	struct daemon d;
	struct fb_ring_params params = th_params(16, 16, FB_FORMAT_GRAY8, 4, FB_POLICY_BLOCK);
	struct publisher pub = {0};
	fb_subscriber *stalled, *reader;
	pthread_t thread;
	start(&d, "");
	fb_client *publisher = client(&d), *c = client(&d), *readers = client(&d);
	cr_assert_eq(fb_client_publish(publisher, "pub.block", &params, &pub.producer), 0);
	cr_assert_eq(pthread_create(&thread, NULL, publish_loop, &pub), 0);
	cr_assert_eq(fb_client_subscribe(c, "pub.block", FB_MODE_QUEUE, 1, &stalled), 0);
	cr_assert_eq(fb_client_subscribe(readers, "pub.block", FB_MODE_QUEUE, 1, &reader), 0);
	expect_stall(&d, c, "pub.block", reader, 2, "no longer waited for");
	atomic_store(&pub.stop, true);
	pthread_join(thread, NULL);
	fb_subscriber_free(stalled);
	fb_subscriber_free(reader);
	cr_assert_eq(fb_client_unpublish(publisher, pub.producer), 0);
	fb_client_free(readers);
	fb_client_free(c);
	fb_client_free(publisher);
	stop(&d);
}

/* The record of the only subscription this process has: the memfd the
 * library maps, found among our descriptors by its name. */
static struct fb__record *map_own_record(void)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *e;
	char path[300], target[128];
	struct fb__record *rec = NULL;
	cr_assert_not_null(dir);
	while (!rec && (e = readdir(dir))) {
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (!strstr(target, "memfd:framebus-record"))
			continue;
		rec = mmap(NULL, FB__RECORD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			   atoi(e->d_name), 0);
		cr_assert_neq(rec, MAP_FAILED);
	}
	closedir(dir);
	cr_assert_not_null(rec, "no record among our descriptors");
	return rec;
}

struct rocker {
	struct fb__record *rec;
	uint64_t cursor;
	atomic_bool stop;
};

/* Move the cursor, every sample a new value, never past where it was. */
static void *rock_cursor(void *arg)
{
	struct rocker *r = arg;
	while (!atomic_load(&r->stop) && r->cursor > 1) {
		atomic_store(&r->rec->cursor, --r->cursor);
		th_sleep_us(200000);
	}
	return NULL;
}

/* A hostile queue subscriber that moves its cursor (backwards) between the
 * daemon's samples to look alive is found stalling all the same: only
 * moving past the furthest it reached counts. */
Test(daemon, a_subscriber_rocking_its_cursor_is_still_found_stalling)
{
	struct daemon d;
	fb_subscriber *hostile, *reader;
	pthread_t thread;
	start(&d, "[stream skip]\nurl = testsrc2=size=64x48:rate=100\ninput_format = lavfi\n"
		  "width = 64\nheight = 48\nformat = gray8\nslots = 4\npolicy = block\n"
		  "block_timeout = 1s\n");
	fb_client *c = client(&d), *readers = client(&d);
	struct fb_stream_info info = wait_state(c, "skip", FB_STREAM_RUNNING, 10);
	for (int i = 0; i < 500 && info.published <= 40; i++) {
		th_sleep_us(10000);
		cr_assert_eq(fb_client_get_stream(c, "skip", &info), 0);
	}
	cr_assert_eq(fb_client_subscribe(c, "skip", FB_MODE_QUEUE, 1, &hostile), 0);
	struct rocker rocker = {.rec = map_own_record()};
	rocker.cursor = atomic_load(&rocker.rec->cursor);
	cr_assert_gt(rocker.cursor, 30, "the stream ran a while: room to move back");
	cr_assert_eq(fb_client_subscribe(readers, "skip", FB_MODE_QUEUE, 1, &reader), 0);
	cr_assert_eq(pthread_create(&thread, NULL, rock_cursor, &rocker), 0);
	expect_stall(&d, c, "skip", reader, 1, "no longer waited for");
	atomic_store(&rocker.stop, true);
	pthread_join(thread, NULL);
	munmap(rocker.rec, FB__RECORD_SIZE);
	fb_subscriber_free(hostile);
	fb_subscriber_free(reader);
	fb_client_free(readers);
	fb_client_free(c);
	stop(&d);
}

/* A subscriber that holds one frame past hold_timeout loses its
 * subscription; one that reads on, and one of a stream without the limit,
 * keep theirs. */
Test(daemon, a_subscriber_holding_a_frame_past_hold_timeout_is_dropped)
{
	struct daemon d;
	char config[1024];

	snprintf(config, sizeof(config),
		 "%shold_timeout = 1s\n"
		 "[stream free]\nurl = testsrc2=size=64x48:rate=25\ninput_format = lavfi\n"
		 "width = 64\nheight = 48\nformat = gray8\n",
		 lavfi_config);
	start(&d, config);
	fb_client *c = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 5);
	wait_state(c, "free", FB_STREAM_RUNNING, 5);
	fb_subscriber *holder, *reader, *free_holder;
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 0, &holder), 0);
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 0, &reader), 0);
	cr_assert_eq(fb_client_subscribe(c, "free", FB_MODE_LATEST, 0, &free_holder), 0);
	const struct fb_frame *held, *free_held, *f;
	cr_assert_eq(fb_subscriber_acquire(holder, 2000, &held), 0);
	cr_assert_eq(fb_subscriber_acquire(free_holder, 2000, &free_held), 0);

	/* Four seconds of reading on, each frame released. */
	uint64_t until = fb_now_ns() + 4000000000u, frames = 0;
	while (fb_now_ns() < until) {
		cr_assert_eq(fb_subscriber_acquire(reader, 2000, &f), 0,
			     "the reader lost its frames");
		fb_subscriber_release(reader, f);
		frames++;
	}
	cr_assert_geq(frames, 100, "the reader got %lu frames in 4 s at 50 fps",
		      (unsigned long)frames);
	int r = fb_subscriber_acquire(holder, 0, &f);
	cr_assert_eq(r, -ECANCELED, "the holder was not dropped: %s", fb_strerror(r));
	wait_log(&d, "(hold_timeout): dropped", 2);
	/* The stream without hold_timeout keeps its holder. */
	r = fb_subscriber_acquire(free_holder, 2000, &f);
	cr_assert_eq(r, 0, "the holder of a stream without hold_timeout: %s", fb_strerror(r));
	fb_subscriber_release(free_holder, f);
	fb_subscriber_release(free_holder, free_held);
	fb_client_unsubscribe(c, holder);
	fb_client_unsubscribe(c, reader);
	fb_client_unsubscribe(c, free_holder);
	fb_client_free(c);
	stop(&d);
}

/* Whether holder's subscription is dropped within seconds: frames it takes
 * meanwhile (beside the one it holds) it gives back at once. */
static bool dropped_within(fb_subscriber *holder, int seconds)
{
	const struct fb_frame *f;
	for (int i = 0; i < seconds * 20; i++) {
		int r = fb_subscriber_acquire(holder, 0, &f);
		if (r == -ECANCELED)
			return true;
		if (r == 0)
			fb_subscriber_release(holder, f);
		th_sleep_us(50000);
	}
	return false;
}

/* [daemon]'s hold_timeout covers the sections without their own and
 * clients' streams, which have no section; a section's own (off) wins. */
Test(daemon, the_daemons_hold_timeout_covers_clients_streams_and_sections_without_one)
{
	struct daemon d;
	char config[1024];
	struct fb_ring_params params = th_params(16, 16, FB_FORMAT_GRAY8, 4, FB_POLICY_DROP);
	snprintf(config, sizeof(config),
		 "[daemon]\nhold_timeout = 1s\n%s"
		 "[stream free]\nurl = testsrc2=size=64x48:rate=25\ninput_format = lavfi\n"
		 "width = 64\nheight = 48\nformat = gray8\nhold_timeout = off\n",
		 lavfi_config);
	start(&d, config);
	fb_client *c = client(&d), *publisher = client(&d);
	wait_state(c, "bars", FB_STREAM_RUNNING, 5);
	wait_state(c, "free", FB_STREAM_RUNNING, 5);
	fb_producer *prod;
	cr_assert_eq(fb_client_publish(publisher, "pub.held", &params, &prod), 0);
	fb_subscriber *bars, *free_holder, *pub_holder;
	cr_assert_eq(fb_client_subscribe(c, "bars", FB_MODE_LATEST, 0, &bars), 0);
	cr_assert_eq(fb_client_subscribe(c, "free", FB_MODE_LATEST, 0, &free_holder), 0);
	cr_assert_eq(fb_client_subscribe(c, "pub.held", FB_MODE_LATEST, 0, &pub_holder), 0);
	struct fb_frame *out;
	cr_assert_eq(fb_producer_acquire(prod, 1000, &out), 0);
	cr_assert_eq(fb_producer_publish(prod, out), 0);
	const struct fb_frame *held[3], *f;
	cr_assert_eq(fb_subscriber_acquire(bars, 2000, &held[0]), 0);
	cr_assert_eq(fb_subscriber_acquire(free_holder, 2000, &held[1]), 0);
	cr_assert_eq(fb_subscriber_acquire(pub_holder, 2000, &held[2]), 0);

	cr_assert(dropped_within(pub_holder, 5), "the holder of a client's stream was not dropped");
	cr_assert(dropped_within(bars, 5), "the holder of a section without hold_timeout was kept");
	wait_log(&d, "stream pub.held: client", 2);
	/* The section that says off keeps its holder. */
	int r = fb_subscriber_acquire(free_holder, 2000, &f);
	cr_assert_eq(r, 0, "the holder of a stream with hold_timeout = off: %s", fb_strerror(r));
	fb_subscriber_release(free_holder, f);
	fb_subscriber_release(free_holder, held[1]);
	fb_client_unsubscribe(c, bars);
	fb_client_unsubscribe(c, free_holder);
	fb_client_unsubscribe(c, pub_holder);
	cr_assert_eq(fb_client_unpublish(publisher, prod), 0);
	fb_client_free(publisher);
	fb_client_free(c);
	stop(&d);
}

/* The limits in force, and a user's use of them, through the library and
 * in framebusctl status, for root (exempt) and for another user. */
Test(daemon, status_shows_the_limits_in_force)
{
	struct daemon d;
	char config[1024], cmd[512], out[160];

	snprintf(config, sizeof(config),
		 "[daemon]\nsocket_mode = 0666\nmax_connections_per_user = 7\n"
		 "max_memory_per_user = 64M\n%s",
		 lavfi_config);
	start(&d, config);
	cr_assert_eq(chmod(d.dir, 0755), 0);
	fb_client *c = client(&d);
	struct fb_limits l;
	cr_assert_eq(fb_client_get_limits(c, &l), 0);
	cr_assert_eq(l.uid, 0);
	cr_assert_eq(l.exempt, 1);
	cr_assert_eq(l.max_connections_per_user, 7);
	cr_assert_eq(l.max_memory_per_user, 64u << 20);
	cr_assert_eq(l.max_clients, 256);
	cr_assert_geq(l.connections, 1);

	snprintf(out, sizeof(out), "%s/status.txt", d.dir);
	snprintf(
	    cmd, sizeof(cmd),
	    "setpriv --reuid 61234 --regid 61234 --clear-groups %s --socket %s status >%s 2>&1",
	    FRAMEBUSCTL_PATH, d.socket, out);
	cr_assert_eq(run(cmd), 0, "%s", read_file(out));
	cr_assert(strstr(read_file(out),
			 "limits: per user (uid 61234) 1 of 7 connections, 0 of "
			 "256 subscriptions, 0 of 16 streams, 0 bytes of 64M of rings"),
		  "%s", read_file(out));
	snprintf(cmd, sizeof(cmd),
		 "setpriv --reuid 61234 --regid 61234 --clear-groups %s --socket %s status --json "
		 ">%s 2>&1",
		 FRAMEBUSCTL_PATH, d.socket, out);
	cr_assert_eq(run(cmd), 0, "%s", read_file(out));
	cr_assert(strstr(read_file(out), "\"uid\": 61234, \"exempt\": false") &&
		      strstr(read_file(out), "\"max_connections_per_user\": 7"),
		  "%s", read_file(out));
	fb_client_free(c);
	stop(&d);
}
