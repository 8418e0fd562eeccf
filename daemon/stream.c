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

uint32_t fbd_stream_state(struct fbd_stream *st)
{
	pthread_mutex_lock(&st->lock);
	uint32_t state = st->state;
	pthread_mutex_unlock(&st->lock);
	return state;
}

struct fb_ring_params fbd_stream_params(struct fbd_stream *st)
{
	pthread_mutex_lock(&st->lock);
	struct fb_ring_params params = st->params;
	pthread_mutex_unlock(&st->lock);
	return params;
}

/* Its counters now, as a sample of what it published. */
static struct fbd_sample take_sample(struct fbd_stream *st, struct fbd_counters *ret_counters)
{
	st->ops->counters(st, ret_counters);
	return (struct fbd_sample){.ns = fb_now_ns(), .count = ret_counters->ring.published};
}

void fbd_stream_sample(struct fbd_stream *st)
{
	struct fbd_counters counters;
	struct fbd_sample now = take_sample(st, &counters);
	fbd_window_push(&st->rates, &now);
}

/* The message, and the sample it was made from. */
static struct fbd_sample describe(struct fbd_stream *st, struct fb__msg_stream_info *info,
				  struct fbd_counters *ret_counters)
{
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

	struct fbd_sample now = take_sample(st, ret_counters);
	info->subscribers = ret_counters->ring.subscribers;
	info->published = ret_counters->ring.published;
	info->dropped = ret_counters->ring.dropped;
	info->fps_in_milli = (uint32_t)(fbd_window_rate(&st->rates, &now, 1000000000u) * 1000);
	return now;
}

void fbd_stream_describe(struct fbd_stream *st, struct fb__msg_stream_info *info)
{
	struct fbd_counters counters;
	describe(st, info, &counters);
}

/* Microseconds from a to b, 0 if either is unknown or they are out of
 * order. */
static uint32_t us_between(uint64_t a, uint64_t b)
{
	return a && b > a ? (uint32_t)((b - a) / 1000u) : 0;
}

void fbd_stream_detail(struct fbd_stream *st, struct fb__msg_stream_detail *detail)
{
	struct fbd_counters c;
	memset(detail, 0, sizeof(*detail));
	struct fbd_sample now = describe(st, &detail->info, &c);
	detail->fps_10s_milli = (uint32_t)(fbd_window_rate(&st->rates, &now, 10000000000u) * 1000);
	detail->capture_latency_us = us_between(c.latest_capture_ns, c.latest_publish_ns);
	detail->capture_age_us = us_between(c.latest_capture_ns, now.ns);
	detail->stalls = st->stalls;
	detail->flags = c.derived ? FB__STREAM_DERIVED : 0;
	detail->parent_skipped_busy = c.skipped_busy;
	detail->parent_skipped_rate = c.skipped_rate;
}
