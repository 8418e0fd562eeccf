/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "published.h"
#include "stream.h"

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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
	pthread_mutex_unlock(&st->lock);
	if (changed)
		st->notify(st->notify_data);
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

bool fbd_stream_sleep(struct fbd_stream *st, uint64_t ns)
{
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	uint64_t t = (uint64_t)until.tv_sec * 1000000000u + (uint64_t)until.tv_nsec + ns;
	until.tv_sec = (time_t)(t / 1000000000u);
	until.tv_nsec = (long)(t % 1000000000u);

	pthread_mutex_lock(&st->lock);
	while (!atomic_load(&st->stop) &&
	       pthread_cond_clockwait(&st->wake, &st->lock, CLOCK_MONOTONIC, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&st->lock);
	return !atomic_load(&st->stop);
}

int fbd_stream_ring(struct fbd_stream *st, uint32_t width, uint32_t height,
		    fb_producer **ret_producer)
{
	fb_producer *p = fbd_stream_producer(st);
	int r;

	if (p) {
		*ret_producer = p;
		return 0;
	}
	struct fb_ring_params params = {
	    .width = st->config->width ? st->config->width : width,
	    .height = st->config->height ? st->config->height : height,
	    .format = st->config->format,
	    .slots = st->config->slots,
	    .policy = st->config->policy,
	    .meta_max = st->config->meta_max,
	};
	/* A source's own size may be odd; the subsampled formats need even
	 * sizes, so round down. */
	if (st->config->format == FB_FORMAT_NV12 || st->config->format == FB_FORMAT_YUV420P) {
		params.width &= ~1u;
		params.height &= ~1u;
	}
	/* Made without the lock: allocating a large ring takes a while, and the
	 * main thread takes the lock for status and subscriptions.  Only one
	 * thread ever makes a stream's ring (the source thread, or start-up
	 * before that thread exists). */
	r = fb_producer_new(&params, &p);
	if (r < 0)
		return r;
	pthread_mutex_lock(&st->lock);
	st->producer = p;
	st->width = params.width;
	st->height = params.height;
	pthread_mutex_unlock(&st->lock);
	fbd_log_about(LOG_INFO, st->config->name, NULL,
		      "stream %s: ring of %u x %ux%u %s (%s), %u bytes of side data per frame",
		      st->config->name, params.slots, params.width, params.height,
		      fb_format_name(params.format),
		      params.policy == FB_POLICY_BLOCK ? "block" : "drop", params.meta_max);
	*ret_producer = p;
	return 0;
}

static void *stream_thread(void *arg)
{
	struct fbd_stream *st = arg;
	uint64_t backoff = st->config->retry_min_ns;
	char why[FB__ERROR_TEXT_MAX];

	while (!atomic_load(&st->stop)) {
		uint64_t started = now_ns();
		why[0] = '\0';
		int r = fbd_source_run(st, why, sizeof(why));
		if (atomic_load(&st->stop))
			break;
		if (r == 0 && !st->config->loop) {
			fbd_log_about(LOG_INFO, st->config->name, NULL, "stream %s: end of %s",
				      st->config->name, st->config->url);
			fbd_stream_set_state(st, FB_STREAM_ENDED, "end of input");
			fb_producer *p = fbd_stream_producer(st);
			if (p)
				fb_producer_end(p);
			break;
		}
		if (r == 0)
			continue; /* loop: open it again from the start */
		/* A source that ran for a while before failing starts over from
		 * the shortest wait. */
		if (now_ns() - started > st->config->retry_max_ns)
			backoff = st->config->retry_min_ns;
		/* An input this FFmpeg cannot decode stays so until someone
		 * changes it: try it again only every retry_max. */
		if (r == -ENOTSUP)
			backoff = st->config->retry_max_ns;
		fbd_log_about(LOG_WARNING, st->config->name, NULL,
			      "stream %s: %s; retrying in %.1f s", st->config->name, why,
			      backoff / 1e9);
		fbd_stream_set_state(st, FB_STREAM_RETRYING, why);
		if (!fbd_stream_sleep(st, backoff))
			break;
		backoff =
		    backoff * 2 > st->config->retry_max_ns ? st->config->retry_max_ns : backoff * 2;
	}
	return NULL;
}

int fbd_stream_start(const struct fbd_stream_config *config, void (*notify)(void *data),
		     void *notify_data, struct fbd_stream **ret_stream)
{
	struct fbd_stream *st = calloc(1, sizeof(*st));
	pthread_condattr_t ca;
	int r;

	if (!st)
		return -ENOMEM;
	st->config = fbd_stream_config_dup(config);
	if (!st->config) {
		free(st);
		return -ENOMEM;
	}
	st->notify = notify;
	st->notify_data = notify_data;
	st->state = FB_STREAM_STARTING;
	st->last_sample_ns = now_ns();
	pthread_mutex_init(&st->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->wake, &ca);
	pthread_condattr_destroy(&ca);

	/* A configured geometry makes the ring now, so clients can subscribe
	 * before the source delivers its first frame. */
	if (config->width) {
		fb_producer *p;
		r = fbd_stream_ring(st, config->width, config->height, &p);
		if (r < 0)
			goto fail;
	}
	r = -pthread_create(&st->thread, NULL, stream_thread, st);
	if (r < 0)
		goto fail;
	*ret_stream = st;
	return 0;
fail:
	fb_producer_free(st->producer);
	fbd_stream_config_free(st->config);
	free(st);
	return r;
}

void fbd_stream_free(struct fbd_stream *st)
{
	if (!st)
		return;
	if (st->published) {
		fbd_published_free(st);
		return;
	}
	pthread_mutex_lock(&st->lock);
	atomic_store(&st->stop, true);
	pthread_cond_broadcast(&st->wake);
	pthread_mutex_unlock(&st->lock);
	pthread_join(st->thread, NULL);
	fb_producer_free(st->producer);
	pthread_cond_destroy(&st->wake);
	pthread_mutex_destroy(&st->lock);
	fbd_stream_config_free(st->config);
	free(st);
}

fb_producer *fbd_stream_producer(struct fbd_stream *st)
{
	pthread_mutex_lock(&st->lock);
	fb_producer *p = st->producer;
	pthread_mutex_unlock(&st->lock);
	return p;
}

void fbd_stream_describe(struct fbd_stream *st, struct fb__msg_stream_info *info)
{
	struct fb_ring_stats stats = {0};
	fb_producer *p;

	memset(info, 0, sizeof(*info));
	fb__name_set(info->name, sizeof(info->name), st->config->name);
	snprintf(info->source, sizeof(info->source), "%s%s%s",
		 st->config->input_format ? st->config->input_format : "",
		 st->config->input_format ? ":" : "", st->config->url);

	pthread_mutex_lock(&st->lock);
	p = st->producer;
	info->state = st->state;
	info->retries = st->retries;
	snprintf(info->detail, sizeof(info->detail), "%s", st->detail);
	info->width = st->width;
	info->height = st->height;
	pthread_mutex_unlock(&st->lock);

	if (p)
		fb_producer_get_stats(p, &stats);
	if (st->published)
		fbd_published_counters(st, &stats.published, &stats.dropped, &stats.subscribers);
	uint64_t now = now_ns();
	if (now - st->last_sample_ns >= 500000000u) {
		st->fps = (double)(stats.published - st->last_published) * 1e9 /
			  (double)(now - st->last_sample_ns);
		st->last_published = stats.published;
		st->last_sample_ns = now;
	}
	info->format = st->config->format;
	info->slots = st->config->slots;
	info->policy = st->config->policy;
	info->meta_max = st->config->meta_max;
	info->subscribers = stats.subscribers;
	info->published = stats.published;
	info->dropped = stats.dropped;
	info->fps_in_milli = (uint32_t)(st->fps * 1000);
}
