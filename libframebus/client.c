/* SPDX-License-Identifier: MIT */
/* The client side of the control protocol: connect, ask, subscribe. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "protocol-private.h"
#include "ring-private.h"

/* How long a blocking call waits for the daemon's reply. */
#define REPLY_TIMEOUT_MS 10000

/* A subscriber the daemon registered with one of our producers, waiting to
 * be taken in at that producer's next claim. */
struct registration {
	uint32_t opcode; /* FB__OP_ADD_SUBSCRIBER or FB__OP_REMOVE_SUBSCRIBER */
	struct fb__msg_registration msg;
	int fds[3];
};

/* A stream this client publishes. */
struct publication {
	fb_client *client;
	fb_producer *producer;
	uint32_t stream_id;
	struct registration *pending;
	uint32_t n_pending;
};

#define MAX_PUBLICATIONS 16

struct fb_client {
	int fd;
	uint32_t seq;
	uint32_t id;
	bool gone;
	fb_client_event_fn event_fn;
	void *event_data;
	char last_error[FB__ERROR_TEXT_MAX];
	struct publication *pubs[MAX_PUBLICATIONS];
	/* Events read by a producer's pump (inside its claim, producer locked)
	 * wait here for fb_client_process() or the next blocking call. */
	bool in_pump;
	struct fb__msg_stream_event *deferred;
	uint32_t n_deferred;
};

static void queue_registration(fb_client *c, struct fb__msg *msg)
{
	for (uint32_t i = 0; i < MAX_PUBLICATIONS; i++) {
		struct publication *pub = c->pubs[i];
		if (!pub || pub->stream_id != msg->body.registration.stream_id)
			continue;
		struct registration *grown =
		    realloc(pub->pending, (pub->n_pending + 1) * sizeof(*grown));
		if (!grown)
			break;
		pub->pending = grown;
		grown[pub->n_pending++] = (struct registration){
		    .opcode = msg->header.opcode,
		    .msg = msg->body.registration,
		    .fds = {msg->fds[0], msg->fds[1], msg->fds[2]},
		};
		return;
	}
	fb__msg_close_fds(msg); /* for a stream we no longer publish */
}

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

static void deliver_event(fb_client *c, const struct fb__msg_stream_event *e)
{
	char stream[FB__NAME_MAX], detail[FB__ERROR_TEXT_MAX];
	if (!c->event_fn)
		return;
	if (c->in_pump) {
		struct fb__msg_stream_event *grown =
		    realloc(c->deferred, (c->n_deferred + 1) * sizeof(*grown));
		if (grown) {
			c->deferred = grown;
			grown[c->n_deferred++] = *e;
		}
		return;
	}
	snprintf(stream, sizeof(stream), "%.*s", (int)sizeof(e->stream), e->stream);
	snprintf(detail, sizeof(detail), "%.*s", (int)sizeof(e->detail), e->detail);
	c->event_fn(c->event_data, stream, e->state, detail);
}

static void deliver_deferred(fb_client *c)
{
	for (uint32_t i = 0; !c->in_pump && i < c->n_deferred; i++)
		deliver_event(c, &c->deferred[i]);
	if (!c->in_pump)
		c->n_deferred = 0;
}

/* Receive one message, waiting up to timeout_ms.  Events are delivered and
 * reported as 1; a message for the caller is 0. */
static int receive(fb_client *c, struct fb__msg *msg, int timeout_ms)
{
	uint64_t deadline = fb__now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000u;

	if (c->gone)
		return -ECONNRESET;
	deliver_deferred(c);
	for (;;) {
		int r = fb__msg_recv(c->fd, msg);
		if (r == -EAGAIN) {
			if (timeout_ms == 0)
				return -EAGAIN;
			uint64_t now = fb__now_ns(CLOCK_MONOTONIC);
			if (now >= deadline)
				return -ETIMEDOUT;
			struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
			/* A signal does not cut a request short: its reply would
			 * then answer the next one. */
			if (poll(&pfd, 1, (int)((deadline - now + 999999) / 1000000)) < 0 &&
			    errno != EINTR)
				return -errno;
			continue;
		}
		if (r == -ECONNRESET || r == -EPIPE)
			c->gone = true;
		if (r < 0)
			return r;
		if (msg->header.opcode == FB__OP_STREAM_EVENT) {
			deliver_event(c, &msg->body.stream_event);
			return 1;
		}
		if (msg->header.opcode == FB__OP_ADD_SUBSCRIBER ||
		    msg->header.opcode == FB__OP_REMOVE_SUBSCRIBER) {
			queue_registration(c, msg);
			return 1;
		}
		return 0;
	}
}

/* The replies a request may get, for reply(). */
#define WANT(opcode) (1u << ((opcode)-FB__OP_HELLO_REPLY))

/* The next reply to request seq, one of the opcodes in want; an ERROR reply
 * becomes its error code, any other reply -EPROTO (its fds closed). */
static int reply(fb_client *c, uint32_t seq, struct fb__msg *msg, uint32_t want)
{
	for (;;) {
		int r = receive(c, msg, REPLY_TIMEOUT_MS);
		if (r == 1)
			continue;
		if (r < 0)
			return r;
		if (msg->header.seq != seq) {
			/* The late reply to a request that timed out: drop it,
			 * and end a subscription nobody holds. */
			if (msg->header.opcode == FB__OP_SUBSCRIBED) {
				struct fb__msg_id req = {.id = msg->body.subscribed.id};
				fb__msg_send(c->fd, FB__OP_UNSUBSCRIBE, 0, &req, sizeof(req), NULL,
					     0);
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
		if (op < FB__OP_HELLO_REPLY || op > FB__OP_CREATED || !(want & WANT(op))) {
			fb__msg_close_fds(msg);
			return -EPROTO;
		}
		return 0;
	}
}

static int request(fb_client *c, uint32_t opcode, const void *payload, size_t size,
		   uint32_t *ret_seq)
{
	if (c->gone)
		return -ECONNRESET;
	c->last_error[0] = '\0';
	uint32_t seq = ++c->seq ? c->seq : ++c->seq;
	int r = fb__msg_send(c->fd, opcode, seq, payload, size, NULL, 0);
	if (r == -EPIPE || r == -ECONNRESET)
		c->gone = true;
	if (r < 0)
		return r;
	*ret_seq = seq;
	return 0;
}

FB_EXPORT int fb_client_connect(const char *path, const char *name, fb_client **ret_client)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct fb__msg_hello hello = {.version = FB__PROTOCOL_VERSION};
	struct fb__msg msg;
	fb_client *c;
	uint32_t seq;
	int r;

	if (!ret_client)
		return -EINVAL;
	if (!path)
		path = getenv("FRAMEBUS_SOCKET");
	if (!path || !*path)
		path = FB_DEFAULT_SOCKET;
	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	if (!fb__name_set(hello.name, sizeof(hello.name), name ? name : "client") ||
	    !fb__name_valid(hello.name, sizeof(hello.name)))
		return -EINVAL;
	strcpy(addr.sun_path, path);

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		r = -errno;
		goto fail;
	}
	r = request(c, FB__OP_HELLO, &hello, sizeof(hello), &seq);
	if (r >= 0)
		r = reply(c, seq, &msg, WANT(FB__OP_HELLO_REPLY));
	if (r >= 0 && (msg.header.opcode != FB__OP_HELLO_REPLY ||
		       msg.body.hello.version != FB__PROTOCOL_VERSION))
		r = -EPROTO;
	if (r < 0)
		goto fail;
	c->id = msg.body.hello.client_id;
	*ret_client = c;
	return 0;
fail:
	fb_client_free(c);
	return r;
}

static void publication_free(struct publication *pub)
{
	for (uint32_t i = 0; i < pub->n_pending; i++)
		for (int j = 0; j < 3; j++)
			if (pub->pending[i].fds[j] >= 0)
				close(pub->pending[i].fds[j]);
	free(pub->pending);
	free(pub);
}

FB_EXPORT void fb_client_free(fb_client *c)
{
	if (!c)
		return;
	for (uint32_t i = 0; i < MAX_PUBLICATIONS; i++)
		if (c->pubs[i]) {
			/* The producer lives on, alone: no new subscriber reaches it. */
			fb__producer_set_pump(c->pubs[i]->producer, NULL, NULL);
			publication_free(c->pubs[i]);
		}
	if (c->fd >= 0)
		close(c->fd);
	free(c->deferred);
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

FB_EXPORT const char *fb_client_last_error(const fb_client *c)
{
	return c ? c->last_error : "";
}

FB_EXPORT int fb_client_check(const fb_client *c)
{
	if (!c)
		return -EINVAL;
	struct pollfd pfd = {.fd = c->fd, .events = POLLRDHUP};
	if (c->gone || (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR))))
		return -ECONNRESET;
	return 0;
}

FB_EXPORT int fb_client_process(fb_client *c)
{
	struct fb__msg msg;
	int events = 0, r;

	if (!c)
		return -EINVAL;
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

FB_EXPORT int fb_client_get_subscriptions(fb_client *c, const char *stream,
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
	r = request(c, FB__OP_STATS, &req, sizeof(req), &seq);
	while (r >= 0 &&
	       (r = reply(c, seq, &msg,
			  WANT(FB__OP_SUBSCRIBER_STATS) | WANT(FB__OP_STREAM_INFO))) >= 0 &&
	       msg.header.opcode == FB__OP_SUBSCRIBER_STATS) {
		const struct fb__msg_subscriber_stats *m = &msg.body.subscriber_stats;
		struct fb_subscription_info *grown = append(list, &n, sizeof(*list));
		if (!grown) {
			r = -ENOMEM;
			break;
		}
		list = grown;
		list[n - 1] = (struct fb_subscription_info){
		    .id = m->id,
		    .mode = m->mode,
		    .held = m->held,
		    .lag = m->lag,
		    .missed = m->missed,
		    .next_seq = m->next_seq,
		    .fps = m->fps_out_milli / 1000.0,
		};
		snprintf(list[n - 1].client, sizeof(list[n - 1].client), "%.*s",
			 (int)sizeof(m->client), m->client);
	}
	if (r >= 0 && msg.header.opcode != FB__OP_STREAM_INFO)
		r = -EPROTO;
	if (r < 0) {
		free(list);
		return r;
	}
	*ret_subs = list;
	*ret_n = n;
	return 0;
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

FB_EXPORT int fb_client_subscribe(fb_client *c, const char *stream, uint32_t mode,
				  uint32_t max_holds, fb_subscriber **ret_subscriber)
{
	struct fb__msg_subscribe req = {.mode = mode, .max_holds = max_holds};
	struct fb__msg msg;
	struct fb_subscriber_fds fds;
	fb_subscriber *sub;
	uint32_t seq;
	int r;

	if (!c || !ret_subscriber || !fb__name_set(req.stream, sizeof(req.stream), stream))
		return -EINVAL;
	r = request(c, FB__OP_SUBSCRIBE, &req, sizeof(req), &seq);
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
	fb__subscriber_set_id(sub, msg.body.subscribed.id);
	*ret_subscriber = sub;
	return 0;
}

FB_EXPORT int fb_client_unsubscribe(fb_client *c, fb_subscriber *sub)
{
	if (!c || !sub)
		return -EINVAL;
	int r = unsubscribe_id(c, fb__subscriber_get_id(sub));
	fb_subscriber_free(sub);
	return r;
}

/* Called by a published producer's claim, with the producer locked: read
 * what the daemon sent and take in this producer's registrations. */
static void pump(void *data)
{
	struct publication *pub = data;
	struct fb__msg msg;
	int r;

	pub->client->in_pump = true;
	while ((r = receive(pub->client, &msg, 0)) >= 0)
		if (r == 0) /* a reply nobody waits for */
			fb__msg_close_fds(&msg);
	pub->client->in_pump = false;
	for (uint32_t i = 0; i < pub->n_pending; i++) {
		struct registration *g = &pub->pending[i];
		if (g->opcode == FB__OP_ADD_SUBSCRIBER)
			fb__producer_register_locked(pub->producer, g->msg.subscriber_id,
						     g->msg.mode, g->msg.max_holds, g->fds[0],
						     g->fds[1], g->fds[2]);
		else
			fb__producer_unregister_locked(pub->producer, g->msg.subscriber_id);
	}
	pub->n_pending = 0;
}

FB_EXPORT int fb_client_publish(fb_client *c, const char *name, const struct fb_ring_params *params,
				fb_producer **ret_producer)
{
	struct fb__msg_create_stream req;
	struct fb__msg msg;
	struct publication *pub;
	fb_producer *p;
	int fds[2], r;
	uint32_t i, seq;

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
	pub = calloc(1, sizeof(*pub));
	if (!pub) {
		fb_producer_free(p);
		return -ENOMEM;
	}
	fb__producer_get_fds(p, &fds[0], &fds[1]);
	c->last_error[0] = '\0';
	seq = ++c->seq ? c->seq : ++c->seq;
	r = c->gone ? -ECONNRESET
		    : fb__msg_send(c->fd, FB__OP_CREATE_STREAM, seq, &req, sizeof(req), fds, 2);
	if (r >= 0)
		r = reply(c, seq, &msg, WANT(FB__OP_CREATED));
	if (r >= 0 && msg.header.opcode != FB__OP_CREATED)
		r = -EPROTO;
	if (r < 0) {
		free(pub);
		fb_producer_free(p);
		return r;
	}
	*pub = (struct publication){.client = c, .producer = p, .stream_id = msg.body.id.id};
	c->pubs[i] = pub;
	fb__producer_set_pump(p, pump, pub);
	*ret_producer = p;
	return 0;
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
		r = request(c, FB__OP_DESTROY_STREAM, &req, sizeof(req), &seq);
		if (r >= 0)
			r = reply(c, seq, &msg, WANT(FB__OP_DONE));
		fb__producer_set_pump(p, NULL, NULL);
		publication_free(pub);
		c->pubs[i] = NULL;
		break;
	}
	fb_producer_free(p);
	return r;
}
