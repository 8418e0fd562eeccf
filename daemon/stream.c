/* SPDX-License-Identifier: MIT */
/* What every stream has, whatever its back-end: state, status, rate. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ring-private.h"
#include "stream.h"

void fbd_stream_init(struct fbd_stream *st, const struct fbd_stream_ops *ops, const char *name,
		     const struct fb_ring_params *params)
{
	st->ops = ops;
	snprintf(st->name, sizeof(st->name), "%s", name);
	st->params = *params;
	st->state = FB_STREAM_STARTING;
	st->last_sample_ns = fb_now_ns();
	pthread_mutex_init(&st->lock, NULL);
}

void fbd_stream_cleanup(struct fbd_stream *st)
{
	pthread_mutex_destroy(&st->lock);
}

void fbd_stream_set_state(struct fbd_stream *st, uint32_t state, const char *detail)
{
	pthread_mutex_lock(&st->lock);
	bool changed = st->state != state || strcmp(st->detail, detail ? detail : "");
	st->state = state;
	snprintf(st->detail, sizeof(st->detail), "%s", detail ? detail : "");
	if (state == FB_STREAM_RETRYING)
		st->retries++;
	else if (state == FB_STREAM_RUNNING)
		st->retries = 0;
	st->state_changed |= changed;
	void (*notify)(void *) = st->notify;
	void *data = st->notify_data;
	pthread_mutex_unlock(&st->lock);
	if (changed && notify)
		notify(data);
}

bool fbd_stream_take_change(struct fbd_stream *st, uint32_t *ret_state, char *detail, size_t size)
{
	pthread_mutex_lock(&st->lock);
	bool changed = st->state_changed;
	st->state_changed = false;
	*ret_state = st->state;
	snprintf(detail, size, "%s", st->detail);
	pthread_mutex_unlock(&st->lock);
	return changed;
}

struct fb_ring_params fbd_stream_params(struct fbd_stream *st)
{
	pthread_mutex_lock(&st->lock);
	struct fb_ring_params params = st->params;
	pthread_mutex_unlock(&st->lock);
	return params;
}

void fbd_stream_describe(struct fbd_stream *st, struct fb__msg_stream_info *info)
{
	struct fb_ring_stats stats;

	memset(info, 0, sizeof(*info));
	fb__name_set(info->name, sizeof(info->name), st->name);
	snprintf(info->source, sizeof(info->source), "%s", st->source);
	pthread_mutex_lock(&st->lock);
	info->state = st->state;
	info->retries = st->retries;
	snprintf(info->detail, sizeof(info->detail), "%s", st->detail);
	info->width = st->params.width;
	info->height = st->params.height;
	info->format = st->params.format;
	info->slots = st->params.slots;
	info->policy = st->params.policy;
	info->meta_max = st->params.meta_max;
	pthread_mutex_unlock(&st->lock);

	st->ops->counters(st, &stats);
	uint64_t now = fb_now_ns();
	if (now - st->last_sample_ns >= 500000000u) {
		st->fps = (double)(stats.published - st->last_published) * 1e9 /
			  (double)(now - st->last_sample_ns);
		st->last_published = stats.published;
		st->last_sample_ns = now;
	}
	info->subscribers = stats.subscribers;
	info->published = stats.published;
	info->dropped = stats.dropped;
	info->fps_in_milli = (uint32_t)(st->fps * 1000);
}
