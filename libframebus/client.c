/* SPDX-License-Identifier: MIT */
/* The client side of the control protocol: connect, ask, subscribe. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "protocol-private.h"
#include "ring-private.h"

/* How long a blocking call waits for the daemon's reply. */
#define REPLY_TIMEOUT_MS 10000
/* How often a client that lost framebusd tries to connect again. */
#define RECONNECT_INTERVAL_NS 250000000
/* How long an attempt to connect again waits for the daemon's hello: one
 * that listens answers at once, and the caller may be an event loop. */
#define RECONNECT_HELLO_TIMEOUT_MS 1000

/* A stream this client publishes. */
struct publication {
	fb_producer *producer;
	struct fb__msg_create_stream request; /* to publish it again after a reconnection */
	uint32_t stream_id;
};

#define MAX_PUBLICATIONS 16

struct fb_client {
	int fd;    /* what callers poll: an epoll set of sock and timer */
	int sock;  /* the connection to framebusd; -1 while there is none */
	int timer; /* ticks while disconnected: time to try again */
	bool up;   /* connected and greeted (a connection being set up is not) */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char name[FB__NAME_MAX];
	uint32_t seq;
	uint32_t id;
	uint32_t connections; /* times it connected again */
	fb_client_event_fn event_fn;
	void *event_data;
	fb_client_connection_fn connection_fn;
	void *connection_data;
	char last_error[FB__ERROR_TEXT_MAX];
	struct publication *pubs[MAX_PUBLICATIONS];
};

static const char *state_names[] = {
    [FB_STREAM_STARTING] = "starting", [FB_STREAM_RUNNING] = "running",
    [FB_STREAM_RETRYING] = "retrying", [FB_STREAM_ENDED] = "ended",
    [FB_STREAM_REMOVED] = "removed",
};

FB_EXPORT const char *fb_stream_state_name(uint32_t state)
{
	return state < sizeof(state_names) / sizeof(state_names[0]) ? state_names[state]
								    : "unknown";
}

static void announce_connection(fb_client *c, bool connected, const char *detail)
{
	if (c->connection_fn)
		c->connection_fn(c->connection_data, connected, detail);
}

static void deliver_event(fb_client *c, const struct fb__msg_stream_event *e)
{
	char stream[FB__NAME_MAX], detail[FB__ERROR_TEXT_MAX];
	if (!c->event_fn)
		return;
	snprintf(stream, sizeof(stream), "%.*s", (int)sizeof(e->stream), e->stream);
	snprintf(detail, sizeof(detail), "%.*s", (int)sizeof(e->detail), e->detail);
	c->event_fn(c->event_data, stream, e->state, detail);
}

static void set_timer(fb_client *c, uint64_t interval_ns)
{
	struct timespec t = {.tv_sec = interval_ns / 1000000000u,
			     .tv_nsec = interval_ns % 1000000000u};
	struct itimerspec its = {.it_interval = t, .it_value = t};
	timerfd_settime(c->timer, 0, &its, NULL);
}

/* The daemon went away: forget the connection and what came through it,
 * and start trying again. */
static void lose(fb_client *c)
{
	if (c->sock < 0)
		return;
	epoll_ctl(c->fd, EPOLL_CTL_DEL, c->sock, NULL);
	close(c->sock);
	c->sock = -1;
	if (!c->up)
		return;
	c->up = false;
	set_timer(c, RECONNECT_INTERVAL_NS);
	char detail[FB__ERROR_TEXT_MAX];
	snprintf(detail, sizeof(detail),
		 "lost the connection to framebusd at %s; trying again every %u ms", c->path,
		 RECONNECT_INTERVAL_NS / 1000000u);
	announce_connection(c, false, detail);
}

/* Receive one message, waiting up to timeout_ms.  Events are delivered and
 * reported as 1; a message for the caller is 0. */
static int receive(fb_client *c, struct fb__msg *msg, int timeout_ms)
{
	uint64_t deadline = fb__now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000u;

	bool reset_seen = false;

	if (c->sock < 0)
		return -ECONNRESET;
	for (;;) {
		int r = fb__msg_recv(c->sock, msg);
		if (r == -ECONNRESET && !c->up && !reset_seen) {
			/* A daemon that refused the connection hung up with
			 * our hello unread: the kernel reports that reset once,
			 * before the ERROR saying why, still queued for us. */
			reset_seen = true;
			continue;
		}
		if (r == -EAGAIN) {
			if (timeout_ms == 0)
				return -EAGAIN;
			uint64_t now = fb__now_ns(CLOCK_MONOTONIC);
			if (now >= deadline)
				return -ETIMEDOUT;
			struct pollfd pfd = {.fd = c->sock, .events = POLLIN};
			/* A signal does not cut a request short: its reply would
			 * then answer the next one. */
			if (poll(&pfd, 1, (int)((deadline - now + 999999) / 1000000)) < 0 &&
			    errno != EINTR)
				return -errno;
			continue;
		}
		if (r == -ECONNRESET || r == -EPIPE) {
			lose(c);
			return -ECONNRESET;
		}
		if (r < 0)
			return r;
		if (msg->header.opcode == FB__OP_STREAM_EVENT) {
			deliver_event(c, &msg->body.stream_event);
			return 1;
		}
		return 0;
	}
}

/* The replies a request may get, for reply(). */
#define WANT(opcode) (1u << ((opcode)-FB__OP_HELLO_REPLY))

/* The next reply to request seq, one of the opcodes in want, within
 * timeout_ms; an ERROR reply becomes its error code, any other reply -EPROTO
 * (its fds closed). */
static int reply_within(fb_client *c, uint32_t seq, struct fb__msg *msg, uint32_t want,
			int timeout_ms)
{
	for (;;) {
		int r = receive(c, msg, timeout_ms);
		if (r == 1)
			continue;
		if (r < 0)
			return r;
		/* An ERROR of seq 0 answers no request: the daemon refuses the
		 * connection (ERROR, then it hangs up), and this is why. */
		bool refused = msg->header.seq == 0 && msg->header.opcode == FB__OP_ERROR;
		if (msg->header.seq != seq && !refused) {
			/* The late reply to a request that timed out: drop it,
			 * and end a subscription nobody holds. */
			if (msg->header.opcode == FB__OP_SUBSCRIBED) {
				struct fb__msg_id req = {.id = msg->body.subscribed.id};
				fb__msg_send(c->sock, FB__OP_UNSUBSCRIBE, 0, &req, sizeof(req),
					     NULL, 0);
			}
			fb__msg_close_fds(msg);
			if ((int32_t)(msg->header.seq - seq) < 0)
				continue;
			return -EPROTO;
		}
		if (msg->header.opcode == FB__OP_ERROR) {
			snprintf(c->last_error, sizeof(c->last_error), "%.*s",
				 (int)sizeof(msg->body.error.text), msg->body.error.text);
			return msg->body.error.error < 0 ? msg->body.error.error : -EPROTO;
		}
		uint32_t op = msg->header.opcode;
		if (op < FB__OP_HELLO_REPLY || op > FB__OP_LIMITS_REPLY || !(want & WANT(op))) {
			fb__msg_close_fds(msg);
			return -EPROTO;
		}
		return 0;
	}
}

static int reply(fb_client *c, uint32_t seq, struct fb__msg *msg, uint32_t want)
{
	return reply_within(c, seq, msg, want, REPLY_TIMEOUT_MS);
}

static int reconnect(fb_client *c);

/* Send a request (with fds, n_fds descriptors to pass); a client that lost
 * the daemon tries to connect again first. */
static int request_fds(fb_client *c, uint32_t opcode, const void *payload, size_t size,
		       const int *fds, uint32_t n_fds, uint32_t *ret_seq)
{
	if (c->sock >= 0 && c->up && fb_client_check(c) < 0)
		lose(c); /* the daemon went away since the last request */
	if (c->sock < 0 && reconnect(c) < 0)
		return -ECONNRESET;
	c->last_error[0] = '\0';
	uint32_t seq = ++c->seq ? c->seq : ++c->seq;
	int r = fb__msg_send(c->sock, opcode, seq, payload, size, fds, n_fds);
	if ((r == -EPIPE || r == -ECONNRESET) && !c->up) {
		/* Our hello: a daemon that refused the connection sent why (an
		 * ERROR of seq 0) before it hung up, and it is still ours to
		 * read.  The reply, or the hang-up, comes next. */
		*ret_seq = seq;
		return 0;
	}
	if (r == -EPIPE || r == -ECONNRESET) {
		lose(c);
		return -ECONNRESET;
	}
	if (r < 0)
		return r;
	*ret_seq = seq;
	return 0;
}

static int request(fb_client *c, uint32_t opcode, const void *payload, size_t size,
		   uint32_t *ret_seq)
{
	return request_fds(c, opcode, payload, size, NULL, 0, ret_seq);
}

/* Connect the socket and say hello, waiting up to timeout_ms for the
 * answer: the client is up. */
static int open_connection(fb_client *c, int timeout_ms)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct fb__msg_hello hello = {.version = FB__PROTOCOL_VERSION};
	struct fb__msg msg;
	uint32_t seq;
	int r;

	memcpy(hello.name, c->name, sizeof(hello.name));
	strcpy(addr.sun_path, c->path);
	c->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->sock < 0)
		return -errno;
	if (connect(c->sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		r = -errno;
		close(c->sock);
		c->sock = -1;
		return r;
	}
	struct epoll_event ev = {.events = EPOLLIN};
	if (epoll_ctl(c->fd, EPOLL_CTL_ADD, c->sock, &ev) < 0) {
		r = -errno;
		close(c->sock);
		c->sock = -1;
		return r;
	}
	r = request(c, FB__OP_HELLO, &hello, sizeof(hello), &seq);
	if (r >= 0)
		r = reply_within(c, seq, &msg, WANT(FB__OP_HELLO_REPLY), timeout_ms);
	if (r >= 0 && (msg.header.opcode != FB__OP_HELLO_REPLY ||
		       msg.body.hello.version != FB__PROTOCOL_VERSION))
		r = -EPROTO;
	if (r < 0) {
		lose(c);
		return r;
	}
	c->id = msg.body.hello.client_id;
	c->up = true;
	return 0;
}

FB_EXPORT int fb_client_connect(const char *path, const char *name, fb_client **ret_client)
{
	fb_client *c;
	int r;

	if (!ret_client)
		return -EINVAL;
	if (!path)
		path = getenv("FRAMEBUS_SOCKET");
	if (!path || !*path)
		path = FB_DEFAULT_SOCKET;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->sock = -1;
	c->timer = -1;
	if (strlen(path) >= sizeof(c->path)) {
		free(c);
		return -ENAMETOOLONG;
	}
	if (!fb__name_set(c->name, sizeof(c->name), name ? name : "client") ||
	    !fb__name_valid(c->name, sizeof(c->name))) {
		free(c);
		return -EINVAL;
	}
	strcpy(c->path, path);
	c->fd = epoll_create1(EPOLL_CLOEXEC);
	c->timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	if (c->fd < 0 || c->timer < 0 || epoll_ctl(c->fd, EPOLL_CTL_ADD, c->timer, &ev) < 0) {
		r = -errno;
		goto fail;
	}
	r = open_connection(c, REPLY_TIMEOUT_MS);
	if (r < 0)
		goto fail;
	*ret_client = c;
	return 0;
fail:
	fb_client_free(c);
	return r;
}

FB_EXPORT void fb_client_free(fb_client *c)
{
	if (!c)
		return;
	/* Its producers live on, alone: no new subscriber reaches them. */
	for (uint32_t i = 0; i < MAX_PUBLICATIONS; i++)
		free(c->pubs[i]);
	if (c->sock >= 0)
		close(c->sock);
	if (c->timer >= 0)
		close(c->timer);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

FB_EXPORT int fb_client_get_fd(const fb_client *c)
{
	return c ? c->fd : -EINVAL;
}

FB_EXPORT void fb_client_set_event_callback(fb_client *c, fb_client_event_fn fn, void *userdata)
{
	if (!c)
		return;
	c->event_fn = fn;
	c->event_data = userdata;
}

FB_EXPORT void fb_client_set_connection_callback(fb_client *c, fb_client_connection_fn fn,
						 void *userdata)
{
	if (!c)
		return;
	c->connection_fn = fn;
	c->connection_data = userdata;
}

FB_EXPORT const char *fb_client_last_error(const fb_client *c)
{
	return c ? c->last_error : "";
}

FB_EXPORT int fb_client_check(const fb_client *c)
{
	if (!c)
		return -EINVAL;
	int sock = c->sock;
	struct pollfd pfd = {.fd = sock, .events = POLLRDHUP};
	if (sock < 0 || (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR))))
		return -ECONNRESET;
	return 0;
}

static int create_stream(fb_client *c, struct publication *pub);

/* Connect again and publish again what this client published: the same
 * rings, so their producers go on as they were.  The subscribers the old
 * daemon registered with them are dropped (those still alive get
 * -ECANCELED and subscribe again). */
static int reconnect(fb_client *c)
{
	char detail[FB__ERROR_TEXT_MAX];
	int r = open_connection(c, RECONNECT_HELLO_TIMEOUT_MS);
	if (r < 0)
		return r;
	c->connections++;
	set_timer(c, 0);
	uint64_t ticks;
	(void)!read(c->timer, &ticks, sizeof(ticks));
	int n = snprintf(detail, sizeof(detail), "connected to framebusd at %s again", c->path);
	for (uint32_t i = 0; i < MAX_PUBLICATIONS; i++) {
		struct publication *pub = c->pubs[i];
		if (!pub)
			continue;
		r = create_stream(c, pub);
		pub->stream_id = r < 0 ? 0 : pub->stream_id;
		if (r < 0 && n >= 0 && (size_t)n < sizeof(detail))
			n += snprintf(detail + n, sizeof(detail) - (size_t)n,
				      "; could not publish '%.*s' again: %s",
				      (int)sizeof(pub->request.name), pub->request.name,
				      *c->last_error ? c->last_error : fb_strerror(r));
	}
	announce_connection(c, true, detail);
	return c->sock >= 0 ? 0 : -ECONNRESET;
}

FB_EXPORT int fb_client_reconnect(fb_client *c)
{
	if (!c)
		return -EINVAL;
	if (c->sock >= 0 && fb_client_check(c) == 0)
		return 0;
	lose(c);
	return reconnect(c);
}

FB_EXPORT int fb_client_process(fb_client *c)
{
	struct fb__msg msg;
	int events = 0, r;

	if (!c)
		return -EINVAL;
	if (c->sock < 0) {
		uint64_t ticks;
		(void)!read(c->timer, &ticks, sizeof(ticks));
		if (reconnect(c) < 0)
			return -ECONNRESET;
	}
	while ((r = receive(c, &msg, 0)) >= 0) {
		if (r == 0) /* a reply nobody waits for: protocol error */
			fb__msg_close_fds(&msg);
		events += r;
	}
	return r == -EAGAIN ? events : r;
}

static void info_from_msg(struct fb_stream_info *info, const struct fb__msg_stream_info *m)
{
	memset(info, 0, sizeof(*info));
	snprintf(info->name, sizeof(info->name), "%.*s", (int)sizeof(m->name), m->name);
	snprintf(info->source, sizeof(info->source), "%.*s", (int)sizeof(m->source), m->source);
	snprintf(info->detail, sizeof(info->detail), "%.*s", (int)sizeof(m->detail), m->detail);
	info->width = m->width;
	info->height = m->height;
	info->format = m->format;
	info->slots = m->slots;
	info->policy = m->policy;
	info->meta_max = m->meta_max;
	info->state = m->state;
	info->subscribers = m->subscribers;
	info->published = m->published;
	info->dropped = m->dropped;
	info->fps = m->fps_in_milli / 1000.0;
	info->retries = m->retries;
}

/* Append one element of size bytes to a growing array. */
static void *append(void *array, size_t *n, size_t size)
{
	void *grown = realloc(array, (*n + 1) * size);
	if (grown)
		(*n)++;
	return grown;
}

FB_EXPORT int fb_client_list_streams(fb_client *c, struct fb_stream_info **ret_streams,
				     size_t *ret_n)
{
	struct fb_stream_info *list = NULL;
	struct fb__msg msg;
	size_t n = 0;
	uint32_t seq;
	int r;

	if (!c || !ret_streams || !ret_n)
		return -EINVAL;
	r = request(c, FB__OP_LIST, NULL, 0, &seq);
	while (r >= 0 &&
	       (r = reply(c, seq, &msg, WANT(FB__OP_STREAM_INFO) | WANT(FB__OP_DONE))) >= 0 &&
	       msg.header.opcode == FB__OP_STREAM_INFO) {
		struct fb_stream_info *grown = append(list, &n, sizeof(*list));
		if (!grown) {
			r = -ENOMEM;
			break;
		}
		list = grown;
		info_from_msg(&list[n - 1], &msg.body.stream_info);
	}
	if (r >= 0 && msg.header.opcode != FB__OP_DONE)
		r = -EPROTO;
	if (r < 0) {
		free(list);
		return r;
	}
	*ret_streams = list;
	*ret_n = n;
	return 0;
}

FB_EXPORT int fb_client_get_stream(fb_client *c, const char *name, struct fb_stream_info *ret_info)
{
	struct fb__msg_name req;
	struct fb__msg msg;
	uint32_t seq;
	int r;

	if (!c || !ret_info || !fb__name_set(req.name, sizeof(req.name), name))
		return -EINVAL;
	r = request(c, FB__OP_INFO, &req, sizeof(req), &seq);
	if (r >= 0)
		r = reply(c, seq, &msg, WANT(FB__OP_STREAM_INFO));
	if (r >= 0 && msg.header.opcode != FB__OP_STREAM_INFO)
		r = -EPROTO;
	if (r < 0)
		return r;
	info_from_msg(ret_info, &msg.body.stream_info);
	return 0;
}

FB_EXPORT int fb_client_get_limits(fb_client *c, struct fb_limits *ret_limits)
{
	struct fb__msg msg;
	uint32_t seq;

	if (!c || !ret_limits)
		return -EINVAL;
	int r = request(c, FB__OP_LIMITS, NULL, 0, &seq);
	if (r >= 0)
		r = reply(c, seq, &msg, WANT(FB__OP_LIMITS_REPLY));
	if (r >= 0 && msg.header.opcode != FB__OP_LIMITS_REPLY)
		r = -EPROTO;
	if (r < 0)
		return r;
	const struct fb__msg_limits *l = &msg.body.limits;
	*ret_limits = (struct fb_limits){
	    .max_clients = l->max_clients,
	    .max_subscriptions_per_client = l->max_subscriptions_per_client,
	    .max_streams_per_client = l->max_streams_per_client,
	    .default_max_holds = l->default_max_holds,
	    .max_derived_per_client = l->max_derived_per_client,
	    .max_connections_per_user = l->max_connections_per_user,
	    .max_subscriptions_per_user = l->max_subscriptions_per_user,
	    .max_streams_per_user = l->max_streams_per_user,
	    .max_ring_memory_per_client = l->max_ring_memory_per_client,
	    .max_derived_memory = l->max_derived_memory,
	    .max_memory_per_user = l->max_memory_per_user,
	    .uid = l->uid,
	    .exempt = l->exempt,
	    .connections = l->connections,
	    .subscriptions = l->subscriptions,
	    .streams = l->streams,
	    .memory = l->memory,
	};
	return 0;
}

FB_EXPORT int fb_client_inspect(fb_client *c, const char *stream, struct fb_stream_info *ret_info,
				struct fb_subscription_info **ret_subs, size_t *ret_n)
{
	struct fb_subscription_info *list = NULL;
	struct fb__msg_name req;
	struct fb__msg msg;
	size_t n = 0;
	uint32_t seq;
	int r;

	if (!c || !ret_subs || !ret_n || !fb__name_set(req.name, sizeof(req.name), stream))
		return -EINVAL;
	r = request(c, FB__OP_DETAIL, &req, sizeof(req), &seq);
	while (r >= 0 &&
	       (r = reply(c, seq, &msg, WANT(FB__OP_SUBSCRIPTION) | WANT(FB__OP_STREAM_DETAIL))) >=
		   0 &&
	       msg.header.opcode == FB__OP_SUBSCRIPTION) {
		const struct fb__msg_subscription *m = &msg.body.subscription;
		struct fb_subscription_info *grown = append(list, &n, sizeof(*list));
		if (!grown) {
			r = -ENOMEM;
			break;
		}
		list = grown;
		list[n - 1] = (struct fb_subscription_info){
		    .id = m->stats.id,
		    .mode = m->stats.mode,
		    .held = m->stats.held,
		    .lag = m->stats.lag,
		    .missed = m->stats.missed,
		    .next_seq = m->stats.next_seq,
		    .fps = m->stats.fps_out_milli / 1000.0,
		    .fps_10s = m->fps_10s_milli / 1000.0,
		    .frames = m->frames,
		    .wait_p50_us = m->wait_p50_us,
		    .wait_p99_us = m->wait_p99_us,
		    .busy_p50_us = m->busy_p50_us,
		    .busy_p99_us = m->busy_p99_us,
		    .uid = m->uid,
		    .flags = m->flags & (FB__SUBSCRIPTION_UID | FB__SUBSCRIPTION_STALLED),
		};
		snprintf(list[n - 1].client, sizeof(list[n - 1].client), "%.*s",
			 (int)sizeof(m->stats.client), m->stats.client);
	}
	if (r >= 0 && msg.header.opcode != FB__OP_STREAM_DETAIL)
		r = -EPROTO;
	if (r < 0) {
		free(list);
		return r;
	}
	if (ret_info) {
		const struct fb__msg_stream_detail *d = &msg.body.stream_detail;
		info_from_msg(ret_info, &d->info);
		ret_info->fps_10s = (float)(d->fps_10s_milli / 1000.0);
		ret_info->capture_latency_us = d->capture_latency_us;
		ret_info->capture_age_us = d->capture_age_us;
		ret_info->stalls = d->stalls;
		ret_info->block_timeout_ms = d->block_timeout_ms;
		ret_info->holds_promised = d->holds_promised;
		ret_info->flags = d->flags & FB__STREAM_DERIVED;
		ret_info->parent_skipped_busy = d->parent_skipped_busy;
		ret_info->parent_skipped_rate = d->parent_skipped_rate;
	}
	*ret_subs = list;
	*ret_n = n;
	return 0;
}

FB_EXPORT int fb_client_get_subscriptions(fb_client *c, const char *stream,
					  struct fb_subscription_info **ret_subs, size_t *ret_n)
{
	return fb_client_inspect(c, stream, NULL, ret_subs, ret_n);
}

static int unsubscribe_id(fb_client *c, uint32_t id)
{
	struct fb__msg_id req = {.id = id};
	struct fb__msg msg;
	uint32_t seq;
	int r = request(c, FB__OP_UNSUBSCRIBE, &req, sizeof(req), &seq);
	if (r >= 0)
		r = reply(c, seq, &msg, WANT(FB__OP_DONE));
	return r;
}

/* Send a subscription request, attach to the ring the daemon answers with and
 * remember in origin how it was made (its stream's name, if origin has none,
 * is the ring's). */
static int subscribe_by(fb_client *c, uint32_t opcode, const void *req, size_t size,
			const char *stream, struct fb__subscription *origin,
			fb_subscriber **ret_subscriber)
{
	struct fb__msg msg;
	struct fb_subscriber_fds fds;
	fb_subscriber *sub;
	uint32_t seq;
	int r;

	r = request(c, opcode, req, size, &seq);
	if (r >= 0)
		r = reply(c, seq, &msg, WANT(FB__OP_SUBSCRIBED));
	if (r >= 0 && msg.header.opcode != FB__OP_SUBSCRIBED) {
		fb__msg_close_fds(&msg);
		r = -EPROTO;
	}
	if (r < 0)
		return r;
	fds = (struct fb_subscriber_fds){msg.fds[0], msg.fds[1], msg.fds[2], msg.fds[3]};
	r = fb_subscriber_attach(&fds, &sub);
	if (r < 0) {
		fb_subscriber_fds_close(&fds);
		unsubscribe_id(c, msg.body.subscribed.id);
		snprintf(c->last_error, sizeof(c->last_error),
			 "the daemon's ring for '%s' failed the checks: %s", stream,
			 fb_strerror(r));
		return r;
	}
	/* The daemon's id, valid on this connection only. */
	origin->token = (uint64_t)c->connections << 32 | msg.body.subscribed.id;
	if (!origin->stream[0])
		memcpy(origin->stream, fb_subscriber_get_name(sub), sizeof(origin->stream) - 1);
	fb__subscriber_set_origin(sub, origin);
	*ret_subscriber = sub;
	return 0;
}

FB_EXPORT int fb_client_subscribe(fb_client *c, const char *stream, uint32_t mode,
				  uint32_t max_holds, fb_subscriber **ret_subscriber)
{
	struct fb__msg_subscribe req = {.mode = mode, .max_holds = max_holds};
	struct fb__subscription origin = {.max_holds = max_holds};

	if (!c || !ret_subscriber || !fb__name_set(req.stream, sizeof(req.stream), stream))
		return -EINVAL;
	memcpy(origin.stream, req.stream, sizeof(origin.stream) - 1);
	return subscribe_by(c, FB__OP_SUBSCRIBE, &req, sizeof(req), stream, &origin,
			    ret_subscriber);
}

FB_EXPORT int fb_client_subscribe_derived(fb_client *c, const char *parent,
					  const struct fb_derived *spec, uint32_t mode,
					  uint32_t max_holds, fb_subscriber **ret_subscriber)
{
	struct fb__msg_subscribe_derived req = {.mode = mode, .max_holds = max_holds};
	struct fb__subscription origin = {.max_holds = max_holds, .derived = true};

	if (!c || !spec || !ret_subscriber || !fb__name_set(req.parent, sizeof(req.parent), parent))
		return -EINVAL;
	req.spec = *spec;
	origin.spec = *spec;
	memcpy(origin.parent, req.parent, sizeof(origin.parent) - 1);
	return subscribe_by(c, FB__OP_SUBSCRIBE_DERIVED, &req, sizeof(req), parent, &origin,
			    ret_subscriber);
}

/* Whether a subscription was made on a daemon this client no longer talks
 * to: it went away, whether or not the client has connected again since. */
static bool from_lost_daemon(const fb_client *c, const fb_subscriber *sub)
{
	return fb_client_check(c) < 0 ||
	       fb__subscriber_get_origin(sub)->token >> 32 != c->connections;
}

FB_EXPORT int fb_client_resubscribe(fb_client *c, const fb_subscriber *old,
				    fb_subscriber **ret_subscriber)
{
	if (!c || !old || !ret_subscriber || !fb__subscriber_get_origin(old)->token)
		return -EINVAL;
	const struct fb__subscription *origin = fb__subscriber_get_origin(old);
	int end = fb__subscriber_get_end(old);
	/* The daemon went away with the ring it produced (-EOWNERDEAD), or a
	 * publisher revoked us when it published again to the daemon that
	 * came back (a publisher's ring outlives the daemon). */
	if (end == 0)
		return -EINVAL;
	if (end != -EOWNERDEAD && !(end == -ECANCELED && from_lost_daemon(c, old)))
		return end;
	int r = fb_client_reconnect(c);
	fb_subscriber *sub;
	if (r == 0 && origin->derived)
		r = fb_client_subscribe_derived(c, origin->parent, &origin->spec,
						fb_subscriber_get_mode(old), origin->max_holds,
						&sub);
	else if (r == 0)
		r = fb_client_subscribe(c, origin->stream, fb_subscriber_get_mode(old),
					origin->max_holds, &sub);
	if (r == -ENOENT || r == -ECONNREFUSED || r == -ECONNRESET || r == -EAGAIN)
		return -EAGAIN;
	if (r < 0)
		return r;
	const struct fb_layout *was = fb_subscriber_get_layout(old);
	const struct fb_layout *now = fb_subscriber_get_layout(sub);
	if (now->width != was->width || now->height != was->height || now->format != was->format) {
		char why[FB__ERROR_TEXT_MAX];
		snprintf(why, sizeof(why), "stream '%s' came back as %ux%u %s, no longer %ux%u %s",
			 origin->stream, now->width, now->height, fb_format_name(now->format),
			 was->width, was->height, fb_format_name(was->format));
		fb_client_unsubscribe(c, sub);
		snprintf(c->last_error, sizeof(c->last_error), "%s", why);
		return -ESTALE;
	}
	fb__subscriber_go_on_from(sub, old);
	*ret_subscriber = sub;
	return 0;
}

FB_EXPORT int fb_client_unsubscribe(fb_client *c, fb_subscriber *sub)
{
	if (!c || !sub)
		return -EINVAL;
	/* One made on a daemon that is gone ended with it. */
	int r = from_lost_daemon(c, sub)
		    ? 0
		    : unsubscribe_id(c, (uint32_t)fb__subscriber_get_origin(sub)->token);
	fb_subscriber_free(sub);
	return r;
}

/* Offer pub's ring to the daemon, with a new channel for the subscribers
 * it will send the producer; on success pub->stream_id names it. */
static int create_stream(fb_client *c, struct publication *pub)
{
	struct fb__msg msg;
	uint32_t seq;
	int fds[3];

	fb__producer_get_fds(pub->producer, &fds[0], &fds[1]);
	int r = fb__producer_open_channel(pub->producer, &fds[2]);
	if (r < 0)
		return r;
	r = request_fds(c, FB__OP_CREATE_STREAM, &pub->request, sizeof(pub->request), fds, 3, &seq);
	close(fds[2]);
	if (r >= 0)
		r = reply(c, seq, &msg, WANT(FB__OP_CREATED));
	if (r >= 0 && msg.header.opcode != FB__OP_CREATED)
		r = -EPROTO;
	if (r >= 0)
		pub->stream_id = msg.body.id.id;
	return r;
}

FB_EXPORT int fb_client_publish(fb_client *c, const char *name, const struct fb_ring_params *params,
				fb_producer **ret_producer)
{
	struct fb__msg_create_stream req;
	struct publication *pub;
	fb_producer *p;
	uint32_t i;
	int r;

	if (!c || !params || !ret_producer || !fb__name_set(req.name, sizeof(req.name), name))
		return -EINVAL;
	for (i = 0; i < MAX_PUBLICATIONS && c->pubs[i]; i++)
		;
	if (i == MAX_PUBLICATIONS)
		return -EUSERS;
	req.width = params->width;
	req.height = params->height;
	req.format = params->format;
	req.slots = params->slots;
	req.policy = params->policy;
	req.meta_max = params->meta_max;
	r = fb_producer_new(params, &p);
	if (r < 0)
		return r;
	fb__producer_set_name(p, name);
	pub = calloc(1, sizeof(*pub));
	if (!pub) {
		fb_producer_free(p);
		return -ENOMEM;
	}
	*pub = (struct publication){.producer = p, .request = req};
	r = create_stream(c, pub);
	if (r < 0) {
		free(pub);
		fb_producer_free(p);
		return r;
	}
	c->pubs[i] = pub;
	*ret_producer = p;
	return 0;
}

FB_EXPORT int fb_client_publish_results(fb_client *c, const char *name, uint32_t slots,
					uint32_t policy, uint32_t meta_max,
					fb_producer **ret_producer)
{
	struct fb_ring_params params = {
	    .format = FB_FORMAT_RESULTS, .slots = slots, .policy = policy, .meta_max = meta_max};

	return fb_client_publish(c, name, &params, ret_producer);
}

FB_EXPORT int fb_client_unpublish(fb_client *c, fb_producer *p)
{
	struct fb__msg msg;
	uint32_t seq;
	int r = -EINVAL;

	if (!c || !p)
		return -EINVAL;
	for (uint32_t i = 0; i < MAX_PUBLICATIONS; i++) {
		struct publication *pub = c->pubs[i];
		if (!pub || pub->producer != p)
			continue;
		struct fb__msg_id req = {.id = pub->stream_id};
		r = 0; /* stream_id 0: not published since a reconnection */
		if (pub->stream_id)
			r = request(c, FB__OP_DESTROY_STREAM, &req, sizeof(req), &seq);
		if (pub->stream_id && r >= 0)
			r = reply(c, seq, &msg, WANT(FB__OP_DONE));
		free(pub);
		c->pubs[i] = NULL;
		break;
	}
	fb_producer_free(p);
	return r;
}
