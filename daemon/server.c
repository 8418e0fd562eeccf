/* SPDX-License-Identifier: MIT */
/* The control socket: SOCK_SEQPACKET, one uv_poll_t per client, one reply per
 * request.  Whatever a client sends, only that client can suffer for it. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "access.h"
#include "daemon.h"
#include "log.h"
#include "protocol-private.h"
#include "ring-private.h"

/* Subscriber places (of FB_MAX_SUBSCRIBERS) one client may take on one stream. */
#define MAX_SUBSCRIPTIONS_PER_STREAM (FB_MAX_SUBSCRIBERS / 4)
/* A client's refusals by one rule are logged at most once in this time. */
#define DENIAL_LOG_INTERVAL_NS 10000000000ull
#define DENIALS_REMEMBERED 4

/* The last log line about a client's requests a rule refused. */
struct denial {
	char rule[FB__NAME_MAX];
	uint64_t logged_ns;
	uint32_t suppressed; /* refusals not logged since */
};

struct subscription {
	uint32_t id;
	struct fbd_stream *stream;
	uint32_t ring_id; /* the producer's id for it */
	uint32_t mode;
	uint32_t holds; /* the frames it may hold at once */
	/* A queue subscription of a block stream: the furthest its cursor
	 * reached, since when it has not moved past it with the ring full, and
	 * whether it stalled the stream (check_stall). */
	uint64_t still_cursor;
	uint64_t still_since_ns;
	bool stalled;
	/* The frame it held in each slot at the last sample (0: none) and since
	 * when (check_holds). */
	uint64_t hold_seq[FB_MAX_SLOTS];
	uint64_t hold_since_ns[FB_MAX_SLOTS];
	/* What it took, sampled every second (fbd_server_sample). */
	struct fbd_window rates;
};

struct fbd_client {
	struct fbd_daemon *d;
	struct fbd_client *next;
	uv_poll_t poll;
	int fd;
	uint32_t id;
	struct ucred cred;
	struct fbd_peer peer; /* its uid and groups, for the access rules */
	struct denial denials[DENIALS_REMEMBERED];
	bool said_hello;
	bool paused; /* its replies are unread: its requests wait */
	char name[FB__NAME_MAX];
	char label[FB__NAME_MAX + 32]; /* "name[pid]" for logs and status */
	struct subscription *subs;
	uint32_t n_subs;
};

static void client_close(struct fbd_client *c, const char *why);
static void send_event(struct fbd_client *c, struct fbd_stream *st, uint32_t subscription,
		       uint32_t state, const char *detail);
static void stream_changed(struct fbd_daemon *d, struct fbd_stream *st, uint32_t state,
			   const char *detail);

static int send_error(struct fbd_client *c, uint32_t seq, int error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int send_error(struct fbd_client *c, uint32_t seq, int error, const char *fmt, ...)
{
	struct fb__msg_error e = {.error = error};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e.text, sizeof(e.text), fmt, ap);
	va_end(ap);
	fbd_log_about(LOG_DEBUG, NULL, c->label, "client %s: error: %s", c->label, e.text);
	return fb__msg_send(c->fd, FB__OP_ERROR, seq, &e, sizeof(e), NULL, 0);
}

/* Whether c may do op on the stream name (refused: answered, and logged at
 * most once per rule every DENIAL_LOG_INTERVAL_NS). */
static bool allowed(struct fbd_client *c, uint32_t seq, enum fbd_access_op op, const char *name)
{
	char why[FB__ERROR_TEXT_MAX];
	const char *rule;
	int r = fbd_access_check(c->d->config, &c->peer, op, name, &rule, why, sizeof(why));
	if (r == 0)
		return true;
	send_error(c, seq, r, "%s", why);
	uint64_t now = fb_now_ns();
	struct denial *slot = &c->denials[0];
	for (uint32_t i = 0; i < DENIALS_REMEMBERED; i++) {
		if (!strcmp(c->denials[i].rule, rule)) {
			slot = &c->denials[i];
			break;
		}
		if (c->denials[i].logged_ns < slot->logged_ns)
			slot = &c->denials[i]; /* else the oldest makes room */
	}
	if (strcmp(slot->rule, rule)) {
		*slot = (struct denial){0};
		snprintf(slot->rule, sizeof(slot->rule), "%s", rule);
	} else if (now - slot->logged_ns < DENIAL_LOG_INTERVAL_NS) {
		slot->suppressed++;
		return false;
	}
	char more[48] = "";
	if (slot->suppressed)
		snprintf(more, sizeof(more), " (and %u more not logged)", slot->suppressed);
	fbd_log_about(LOG_WARNING, name, c->label, "client %s (uid %u): %s%s", c->label,
		      (unsigned)c->peer.uid, why, more);
	slot->logged_ns = now;
	slot->suppressed = 0;
	return false;
}

/* Whether c may subscribe to st: by st's rule and each ancestor's, since a
 * derived stream (configured, or made on request and named after its
 * parent) shows its parent's pictures. */
static bool may_subscribe(struct fbd_client *c, uint32_t seq, struct fbd_stream *st)
{
	const char *name = st->name;
	for (uint32_t hops = 0; name && hops <= FBD_MAX_STREAMS; hops++) {
		if (!allowed(c, seq, FBD_ACCESS_SUBSCRIBE, name))
			return false;
		name = st && st->config ? st->config->from : NULL;
		st = name ? fbd_streams_find(c->d, name) : NULL;
	}
	return true;
}

static void drop_subscription(struct fbd_client *c, uint32_t i)
{
	struct fbd_stream *st = c->subs[i].stream;
	st->ops->unsubscribe(st, c->subs[i].ring_id);
	c->subs[i] = c->subs[--c->n_subs];
	fbd_streams_forget(c->d, st);
}

static void send_stream_info(struct fbd_client *c, uint32_t seq, struct fbd_stream *st)
{
	struct fb__msg_stream_info info;
	fbd_stream_describe(st, &info);
	fb__msg_send(c->fd, FB__OP_STREAM_INFO, seq, &info, sizeof(info), NULL, 0);
}

static struct fbd_stream *find_stream(struct fbd_client *c, uint32_t seq, const char *name,
				      size_t size)
{
	struct fbd_stream *st;
	if (!fb__name_valid(name, size)) {
		send_error(c, seq, -EINVAL, "the stream name is empty, too long or not printable");
		return NULL;
	}
	st = fbd_streams_find(c->d, name);
	if (!st)
		send_error(c, seq, -ENOENT, "no stream named '%s'", name);
	return st;
}

/* What one user (uid) has, over all its connections. */
struct usage {
	uint32_t connections, subscriptions, streams;
	uint64_t memory; /* of the rings it publishes */
};

static struct usage user_usage(const struct fbd_daemon *d, uint32_t uid)
{
	struct usage u = {0};
	struct fb__ring_geometry geo;
	for (const struct fbd_client *o = d->clients; o; o = o->next)
		if (o->peer.uid == uid) {
			u.connections++;
			u.subscriptions += o->n_subs;
		}
	for (uint32_t i = 0; i < d->n_streams; i++) {
		struct fbd_stream *st = d->streams[i];
		struct fb_ring_params params = fbd_stream_params(st);
		if (!st->owner || st->owner->peer.uid != uid)
			continue;
		u.streams++;
		if (fb__ring_geometry_compute(&params, &geo) == 0)
			u.memory += geo.total_size;
	}
	return u;
}

/* The frames st's subscribers may hold at once, all together. */
static uint32_t holds_promised(const struct fbd_daemon *d, const struct fbd_stream *st)
{
	uint32_t n = 0;
	for (const struct fbd_client *o = d->clients; o; o = o->next)
		for (uint32_t i = 0; i < o->n_subs; i++)
			if (o->subs[i].stream == st)
				n += o->subs[i].holds;
	return n;
}

/* What a subscription's record shows now, as a sample of its window. */
static int sample_subscription(const struct subscription *sub, struct fb__subscriber_sample *ss,
			       struct fbd_sample *ret_now)
{
	int r = sub->stream->ops->subscriber_sample(sub->stream, sub->ring_id, ss);
	if (r < 0)
		return r;
	ret_now->ns = fb_now_ns();
	ret_now->count = ss->frames;
	memcpy(ret_now->wait, ss->wait, sizeof(ret_now->wait));
	memcpy(ret_now->busy, ss->busy, sizeof(ret_now->busy));
	return 0;
}

/* Subscribe c to st (its request seq asked for mode and max_holds) and
 * answer; returns whether it did. */
static bool subscribe_to(struct fbd_client *c, uint32_t seq, struct fbd_stream *st, uint32_t mode,
			 uint32_t max_holds)
{
	struct fb_subscriber_fds fds;
	uint32_t ring_id;
	int r;

	if (mode != FB_MODE_LATEST && mode != FB_MODE_QUEUE) {
		send_error(c, seq, -EINVAL, "mode %u is neither latest (0) nor queue (1)", mode);
		return false;
	}
	uint32_t here = 0;
	for (uint32_t i = 0; i < c->n_subs; i++)
		here += c->subs[i].stream == st;
	/* One client may not take every subscriber place of a stream. */
	if (here >= MAX_SUBSCRIPTIONS_PER_STREAM) {
		send_error(c, seq, -EUSERS,
			   "this client already has %u subscriptions to '%s', the limit", here,
			   st->name);
		return false;
	}
	if (c->n_subs >= c->d->config->max_subscriptions_per_client) {
		send_error(c, seq, -EUSERS, "this client already has %u subscriptions, the limit",
			   c->n_subs);
		return false;
	}
	bool trusted = fbd_access_trusted(c->peer.uid);
	uint32_t theirs = user_usage(c->d, c->peer.uid).subscriptions;
	if (!trusted && theirs >= c->d->config->max_subscriptions_per_user) {
		send_error(c, seq, -EUSERS,
			   "uid %u already has %u subscriptions, its max_subscriptions_per_user",
			   (unsigned)c->peer.uid, theirs);
		return false;
	}
	struct fb_ring_params params = fbd_stream_params(st);
	uint32_t slots = params.slots;
	uint32_t holds = max_holds ? max_holds : c->d->config->default_max_holds;
	if (holds >= slots)
		holds = max_holds ? holds : slots - 1;
	if (holds < 1 || holds >= slots) {
		send_error(c, seq, -EINVAL, "max_holds %u: stream '%s' has %u slots, so 1 to %u",
			   max_holds, st->name, slots, slots - 1);
		return false;
	}
	/* However many subscribe, and whatever they ask, they may not hold
	 * every slot between them: one stays the producer's (a block stream
	 * pinned by holds would stall as surely as a drop one, and no cursor
	 * would show it).  A default is cut to what is left; an explicit ask
	 * is refused. */
	uint32_t promised = holds_promised(c->d, st);
	if (!trusted && promised + holds > slots - 1) {
		uint32_t left = promised < slots - 1 ? slots - 1 - promised : 0;
		if (max_holds || !left) {
			send_error(c, seq, -EDQUOT,
				   "stream '%s' has %u slots and its subscribers may already "
				   "hold %u frames: %u holds left (one slot stays its producer's)",
				   st->name, slots, promised, left);
			return false;
		}
		holds = left;
	}
	struct subscription *grown = realloc(c->subs, (c->n_subs + 1) * sizeof(*grown));
	if (!grown) {
		send_error(c, seq, -ENOMEM, "out of memory");
		return false;
	}
	c->subs = grown;
	r = st->ops->subscribe(st, mode, holds, &fds, &ring_id);
	if (r == -EAGAIN) {
		send_error(c, seq, r,
			   "stream '%s' is starting: its source has not told its size yet",
			   st->name);
		return false;
	}
	if (r < 0) {
		send_error(c, seq, r, "cannot subscribe to '%s': %s", st->name, fb_strerror(r));
		return false;
	}
	struct fb__msg_subscribed reply = {.id = ++c->d->next_subscription_id};
	int all[4] = {fds.frame_fd, fds.control_fd, fds.record_fd, fds.wake_fd};
	r = fb__msg_send(c->fd, FB__OP_SUBSCRIBED, seq, &reply, sizeof(reply), all, 4);
	fb_subscriber_fds_close(&fds);
	if (r < 0) {
		st->ops->unsubscribe(st, ring_id);
		return false;
	}
	struct subscription *sub = &c->subs[c->n_subs++];
	*sub = (struct subscription){.id = reply.id,
				     .stream = st,
				     .ring_id = ring_id,
				     .mode = mode,
				     .holds = holds,
				     .still_since_ns = fb_now_ns()};
	struct fb__subscriber_sample ss;
	struct fbd_sample now;
	if (sample_subscription(sub, &ss, &now) == 0)
		fbd_window_push(&sub->rates, &now);
	fbd_log_about(LOG_INFO, NULL, c->label, "client %s subscribed to %s (%s, holds up to %u)",
		      c->label, st->name, mode == FB_MODE_QUEUE ? "queue" : "latest", holds);
	return true;
}

static void handle_subscribe(struct fbd_client *c, const struct fb__msg *m)
{
	const struct fb__msg_subscribe *req = &m->body.subscribe;
	struct fbd_stream *st = find_stream(c, m->header.seq, req->stream, sizeof(req->stream));
	if (st && may_subscribe(c, m->header.seq, st))
		subscribe_to(c, m->header.seq, st, req->mode, req->max_holds);
}

static void handle_subscribe_derived(struct fbd_client *c, const struct fb__msg *m)
{
	const struct fb__msg_subscribe_derived *req = &m->body.subscribe_derived;
	uint32_t seq = m->header.seq;
	struct fbd_stream *parent = find_stream(c, seq, req->parent, sizeof(req->parent)), *st;
	char why[FB__ERROR_TEXT_MAX];

	if (!parent || !may_subscribe(c, seq, parent))
		return;
	int r = fbd_streams_derive(c->d, parent, &req->spec, c, why, sizeof(why), &st);
	if (r < 0) {
		send_error(c, seq, r, "cannot derive a stream from '%s': %s", parent->name, why);
		return;
	}
	if (!subscribe_to(c, seq, st, req->mode, req->max_holds))
		fbd_streams_forget(c->d, st); /* made for this request alone */
}

bool fbd_server_subscribed(struct fbd_daemon *d, const struct fbd_stream *st)
{
	for (struct fbd_client *c = d->clients; c; c = c->next)
		for (uint32_t i = 0; i < c->n_subs; i++)
			if (c->subs[i].stream == st)
				return true;
	return false;
}

static uint64_t block_timeout_ns(const struct fbd_stream *st)
{
	return st->config ? st->config->block_timeout_ns : FBD_DEFAULT_BLOCK_TIMEOUT_NS;
}

/* A queue subscriber of a block stream that leaves the ring full of frames
 * it has not read, its cursor standing still, for block_timeout stalls the
 * stream and every other subscriber with it: the stream stops waiting for
 * it (on_stall = latest) or drops it (drop). */
static bool check_stall(struct fbd_client *c, uint32_t i, const struct fb__subscriber_sample *ss,
			uint64_t now)
{
	struct subscription *sub = &c->subs[i];
	struct fbd_stream *st = sub->stream;
	struct fb_ring_params params = fbd_stream_params(st);

	if (sub->mode != FB_MODE_QUEUE || sub->stalled || params.policy != FB_POLICY_BLOCK)
		return false;
	/* Only a cursor past the furthest it reached counts as reading: one
	 * that its owner moves back and forth between samples frees nothing. */
	bool advanced = ss->stats.next_seq > sub->still_cursor;
	if (advanced)
		sub->still_cursor = ss->stats.next_seq;
	if (advanced || ss->stats.lag + 1 < params.slots) {
		sub->still_since_ns = now;
		return false;
	}
	if (now - sub->still_since_ns < block_timeout_ns(st))
		return false;
	bool drop = st->config && st->config->on_stall == FBD_ON_STALL_DROP;
	char detail[FB__ERROR_TEXT_MAX];
	snprintf(detail, sizeof(detail),
		 "subscription %u read nothing for %.1f s with the ring full (block_timeout): %s",
		 sub->id, (double)(now - sub->still_since_ns) / 1e9,
		 drop ? "dropped"
		      : "no longer waited for, frames it does not read in time are missed");
	st->stalls++;
	sub->stalled = true;
	fbd_log_about(LOG_WARNING, st->name, c->label, "stream %s: client %s (uid %u): %s",
		      st->name, c->label, (unsigned)c->peer.uid, detail);
	send_event(c, st, sub->id, fbd_stream_state(st), detail);
	if (drop) {
		drop_subscription(c, i);
		return true;
	}
	if (st->ops->unwait(st, sub->ring_id) < 0)
		fbd_warning("stream %s: cannot stop waiting for subscription %u", st->name,
			    sub->id);
	return false;
}

/* A subscriber that holds one frame for the stream's hold_timeout pins its
 * slot for good as far as anyone can tell: its subscription is dropped.
 * The frame in each held slot is the ring header's word: the same seq in
 * the same slot at every sample is the same frame, never a new one taken
 * again between two samples. */
static void check_holds(struct fbd_client *c, uint32_t i, const struct fb__subscriber_sample *ss,
			uint64_t now)
{
	struct subscription *sub = &c->subs[i];
	struct fbd_stream *st = sub->stream;
	uint64_t timeout = st->config ? st->config->hold_timeout_ns : c->d->config->hold_timeout_ns;

	if (!timeout)
		return;
	for (uint32_t slot = 0; slot < FB_MAX_SLOTS; slot++) {
		uint64_t seq = ss->held_mask >> slot & 1u ? ss->held_seq[slot] : 0;
		if (seq != sub->hold_seq[slot]) {
			sub->hold_seq[slot] = seq;
			sub->hold_since_ns[slot] = now;
		}
		if (!seq || now - sub->hold_since_ns[slot] < timeout)
			continue;
		char detail[FB__ERROR_TEXT_MAX];
		snprintf(detail, sizeof(detail),
			 "subscription %u held frame %" PRIu64
			 " for %.1f s (hold_timeout): dropped",
			 sub->id, seq, (double)(now - sub->hold_since_ns[slot]) / 1e9);
		fbd_log_about(LOG_WARNING, st->name, c->label, "stream %s: client %s (uid %u): %s",
			      st->name, c->label, (unsigned)c->peer.uid, detail);
		st->hold_drops++;
		send_event(c, st, sub->id, fbd_stream_state(st), detail);
		drop_subscription(c, i);
		return;
	}
}

void fbd_server_sample(struct fbd_daemon *d)
{
	struct fb__subscriber_sample ss;
	struct fbd_sample now;
	for (struct fbd_client *c = d->clients; c; c = c->next)
		for (uint32_t i = c->n_subs; i-- > 0;)
			if (sample_subscription(&c->subs[i], &ss, &now) == 0) {
				fbd_window_push(&c->subs[i].rates, &now);
				if (!check_stall(c, i, &ss, now.ns))
					check_holds(c, i, &ss, now.ns);
			}
}

/* The limits in force, and what c's user uses of the per-user ones. */
static bool send_limits(struct fbd_client *c, uint32_t seq)
{
	const struct fbd_config *cfg = c->d->config;
	struct usage u = user_usage(c->d, c->peer.uid);
	struct fb__msg_limits l = {
	    .max_clients = cfg->max_clients,
	    .max_subscriptions_per_client = cfg->max_subscriptions_per_client,
	    .max_streams_per_client = cfg->max_streams_per_client,
	    .default_max_holds = cfg->default_max_holds,
	    .max_derived_per_client = cfg->max_derived_per_client,
	    .max_connections_per_user = cfg->max_connections_per_user,
	    .max_subscriptions_per_user = cfg->max_subscriptions_per_user,
	    .max_streams_per_user = cfg->max_streams_per_user,
	    .max_ring_memory_per_client = cfg->max_ring_memory_per_client,
	    .max_derived_memory = cfg->max_derived_memory,
	    .max_memory_per_user = cfg->max_memory_per_user,
	    .uid = c->peer.uid,
	    .exempt = fbd_access_trusted(c->peer.uid),
	    .connections = u.connections,
	    .subscriptions = u.subscriptions,
	    .streams = u.streams,
	    .memory = u.memory,
	};
	return fb__msg_send(c->fd, FB__OP_LIMITS_REPLY, seq, &l, sizeof(l), NULL, 0) >= 0;
}

/* The labels of a subscription's metrics. */
static void subscription_labels(FILE *out, const struct fbd_client *c, const struct subscription *s)
{
	fbd_metric_label(out, "stream", s->stream->name);
	fputc(',', out);
	fbd_metric_label(out, "client", c->label);
	fprintf(out, ",subscription=\"%u\"", s->id);
}

void fbd_server_metrics(struct fbd_daemon *d, FILE *out)
{
	static const struct {
		const char *name, *type, *help;
	} families[] = {
	    {"framebus_subscriber_frames_total", "counter", "Frames the subscriber took."},
	    {"framebus_subscriber_missed_frames_total", "counter",
	     "Frames a queue subscriber lost by falling a whole ring behind."},
	    {"framebus_subscriber_lag_frames", "gauge", "Frames published it has not read yet."},
	    {"framebus_subscriber_held_frames", "gauge", "Frames it holds right now."},
	};
	/* One sample of each subscription, for every family. */
	uint32_t n = 0;
	for (struct fbd_client *c = d->clients; c; c = c->next)
		n += c->n_subs;
	struct fb__subscriber_sample *ss = calloc(n ? n : 1, sizeof(*ss));
	bool *ok = calloc(n ? n : 1, sizeof(*ok));
	if (!ss || !ok) {
		free(ss);
		free(ok);
		return;
	}
	uint32_t k = 0;
	for (struct fbd_client *c = d->clients; c; c = c->next)
		for (uint32_t i = 0; i < c->n_subs; i++, k++)
			ok[k] = c->subs[i].stream->ops->subscriber_sample(
				    c->subs[i].stream, c->subs[i].ring_id, &ss[k]) == 0;
	for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
		fbd_metric_family(out, families[f].name, families[f].type, families[f].help);
		k = 0;
		for (struct fbd_client *c = d->clients; c; c = c->next)
			for (uint32_t i = 0; i < c->n_subs; i++, k++) {
				if (!ok[k])
					continue;
				const struct fb__subscriber_sample *s = &ss[k];
				uint64_t v[] = {s->frames, s->stats.missed, s->stats.lag,
						s->stats.held};
				fprintf(out, "%s{", families[f].name);
				subscription_labels(out, c, &c->subs[i]);
				fprintf(out, "} %llu\n", (unsigned long long)v[f]);
			}
	}
	for (int busy = 0; busy < 2; busy++) {
		const char *name =
		    busy ? "framebus_subscriber_busy_seconds" : "framebus_subscriber_wait_seconds";
		fbd_metric_family(out, name, "histogram",
				  busy
				      ? "From acquiring a frame until releasing it (timed frames)."
				      : "From a frame's publish until the subscriber had it (timed "
					"frames).");
		k = 0;
		for (struct fbd_client *c = d->clients; c; c = c->next)
			for (uint32_t i = 0; i < c->n_subs; i++, k++) {
				if (!ok[k])
					continue;
				char *labels = NULL;
				size_t size = 0;
				FILE *l = open_memstream(&labels, &size);
				if (!l)
					continue;
				subscription_labels(l, c, &c->subs[i]);
				if (fclose(l) == 0)
					fbd_metric_histogram(out, name, labels,
							     busy ? ss[k].busy : ss[k].wait,
							     busy ? ss[k].busy_ns : ss[k].wait_ns);
				free(labels);
			}
	}
	free(ss);
	free(ok);
}

/* A subscription's STATS record from its sample. */
static struct fb__msg_subscriber_stats stats_message(const struct fbd_client *o,
						     const struct subscription *sub,
						     const struct fb__subscriber_sample *ss,
						     const struct fbd_sample *now)
{
	struct fb__msg_subscriber_stats out = {
	    .fps_out_milli = (uint32_t)(fbd_window_rate(&sub->rates, now, 1000000000u) * 1000),
	    .id = sub->id,
	    .client_id = o->id,
	    .mode = ss->stats.mode,
	    .held = ss->stats.held,
	    .lag = ss->stats.lag,
	    .missed = ss->stats.missed,
	    .next_seq = ss->stats.next_seq,
	};
	snprintf(out.client, sizeof(out.client), "%.*s", (int)sizeof(out.client) - 1, o->label);
	return out;
}

/* STATS (detail: false) or DETAIL: every subscription of the stream, then
 * the stream. */
static void handle_stats(struct fbd_client *c, const struct fb__msg *m, bool detail)
{
	uint32_t seq = m->header.seq;
	struct fbd_stream *st = find_stream(c, seq, m->body.name.name, sizeof(m->body.name.name));

	if (!st)
		return;
	for (struct fbd_client *o = c->d->clients; o; o = o->next)
		for (uint32_t i = 0; i < o->n_subs; i++) {
			const struct subscription *sub = &o->subs[i];
			struct fb__subscriber_sample ss;
			struct fbd_sample now;
			if (sub->stream != st || sample_subscription(sub, &ss, &now) < 0)
				continue;
			struct fb__msg_subscriber_stats stats = stats_message(o, sub, &ss, &now);
			if (!detail) {
				fb__msg_send(c->fd, FB__OP_SUBSCRIBER_STATS, seq, &stats,
					     sizeof(stats), NULL, 0);
				continue;
			}
			struct fb__msg_subscription out = {
			    .stats = stats,
			    .frames = ss.frames,
			    .fps_10s_milli =
				(uint32_t)(fbd_window_rate(&sub->rates, &now, 10000000000u) * 1000),
			    .wait_p50_us = fbd_window_percentile_us(&sub->rates, &now, false, 50),
			    .wait_p99_us = fbd_window_percentile_us(&sub->rates, &now, false, 99),
			    .busy_p50_us = fbd_window_percentile_us(&sub->rates, &now, true, 50),
			    .busy_p99_us = fbd_window_percentile_us(&sub->rates, &now, true, 99),
			    .uid = o->peer.uid,
			    .flags = FB__SUBSCRIPTION_UID |
				     (sub->stalled ? FB__SUBSCRIPTION_STALLED : 0),
			};
			fb__msg_send(c->fd, FB__OP_SUBSCRIPTION, seq, &out, sizeof(out), NULL, 0);
		}
	if (!detail) {
		send_stream_info(c, seq, st);
		return;
	}
	struct fb__msg_stream_detail out;
	fbd_stream_detail(st, &out);
	/* The limits in force on it. */
	if (out.info.policy == FB_POLICY_BLOCK)
		out.block_timeout_ms = (uint32_t)(block_timeout_ns(st) / 1000000u);
	out.holds_promised = holds_promised(c->d, st);
	fb__msg_send(c->fd, FB__OP_STREAM_DETAIL, seq, &out, sizeof(out), NULL, 0);
}

static void handle_create(struct fbd_client *c, struct fb__msg *m)
{
	const struct fb__msg_create_stream *req = &m->body.create_stream;
	struct fbd_daemon *d = c->d;
	uint32_t seq = m->header.seq, mine = 0;
	uint64_t memory = 0;
	struct fb__ring_geometry geo;
	char why[FB__ERROR_TEXT_MAX];
	struct fbd_stream *st;
	int frame_fd = m->fds[0], control_fd = m->fds[1], channel = m->fds[2];
	struct fb_ring_params params = {
	    .width = req->width,
	    .height = req->height,
	    .format = req->format,
	    .slots = req->slots,
	    .policy = req->policy,
	    .meta_max = req->meta_max,
	};

	m->fds[0] = m->fds[1] = m->fds[2] = -1; /* ours now */
	bool trusted = fbd_access_trusted(c->peer.uid);
	struct usage user = user_usage(d, c->peer.uid);
	for (uint32_t i = 0; i < d->n_streams; i++)
		if (d->streams[i]->owner == c) {
			struct fb_ring_params theirs = fbd_stream_params(d->streams[i]);
			mine++;
			if (fb__ring_geometry_compute(&theirs, &geo) == 0)
				memory += geo.total_size;
		}
	int r = 0;
	if (!fb__name_valid(req->name, sizeof(req->name)))
		r = -EINVAL,
		snprintf(why, sizeof(why), "the stream name is empty, too long or not printable");
	else if (fbd_streams_find(d, req->name))
		r = -EEXIST,
		snprintf(why, sizeof(why), "a stream named '%s' exists already", req->name);
	else if (!allowed(c, seq, FBD_ACCESS_PUBLISH, req->name))
		r = -EACCES; /* answered */
	else if (fb__ring_geometry_compute(&params, &geo) < 0)
		r = -EINVAL, snprintf(why, sizeof(why),
				      "invalid ring parameters (size, format, slots, "
				      "policy or meta_max)");
	else if (mine >= d->config->max_streams_per_client)
		r = -EUSERS, snprintf(why, sizeof(why), "this client may publish %u streams",
				      d->config->max_streams_per_client);
	else if (memory + geo.total_size > d->config->max_ring_memory_per_client)
		r = -EDQUOT, snprintf(why, sizeof(why),
				      "a ring of %llu bytes would take this client past its %llu "
				      "bytes of ring memory",
				      (unsigned long long)geo.total_size,
				      (unsigned long long)d->config->max_ring_memory_per_client);
	else if (!trusted && user.streams >= d->config->max_streams_per_user)
		r = -EUSERS,
		snprintf(why, sizeof(why),
			 "uid %u already publishes %u streams, its max_streams_per_user",
			 (unsigned)c->peer.uid, user.streams);
	else if (!trusted && user.memory + geo.total_size > d->config->max_memory_per_user)
		r = -EDQUOT, snprintf(why, sizeof(why),
				      "a ring of %llu bytes would take uid %u past its "
				      "max_memory_per_user, %llu bytes",
				      (unsigned long long)geo.total_size, (unsigned)c->peer.uid,
				      (unsigned long long)d->config->max_memory_per_user);
	if (r < 0) {
		close(frame_fd);
		close(control_fd);
		close(channel);
		if (r != -EACCES)
			send_error(c, seq, r, "%s", why);
		return;
	}
	char name[FB__NAME_MAX];
	memcpy(name, req->name, sizeof(name));
	r = fbd_published_create(name, c->label, &params, frame_fd, control_fd, channel, why,
				 sizeof(why), &st);
	if (r < 0) {
		send_error(c, seq, r, "cannot publish '%s': %s", name, why);
		return;
	}
	st->owner = c;
	r = fbd_streams_add(d, st);
	if (r < 0) {
		send_error(c, seq, r, "the daemon already runs %d streams, its limit",
			   FBD_MAX_STREAMS);
		return;
	}
	struct fb__msg_id reply = {.id = st->id};
	fb__msg_send(c->fd, FB__OP_CREATED, seq, &reply, sizeof(reply), NULL, 0);
	if (params.format == FB_FORMAT_RESULTS)
		fbd_log_about(LOG_INFO, name, NULL,
			      "stream %s: published by %s, results of up to %u bytes, %u slots",
			      name, c->label, params.meta_max, params.slots);
	else
		fbd_log_about(LOG_INFO, name, NULL,
			      "stream %s: published by %s, %ux%u %s, %u slots", name, c->label,
			      params.width, params.height, fb_format_name(params.format),
			      params.slots);
}

static void handle_destroy(struct fbd_client *c, const struct fb__msg *m)
{
	for (uint32_t i = 0; i < c->d->n_streams; i++) {
		struct fbd_stream *st = c->d->streams[i];
		if (st->owner == c && st->id == m->body.id.id) {
			fbd_streams_remove(c->d, st, "its publisher withdrew it");
			fb__msg_send(c->fd, FB__OP_DONE, m->header.seq, NULL, 0, NULL, 0);
			return;
		}
	}
	send_error(c, m->header.seq, -ENOENT, "this client publishes no stream %u", m->body.id.id);
}

/* One request; returns false if the client must be disconnected. */
static bool handle(struct fbd_client *c, const struct fb__msg *m)
{
	uint32_t seq = m->header.seq;

	if (!c->said_hello && m->header.opcode != FB__OP_HELLO) {
		send_error(c, seq, -EPROTO, "the first message must be hello");
		return false;
	}
	switch (m->header.opcode) {
	case FB__OP_HELLO: {
		const struct fb__msg_hello *h = &m->body.hello;
		if (c->said_hello) {
			send_error(c, seq, -EPROTO, "hello twice");
			return false;
		}
		if (h->version != FB__PROTOCOL_VERSION) {
			send_error(c, seq, -EPROTONOSUPPORT,
				   "protocol version %u; this daemon speaks version %u", h->version,
				   FB__PROTOCOL_VERSION);
			return false;
		}
		if (!fb__name_valid(h->name, sizeof(h->name))) {
			send_error(c, seq, -EINVAL,
				   "the client name is empty, too long or not printable");
			return false;
		}
		c->said_hello = true;
		memcpy(c->name, h->name, sizeof(c->name));
		snprintf(c->label, sizeof(c->label), "%s[%d]", c->name, (int)c->cred.pid);
		struct fb__msg_hello reply = {.version = FB__PROTOCOL_VERSION, .client_id = c->id};
		fb__name_set(reply.name, sizeof(reply.name), "framebusd");
		fbd_log_about(LOG_INFO, NULL, c->label, "client %s connected (uid %u, gid %u)",
			      c->label, (unsigned)c->cred.uid, (unsigned)c->cred.gid);
		return fb__msg_send(c->fd, FB__OP_HELLO_REPLY, seq, &reply, sizeof(reply), NULL,
				    0) >= 0;
	}
	case FB__OP_LIST:
		for (uint32_t i = 0; i < c->d->n_streams; i++)
			send_stream_info(c, seq, c->d->streams[i]);
		return fb__msg_send(c->fd, FB__OP_DONE, seq, NULL, 0, NULL, 0) >= 0;
	case FB__OP_INFO: {
		struct fbd_stream *st =
		    find_stream(c, seq, m->body.name.name, sizeof(m->body.name.name));
		if (st)
			send_stream_info(c, seq, st);
		return true;
	}
	case FB__OP_SUBSCRIBE:
		handle_subscribe(c, m);
		return true;
	case FB__OP_SUBSCRIBE_DERIVED:
		handle_subscribe_derived(c, m);
		return true;
	case FB__OP_UNSUBSCRIBE:
		for (uint32_t i = 0; i < c->n_subs; i++)
			if (c->subs[i].id == m->body.id.id) {
				fbd_log_about(LOG_INFO, NULL, c->label,
					      "client %s unsubscribed from %s", c->label,
					      c->subs[i].stream->name);
				drop_subscription(c, i);
				return fb__msg_send(c->fd, FB__OP_DONE, seq, NULL, 0, NULL, 0) >= 0;
			}
		send_error(c, seq, -ENOENT, "no subscription %u", m->body.id.id);
		return true;
	case FB__OP_STATS:
	case FB__OP_DETAIL:
		handle_stats(c, m, m->header.opcode == FB__OP_DETAIL);
		return true;
	case FB__OP_LIMITS:
		return send_limits(c, seq);
	case FB__OP_CREATE_STREAM:
		handle_create(c, (struct fb__msg *)m);
		return true;
	case FB__OP_DESTROY_STREAM:
		handle_destroy(c, m);
		return true;
	default:
		send_error(c, seq, -EPROTO, "opcode %u is not a request", m->header.opcode);
		return false;
	}
}

/* Bytes of replies a client may leave unread before the daemon stops
 * reading its requests: bounds the memory and, above all, the descriptors
 * (four per SUBSCRIBED) a client that never reads keeps in flight. */
#define MAX_UNREAD_REPLIES (16 * 1024)

static bool replies_pending(const struct fbd_client *c)
{
	int queued = 0;
	return ioctl(c->fd, SIOCOUTQ, &queued) == 0 && queued > MAX_UNREAD_REPLIES;
}

static void on_client(uv_poll_t *poll, int status, int events)
{
	struct fbd_client *c = poll->data;
	struct fb__msg m;

	if (status >= 0 && c->paused) {
		if (!(events & UV_DISCONNECT) && replies_pending(c))
			return; /* still behind: wait for the next writable */
		c->paused = false;
		uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, on_client);
	}
	if (status < 0) {
		/* POLLERR: the peer reset the connection with messages unread. */
		client_close(c,
			     status == UV_EBADF ? "its connection was reset" : uv_strerror(status));
		return;
	}
	/* A bounded batch per wake-up: one chatty client cannot starve the
	 * others. */
	for (int i = 0; i < 64; i++) {
		if (replies_pending(c)) {
			/* It does not read what we send: read nothing more from
			 * it until it does (writable means it read some). */
			c->paused = true;
			uv_poll_start(&c->poll, UV_WRITABLE | UV_DISCONNECT, on_client);
			fbd_log_about(LOG_DEBUG, NULL, c->label,
				      "client %s: replies unread, pausing its requests", c->label);
			return;
		}
		int r = fb__msg_recv(c->fd, &m);
		if (r == -EAGAIN)
			return;
		if (r == -EPROTO) {
			send_error(c, 0, -EPROTO,
				   "malformed message (size, opcode or descriptors do not match)");
			client_close(c, "it sent a malformed message");
			return;
		}
		if (r < 0) {
			client_close(c, r == -ECONNRESET ? "it hung up" : strerror(-r));
			return;
		}
		/* fb__msg_recv checked that only CREATE_STREAM carries fds. */
		bool ok = handle(c, &m);
		fb__msg_close_fds(&m); /* whatever the handler did not take */
		if (!ok) {
			client_close(c, "protocol error");
			return;
		}
	}
}

static void free_client(uv_handle_t *h)
{
	struct fbd_client *c = h->data;
	close(c->fd);
	free(c->subs);
	free(c);
}

static void client_close(struct fbd_client *c, const char *why)
{
	struct fbd_daemon *d = c->d;
	while (c->n_subs)
		drop_subscription(c, c->n_subs - 1);
	for (uint32_t i = d->n_streams; i-- > 0;)
		if (d->streams[i]->owner == c)
			fbd_streams_remove(d, d->streams[i], "its publisher went away");
	for (uint32_t i = 0; i < d->n_streams; i++)
		if (d->streams[i]->creator == c)
			d->streams[i]->creator = NULL; /* others' subscribers keep it */
	for (struct fbd_client **pp = &d->clients; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	d->n_clients--;
	fbd_log_about(LOG_INFO, NULL, c->label, "client %s disconnected: %s", c->label, why);
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, free_client);
}

/* A refused connection, logged at most once every DENIAL_LOG_INTERVAL_NS:
 * a client that connects again and again cannot flood the journal. */
static void log_refusal(struct fbd_daemon *d, const struct fbd_client *c, const char *why)
{
	uint64_t now = fb_now_ns();
	if (d->refusal_logged_ns && now - d->refusal_logged_ns < DENIAL_LOG_INTERVAL_NS) {
		d->refusals_unlogged++;
		return;
	}
	char more[48] = "";
	if (d->refusals_unlogged)
		snprintf(more, sizeof(more), " (and %u more not logged)", d->refusals_unlogged);
	fbd_warning("refused client pid %d (uid %u): %s%s", (int)c->cred.pid, (unsigned)c->peer.uid,
		    why, more);
	d->refusal_logged_ns = now;
	d->refusals_unlogged = 0;
}

static void on_listen(uv_poll_t *poll, int status, int events)
{
	struct fbd_daemon *d = poll->data;
	(void)events;

	if (status < 0)
		return;
	for (;;) {
		int fd = accept4(d->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR)
				fbd_warning("accept: %s", strerror(errno));
			return;
		}
		struct fbd_client *c = calloc(1, sizeof(*c));
		socklen_t len = sizeof(c ? c->cred : (struct ucred){0});
		if (!c || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) < 0 ||
		    uv_poll_init(d->loop, &c->poll, fd) < 0) {
			free(c);
			close(fd);
			continue;
		}
		c->d = d;
		c->fd = fd;
		c->id = ++d->next_client_id;
		c->peer.uid = c->cred.uid;
		c->peer.gid = c->cred.gid;
		gid_t groups[FBD_PEER_GROUPS];
		socklen_t glen = sizeof(groups);
		/* Past FBD_PEER_GROUPS (ERANGE) only its primary group counts. */
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0)
			for (size_t i = 0; i < glen / sizeof(gid_t); i++)
				c->peer.groups[c->peer.n_groups++] = groups[i];
		c->poll.data = c;
		snprintf(c->label, sizeof(c->label), "#%u[%d]", c->id, (int)c->cred.pid);
		uint32_t theirs = user_usage(d, c->peer.uid).connections;
		char why[FB__ERROR_TEXT_MAX] = "";
		if (d->n_clients >= d->config->max_clients)
			snprintf(why, sizeof(why),
				 "the daemon already serves %u clients, its limit", d->n_clients);
		else if (!fbd_access_trusted(c->peer.uid) &&
			 theirs >= d->config->max_connections_per_user)
			snprintf(why, sizeof(why),
				 "uid %u already has %u connections, its max_connections_per_user",
				 (unsigned)c->peer.uid, theirs);
		if (why[0]) {
			send_error(c, 0, -EUSERS, "%s", why);
			log_refusal(d, c, why);
			uv_close((uv_handle_t *)&c->poll, free_client);
			continue;
		}
		c->next = d->clients;
		d->clients = c;
		d->n_clients++;
		uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, on_client);
	}
}

/* Bind path, replacing a stale socket (one nobody listens on) but never a
 * live daemon's or a file that is not a socket. */
static int bind_socket(struct fbd_daemon *d, const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (lstat(path, &st) == 0) {
		int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		bool live = S_ISSOCK(st.st_mode) &&
			    connect(probe, (struct sockaddr *)&addr, sizeof(addr)) == 0;
		close(probe);
		if (!S_ISSOCK(st.st_mode) || live) {
			fbd_error("%s: %s", path,
				  live ? "another framebusd listens there"
				       : "exists and is not a socket");
			close(fd);
			return -EADDRINUSE;
		}
		unlink(path);
	}
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 128) < 0) {
		r = -errno;
		fbd_error("cannot listen on %s: %s", path, strerror(-r));
		close(fd);
		return r;
	}
	if (chmod(path, d->config->socket_mode) < 0)
		fbd_warning("chmod %s: %s", path, strerror(errno));
	if (d->config->socket_group) {
		struct group *g = getgrnam(d->config->socket_group);
		if (!g || chown(path, (uid_t)-1, g->gr_gid) < 0)
			fbd_warning("cannot give %s to group %s: %s", path, d->config->socket_group,
				    g ? strerror(errno) : "no such group");
	}
	d->bound_path = strdup(path);
	d->listen_fd = fd;
	return 0;
}

int fbd_server_start(struct fbd_daemon *d)
{
	const char *path = d->socket_override ? d->socket_override : d->config->socket_path;
	int r;

	if (d->listen_fd >= 0) {
		struct sockaddr_un addr = {0};
		socklen_t len = sizeof(addr);
		getsockname(d->listen_fd, (struct sockaddr *)&addr, &len);
		fbd_info("listening on %s (the socket systemd passed, '%s')",
			 len > offsetof(struct sockaddr_un, sun_path) && addr.sun_path[0]
			     ? addr.sun_path
			     : "an unnamed socket",
			 d->listen_name);
	} else {
		r = bind_socket(d, path);
		if (r < 0)
			return r;
		fbd_info("listening on %s", path);
		fbd_fdstore_keep_socket(d);
	}
	r = uv_poll_init(d->loop, &d->listen_poll, d->listen_fd);
	if (r < 0)
		return r;
	d->listen_poll.data = d;
	d->stream_changed = stream_changed;
	return uv_poll_start(&d->listen_poll, UV_READABLE, on_listen);
}

void fbd_server_stop(struct fbd_daemon *d)
{
	while (d->clients)
		client_close(d->clients, "the daemon is stopping");
	if (d->listen_fd >= 0) {
		uv_poll_stop(&d->listen_poll);
		uv_close((uv_handle_t *)&d->listen_poll, NULL);
		close(d->listen_fd);
		d->listen_fd = -1;
	}
	/* A socket systemd keeps stays where clients find it. */
	if (d->bound_path && !d->socket_stored)
		unlink(d->bound_path);
	free(d->bound_path);
	d->bound_path = NULL;
	free(d->listen_name);
	d->listen_name = NULL;
}

static void send_event(struct fbd_client *c, struct fbd_stream *st, uint32_t subscription,
		       uint32_t state, const char *detail)
{
	struct fb__msg_stream_event e = {.state = state, .subscription = subscription};
	fb__name_set(e.stream, sizeof(e.stream), st->name);
	snprintf(e.detail, sizeof(e.detail), "%s", detail ? detail : "");
	fb__msg_send(c->fd, FB__OP_STREAM_EVENT, 0, &e, sizeof(e), NULL, 0);
}

/* d->stream_changed: tell every client subscribed to the stream; one that
 * goes away takes its subscriptions with it (its ring ends). */
static void stream_changed(struct fbd_daemon *d, struct fbd_stream *st, uint32_t state,
			   const char *detail)
{
	for (struct fbd_client *c = d->clients; c; c = c->next)
		for (uint32_t i = c->n_subs; i-- > 0;) {
			if (c->subs[i].stream != st)
				continue;
			send_event(c, st, c->subs[i].id, state, detail);
			if (state == FB_STREAM_REMOVED)
				c->subs[i] = c->subs[--c->n_subs];
			else
				break;
		}
}
