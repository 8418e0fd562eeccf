/* SPDX-License-Identifier: MIT */
/* The table of streams: the configured ones (start, reload, stop) and those
 * clients publish; the state changes other threads report, told through
 * d->stream_changed on the main thread. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"
#include "log.h"

static void notify_loop(void *data)
{
	uv_async_send(data); /* thread-safe: the one libuv call a thread may make */
}

static void tell(struct fbd_daemon *d, struct fbd_stream *st, uint32_t state, const char *detail)
{
	if (d->stream_changed)
		d->stream_changed(d, st, state, detail);
}

/* Subscribe every derived stream that has no parent ring to its parent's,
 * once that has one: at start, after a reload, when a stream changes state
 * and every second (a parent with every subscriber place taken). */
static void feed_derived(struct fbd_daemon *d)
{
	for (uint32_t i = 0; i < d->n_streams; i++) {
		struct fbd_stream *st = d->streams[i], *parent;
		struct fb_subscriber_fds fds;
		fb_subscriber *sub;
		uint32_t id;
		if (!st->config || !st->config->from || st->parent ||
		    !(parent = fbd_streams_find(d, st->config->from)) ||
		    !fbd_stream_params(parent).width)
			continue;
		/* latest, one hold: the parent never waits for it */
		int r = parent->ops->subscribe(parent, FB_MODE_LATEST, 1, &fds, &id);
		if (r == 0 && (r = fb_subscriber_attach(&fds, &sub)) < 0) {
			fb_subscriber_fds_close(&fds);
			parent->ops->unsubscribe(parent, id);
		}
		if (r < 0) {
			fbd_log_about(LOG_WARNING, st->name, NULL,
				      "stream %s: cannot subscribe to its parent %s: %s", st->name,
				      parent->name, fb_strerror(r));
			continue;
		}
		st->parent = parent;
		st->parent_ring_id = id;
		fbd_decoded_feed(st, sub);
	}
}

static void on_state_change(uv_async_t *async)
{
	struct fbd_daemon *d = async->data;
	char detail[FB__ERROR_TEXT_MAX];
	uint32_t state;

	for (uint32_t i = 0; i < d->n_streams; i++)
		if (fbd_stream_take_change(d->streams[i], &state, detail, sizeof(detail)))
			tell(d, d->streams[i], state, detail);
	feed_derived(d);
}

int fbd_streams_add(struct fbd_daemon *d, struct fbd_stream *st)
{
	if (d->n_streams == FBD_MAX_STREAMS) {
		st->ops->free(st, true);
		return -EUSERS;
	}
	st->id = ++d->next_stream_id ? d->next_stream_id : ++d->next_stream_id;
	pthread_mutex_lock(&st->lock);
	st->notify = notify_loop;
	st->notify_data = &d->state_async;
	bool changed = st->state_changed; /* before it had somebody to tell */
	pthread_mutex_unlock(&st->lock);
	if (changed)
		notify_loop(&d->state_async);
	/* Its rates count from now: a client's ring published again after a
	 * restart has frames from before. */
	fbd_stream_sample(st);
	d->streams[d->n_streams++] = st;
	return 0;
}

/* Take a stream out of the table and free it (ending it or not). */
static void drop(struct fbd_daemon *d, struct fbd_stream *st, const char *why, bool end)
{
	tell(d, st, FB_STREAM_REMOVED, why);
	/* Derived streams: its own subscription to its parent goes; those of
	 * its children end with its ring, and they wait for the next. */
	if (st->parent)
		st->parent->ops->unsubscribe(st->parent, st->parent_ring_id);
	for (uint32_t i = 0; i < d->n_streams; i++)
		if (d->streams[i]->parent == st)
			d->streams[i]->parent = NULL;
	for (uint32_t i = 0; i < d->n_streams; i++)
		if (d->streams[i] == st) {
			d->streams[i] = d->streams[--d->n_streams];
			break;
		}
	fbd_log_about(LOG_INFO, st->name, NULL, "stream %s: stopped (%s)", st->name, why);
	st->ops->free(st, end);
}

void fbd_streams_remove(struct fbd_daemon *d, struct fbd_stream *st, const char *why)
{
	drop(d, st, why, true);
}

static void start_one(struct fbd_daemon *d, const struct fbd_stream_config *c)
{
	struct fbd_stream *st;
	if (d->n_streams == FBD_MAX_STREAMS) {
		fbd_log_about(LOG_ERR, c->name, NULL,
			      "stream %s: not started: the daemon already runs %d streams", c->name,
			      FBD_MAX_STREAMS);
		return;
	}
	int r = fbd_decoded_start(c, fbd_fdstore_take_seq(d, c->name), &st);
	if (r < 0) {
		fbd_log_about(LOG_ERR, c->name, NULL, "stream %s: cannot start: %s", c->name,
			      fb_strerror(r));
		return;
	}
	fbd_streams_add(d, st);
	fbd_log_about(LOG_INFO, c->name, NULL, "stream %s: started (%s)", c->name, st->source);
}

int fbd_streams_start(struct fbd_daemon *d)
{
	int r = uv_async_init(d->loop, &d->state_async, on_state_change);
	if (r < 0)
		return r;
	d->state_async.data = d;
	for (uint32_t i = 0; i < d->config->n_streams; i++)
		start_one(d, &d->config->streams[i]);
	feed_derived(d);
	return 0;
}

struct fbd_stream *fbd_streams_find(struct fbd_daemon *d, const char *name)
{
	for (uint32_t i = 0; i < d->n_streams; i++)
		if (!strcmp(d->streams[i]->name, name))
			return d->streams[i];
	return NULL;
}

void fbd_streams_apply(struct fbd_daemon *d, struct fbd_config *config)
{
	/* Streams gone or changed stop first, so that a changed one's new ring
	 * does not need memory the old one still holds. */
	for (uint32_t i = d->n_streams; i-- > 0;) {
		const struct fbd_stream_config *old = d->streams[i]->config;
		const struct fbd_stream_config *now = NULL;
		if (!old)
			continue; /* a client's, not the configuration's */
		for (uint32_t j = 0; j < config->n_streams; j++)
			if (!strcmp(config->streams[j].name, old->name))
				now = &config->streams[j];
		if (!now)
			fbd_streams_remove(d, d->streams[i], "removed from the configuration");
		else if (!fbd_stream_config_equal(old, now))
			fbd_streams_remove(d, d->streams[i],
					   "its configuration changed; subscribe again");
	}
	for (uint32_t j = 0; j < config->n_streams; j++) {
		struct fbd_stream *st = fbd_streams_find(d, config->streams[j].name);
		if (st && !st->config)
			fbd_log_about(
			    LOG_ERR, config->streams[j].name, NULL,
			    "stream %s: not started: a client publishes a stream of that name",
			    config->streams[j].name);
		else if (!st)
			start_one(d, &config->streams[j]);
	}
	fbd_config_free(d->config);
	d->config = config;
	feed_derived(d);
}

void fbd_streams_stop(struct fbd_daemon *d)
{
	/* Not an end of stream: the rings go as with a daemon that died, and
	 * subscribers wait for the next daemon (docs/operations.md). */
	while (d->n_streams)
		drop(d, d->streams[d->n_streams - 1], "the daemon is stopping", false);
	if (!uv_is_closing((uv_handle_t *)&d->state_async))
		uv_close((uv_handle_t *)&d->state_async, NULL);
}

void fbd_streams_watch(struct fbd_daemon *d)
{
	uint64_t now = fb_now_ns();
	bool wedged = false;
	for (uint32_t i = 0; i < d->n_streams; i++) {
		struct fbd_stream *st = d->streams[i];
		fbd_stream_sample(st);
		if (st->ops->wedged && st->ops->wedged(st, now))
			wedged = true;
	}
	feed_derived(d);
	if (wedged && !d->wedged)
		fbd_error("watchdog: a stream's thread is stuck beyond help; no more pings, so "
			  "that systemd restarts framebusd");
	d->wedged = wedged;
}

void fbd_streams_status(struct fbd_daemon *d, char *buf, size_t size)
{
	size_t n = (size_t)snprintf(buf, size, "%u clients;", d->n_clients);
	for (uint32_t i = 0; i < d->n_streams && n < size; i++) {
		struct fb__msg_stream_info info;
		fbd_stream_describe(d->streams[i], &info);
		n += (size_t)snprintf(buf + n, size - n, " %s %s %.1f fps %u subs%s", info.name,
				      fb_stream_state_name(info.state), info.fps_in_milli / 1000.0,
				      info.subscribers, i + 1 < d->n_streams ? ";" : "");
	}
}
