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
#include "ring-private.h"

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
		fbd_decoded_feed(st, sub, parent);
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
	/* Derived streams: its own subscription to its parent goes, and so do
	 * its children's to it: they see their subscription revoked, not an
	 * end of input (which would end them), and wait for the next ring. */
	if (st->parent)
		st->parent->ops->unsubscribe(st->parent, st->parent_ring_id);
	for (uint32_t i = 0; i < d->n_streams; i++)
		if (d->streams[i]->parent == st) {
			st->ops->unsubscribe(st, d->streams[i]->parent_ring_id);
			d->streams[i]->parent = NULL;
		}
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
		if (!old || d->streams[i]->on_demand)
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
		if (st && (!st->config || st->on_demand))
			fbd_log_about(LOG_ERR, config->streams[j].name, NULL,
				      "stream %s: not started: a client publishes or asked for a "
				      "stream of that name",
				      config->streams[j].name);
		else if (!st)
			start_one(d, &config->streams[j]);
	}
	/* A derived stream that ended with its parent starts again once the
	 * parent runs again (its subscribers saw the end: they subscribe
	 * again), and so on down a chain. */
	for (bool again = true; again;) {
		again = false;
		for (uint32_t j = 0; j < config->n_streams; j++) {
			const struct fbd_stream_config *c = &config->streams[j];
			struct fbd_stream *st = fbd_streams_find(d, c->name), *parent;
			if (!c->from || !st || !st->config || st->on_demand ||
			    fbd_stream_state(st) != FB_STREAM_ENDED ||
			    !(parent = fbd_streams_find(d, c->from)) ||
			    fbd_stream_state(parent) == FB_STREAM_ENDED)
				continue;
			fbd_streams_remove(d, st, "its parent runs again; subscribe again");
			start_one(d, c);
			again = true;
		}
	}
	fbd_config_free(d->config);
	d->config = config;
	feed_derived(d);
}

/* The configuration of the stream spec derives from parent (whose ring has
 * params), and its name: "PARENT~WxH.FORMAT[@FPS][+X,Y,W,H]", with the
 * daemon's defaults (scale_threads, hold_timeout).  Every zero of spec
 * resolved; false, with why, for a spec that cannot be made. */
static bool derived_config(const struct fbd_stream *parent, struct fb_ring_params params,
			   double parent_fps, const struct fbd_config *daemon,
			   const struct fb_derived *spec, struct fbd_stream_config *ret, char *why,
			   size_t size)
{
	struct fbd_stream_config *c = ret;
	struct fb_layout l;
	const uint32_t *crop = spec->crop;

	for (size_t i = 0; i < sizeof(spec->reserved_) / sizeof(spec->reserved_[0]); i++)
		if (spec->reserved_[i]) {
			snprintf(why, size, "the request's reserved fields are not zero");
			return false;
		}
	if (params.format == FB_FORMAT_RESULTS) {
		snprintf(why, size, "'%s' is a results stream: it has no pictures", parent->name);
		return false;
	}
	fbd_stream_config_defaults(c);
	c->scale_threads = daemon->scale_threads;
	c->hold_timeout_ns = daemon->hold_timeout_ns;
	c->format = spec->format ? spec->format : params.format;
	c->fps_milli = spec->fps_milli;
	memcpy(c->crop, crop, sizeof(c->crop));
	c->meta_max = params.meta_max;
	c->width = spec->width ? spec->width : crop[2] ? crop[2] : params.width;
	c->height = spec->height ? spec->height : crop[2] ? crop[3] : params.height;
	bool subsampled = params.format == FB_FORMAT_NV12 || params.format == FB_FORMAT_YUV420P;
	if (!fb_format_name(c->format) || c->format == FB_FORMAT_RESULTS)
		snprintf(why, size, "format %u is not a pixel format", c->format);
	else if (!spec->width != !spec->height)
		snprintf(why, size, "width and height must be given together");
	else if (fb_layout_compute(c->width, c->height, c->format, &l) < 0)
		snprintf(why, size,
			 "%ux%u is not a valid size for %s (nv12 and yuv420p need even "
			 "sizes, yuyv422 an even width)",
			 c->width, c->height, fb_format_name(c->format));
	else if ((crop[2] || crop[3]) &&
		 (!crop[2] || !crop[3] || crop[0] >= params.width || crop[1] >= params.height ||
		  crop[2] > params.width - crop[0] || crop[3] > params.height - crop[1] ||
		  (subsampled && (crop[0] % 2 || crop[1] % 2))))
		snprintf(why, size, "crop %u,%u,%u,%u does not fit %s's %ux%u %s%s", crop[0],
			 crop[1], crop[2], crop[3], parent->name, params.width, params.height,
			 fb_format_name(params.format),
			 subsampled ? " (x and y must be even)" : "");
	else if (spec->fps_milli && (spec->fps_milli < 100 || spec->fps_milli > 1000000))
		snprintf(why, size, "fps %.3g is not a rate from 0.1 to 1000",
			 spec->fps_milli / 1e3);
	else if (spec->fps_milli && parent_fps > 0 && spec->fps_milli / 1e3 > parent_fps * 1.05)
		snprintf(why, size, "fps %.3g is above %s's %.3g", spec->fps_milli / 1e3,
			 parent->name, parent_fps);
	else
		why[0] = 0;
	if (why[0])
		return false;
	c->from = (char *)parent->name; /* only while the stream is started: it copies */
	int n = snprintf(c->name, sizeof(c->name), "%s~%ux%u.%s", parent->name, c->width, c->height,
			 fb_format_name(c->format));
	if (n > 0 && (size_t)n < sizeof(c->name) && spec->fps_milli)
		n += snprintf(c->name + n, sizeof(c->name) - (size_t)n, "@%g",
			      spec->fps_milli / 1e3);
	if (n > 0 && (size_t)n < sizeof(c->name) && crop[2])
		n += snprintf(c->name + n, sizeof(c->name) - (size_t)n, "+%u,%u,%u,%u", crop[0],
			      crop[1], crop[2], crop[3]);
	if (n < 0 || (size_t)n >= sizeof(c->name)) {
		snprintf(why, size, "its name, '%s~...', would be longer than %d characters",
			 parent->name, FB_NAME_MAX);
		return false;
	}
	return true;
}

int fbd_streams_derive(struct fbd_daemon *d, struct fbd_stream *parent,
		       const struct fb_derived *spec, struct fbd_client *client, char *why,
		       size_t size, struct fbd_stream **ret_stream)
{
	struct fb_ring_params params = fbd_stream_params(parent);
	struct fb__msg_stream_info info;
	struct fbd_stream_config c;
	struct fb__ring_geometry geo;
	struct fbd_stream *st;

	if (!params.width) {
		snprintf(why, size, "stream '%s' is starting: its source has not told its size yet",
			 parent->name);
		return -EAGAIN;
	}
	fbd_stream_describe(parent, &info);
	if (!derived_config(parent, params, info.fps_in_milli / 1000.0, d->config, spec, &c, why,
			    size))
		return -EINVAL;
	if ((st = fbd_streams_find(d, c.name))) {
		if (!st->on_demand) {
			snprintf(why, size,
				 "a stream named '%s' exists and was not made on request", c.name);
			return -EEXIST;
		}
		*ret_stream = st;
		return 0;
	}
	uint32_t mine = 0;
	uint64_t memory = 0;
	for (uint32_t i = 0; i < d->n_streams; i++) {
		struct fb_ring_params theirs = fbd_stream_params(d->streams[i]);
		if (!d->streams[i]->on_demand)
			continue;
		mine += d->streams[i]->creator == client;
		if (fb__ring_geometry_compute(&theirs, &geo) == 0)
			memory += geo.total_size;
	}
	struct fb_ring_params ours = {.width = c.width,
				      .height = c.height,
				      .format = c.format,
				      .slots = c.slots,
				      .policy = c.policy,
				      .meta_max = c.meta_max};
	if (fb__ring_geometry_compute(&ours, &geo) < 0) {
		snprintf(why, size, "cannot make a ring of %ux%u %s", c.width, c.height,
			 fb_format_name(c.format));
		return -EINVAL;
	}
	if (mine >= d->config->max_derived_per_client) {
		snprintf(why, size,
			 "this client has had %u streams made on request, its limit "
			 "(max_derived_per_client)",
			 mine);
		return -EDQUOT;
	}
	if (memory + geo.total_size > d->config->max_derived_memory) {
		snprintf(why, size,
			 "a ring of %llu bytes would take the streams made on request "
			 "past their %llu bytes (max_derived_memory)",
			 (unsigned long long)geo.total_size,
			 (unsigned long long)d->config->max_derived_memory);
		return -EDQUOT;
	}
	/* Numbered on, if the daemon before this one made it too (fdstore.c). */
	int r = fbd_decoded_start(&c, fbd_fdstore_take_seq(d, c.name), &st);
	if (r < 0) {
		snprintf(why, size, "cannot start '%s': %s", c.name, fb_strerror(r));
		return r;
	}
	st->on_demand = true;
	st->creator = client;
	snprintf(st->source, sizeof(st->source), "from:%s (on request)", parent->name);
	if ((r = fbd_streams_add(d, st)) < 0) {
		snprintf(why, size, "the daemon already runs %d streams, its limit",
			 FBD_MAX_STREAMS);
		return r;
	}
	fbd_log_about(LOG_INFO, c.name, NULL, "stream %s: made on request (%s)", c.name,
		      st->source);
	feed_derived(d);
	*ret_stream = st;
	return 0;
}

void fbd_streams_forget(struct fbd_daemon *d, struct fbd_stream *st)
{
	while (st && st->on_demand && !fbd_server_subscribed(d, st)) {
		for (uint32_t i = 0; i < d->n_streams; i++)
			if (d->streams[i]->parent == st)
				return; /* a stream derived from it still reads it */
		struct fbd_stream *parent = st->parent;
		fbd_streams_remove(d, st, "its last subscriber left");
		st = parent;
	}
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
