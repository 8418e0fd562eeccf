/* SPDX-License-Identifier: MIT */
/* The stream back-end for a configured source: a thread of its own pulls
 * pictures from the source (source.c), paces them, makes the ring once the
 * size is known, converts each picture straight into a slot with libswscale
 * (no intermediate frame), publishes it, and keeps the stream's state,
 * opening the source again with backoff when it fails.  A derived stream
 * (from = PARENT) pulls its pictures from its parent's ring instead: one
 * decode, many sizes, formats and rates. */
#define _GNU_SOURCE
#include <errno.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <signal.h>
#include <libswscale/swscale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pixfmt.h"
#include "ring-private.h"
#include "shrink.h"
#include "source.h"
#include "stream.h"

/* How long a block ring's acquire waits before checking for stop again. */
#define ACQUIRE_SLICE_MS 100
/* The longest the thread sleeps at once: it shows it is alive in between. */
#define SLEEP_SLICE_NS 1000000000u
/* A thread that shows no sign of life for twice its stall_timeout (and at
 * least this) is stuck: in a system call FFmpeg cannot interrupt (opening a
 * FIFO nobody writes), or in a decoder that loops. */
#define STUCK_MIN_NS 2000000000u
/* Delivered to a stuck thread to make its blocking system call fail with
 * EINTR (its handler does nothing and does not restart calls). */
#define INTERRUPT_SIGNAL SIGUSR2
/* How long freeing a stream waits for its thread to stop. */
#define STOP_TIMEOUT_NS 5000000000u

struct decoded {
	struct fbd_stream base;
	struct fbd_stream_config *config;
	pthread_t thread;
	atomic_bool stop;
	/* Wakes the thread's sleeps (backoff, pacing) on stop. */
	pthread_cond_t wake;
	fb_producer *producer;     /* under base.lock; set once */
	_Atomic uint64_t alive_ns; /* the thread's last sign of life */
	uint64_t interrupted_ns;   /* main thread: when it interrupted it, 0: not stuck */
	fb_subscriber *feed;       /* a derived stream's next parent ring; under base.lock */
	uint64_t resume_seq;       /* its ring numbers frames on from this one */

	/* The thread's own, for one opening of the source. */
	struct SwsContext *sws;
	bool paced;
	uint64_t pace_origin_ns;
	int64_t pace_origin_pts_ns;
	uint64_t frames;
	bool discontinuity;
	int in_width, in_height; /* the size the input's pictures last had */
	uint64_t next_due_ns;    /* a derived stream's rate limit: the next frame to take */
};

static struct decoded *decoded(struct fbd_stream *st)
{
	return (struct decoded *)st;
}

static fb_producer *producer(struct decoded *s)
{
	pthread_mutex_lock(&s->base.lock);
	fb_producer *p = s->producer;
	pthread_mutex_unlock(&s->base.lock);
	return p;
}

/* The thread is not stuck. */
static void alive(struct decoded *s)
{
	atomic_store_explicit(&s->alive_ns, fb_now_ns(), memory_order_relaxed);
}

/* With base.lock held: wait on wake until end (fb_now_ns()), a stop, or a
 * wake-up, for at most SLEEP_SLICE_NS, saying first that the thread is
 * alive. */
static void wait_slice(struct decoded *s, uint64_t end)
{
	uint64_t now = fb_now_ns();
	uint64_t t = end <= now ? now : end - now > SLEEP_SLICE_NS ? now + SLEEP_SLICE_NS : end;
	struct timespec until = {.tv_sec = (time_t)(t / 1000000000u),
				 .tv_nsec = (long)(t % 1000000000u)};
	alive(s);
	pthread_cond_clockwait(&s->wake, &s->base.lock, CLOCK_MONOTONIC, &until);
}

/* Sleep up to ns, or less if the stream is stopping.  Returns false if it
 * is stopping. */
static bool sleep_unless_stopped(struct decoded *s, uint64_t ns)
{
	uint64_t end = fb_now_ns() + ns;

	pthread_mutex_lock(&s->base.lock);
	while (!atomic_load(&s->stop) && fb_now_ns() < end)
		wait_slice(s, end);
	pthread_mutex_unlock(&s->base.lock);
	alive(s);
	return !atomic_load(&s->stop);
}

/* The ring, for width x height unless the configuration sets its size;
 * made once. */
static int make_ring(struct decoded *s, uint32_t width, uint32_t height)
{
	const struct fbd_stream_config *cfg = s->config;
	struct fb_ring_params params = {
	    .width = cfg->width ? cfg->width : width,
	    .height = cfg->height ? cfg->height : height,
	    .format = cfg->format,
	    .slots = cfg->slots,
	    .policy = cfg->policy,
	    .meta_max = cfg->meta_max,
	};
	fb_producer *p;

	/* A source's own size may be odd; the subsampled formats need even
	 * sizes (yuyv422 an even width), so round down. */
	bool half_height = cfg->format == FB_FORMAT_NV12 || cfg->format == FB_FORMAT_YUV420P;
	if (half_height || cfg->format == FB_FORMAT_YUYV422)
		params.width &= ~1u;
	if (half_height)
		params.height &= ~1u;
	/* Made without the lock: allocating a large ring takes a while, and the
	 * main thread takes the lock for status and subscriptions.  Only one
	 * thread ever makes a stream's ring (this one, or start-up before it
	 * exists). */
	int r = fb_producer_new(&params, &p);
	if (r == 0 && (r = fb__producer_continue(p, s->resume_seq)) < 0)
		fb_producer_free(p);
	if (r < 0)
		return r;
	fb__producer_set_name(p, cfg->name);
	pthread_mutex_lock(&s->base.lock);
	s->producer = p;
	s->base.params = params;
	pthread_mutex_unlock(&s->base.lock);
	char from[96] = "";
	if (s->resume_seq)
		snprintf(from, sizeof(from),
			 "; frames numbered on after %llu, the last daemon's last",
			 (unsigned long long)s->resume_seq);
	fbd_log_about(LOG_INFO, cfg->name, NULL,
		      "stream %s: ring of %u x %ux%u %s (%s), %u bytes of side data per frame%s",
		      cfg->name, params.slots, params.width, params.height,
		      fb_format_name(params.format),
		      params.policy == FB_POLICY_BLOCK ? "block" : "drop", params.meta_max, from);
	return 0;
}

/* Sleep until the picture is due, at the input's own rate. */
static void pace(struct decoded *s, int64_t pts_ns)
{
	if (pts_ns == INT64_MIN)
		return;
	if (s->frames == 0 || pts_ns < s->pace_origin_pts_ns) {
		s->pace_origin_pts_ns = pts_ns;
		s->pace_origin_ns = fb_now_ns();
		return;
	}
	uint64_t due = s->pace_origin_ns + (uint64_t)(pts_ns - s->pace_origin_pts_ns);
	uint64_t now = fb_now_ns();
	if (due > now)
		sleep_unless_stopped(s, due - now);
}

/* libswscale's flag for each enum fbd_scale. */
static const int sws_method[] = {
    [FBD_SCALE_BILINEAR] = SWS_BILINEAR,
    [FBD_SCALE_FAST_BILINEAR] = SWS_FAST_BILINEAR,
    [FBD_SCALE_AREA] = SWS_AREA,
    [FBD_SCALE_BICUBIC] = SWS_BICUBIC,
};

/* A picture from another host's framebus-output: its frame there becomes
 * the first hop (its publish time mapped onto this host's monotonic clock
 * as source.c mapped the capture), source_seq its seq, and its meta this
 * frame's (cut to meta_max). */
static void restore_origin(struct fb_frame *out, const struct fbd_picture *pic, uint32_t meta_max)
{
	const struct fbd_identity *o = &pic->origin;
	struct fb_hop *hop = &out->trace->hops[0];
	snprintf(hop->stream, sizeof(hop->stream), "%s", o->stream);
	hop->seq = o->seq;
	hop->publish_ns = 0;
	if (o->publish_realtime_ns && pic->capture_realtime_ns && o->capture_realtime_ns) {
		int64_t after = (int64_t)(o->publish_realtime_ns - o->capture_realtime_ns);
		hop->publish_ns = (uint64_t)((int64_t)pic->capture_ns + after);
	}
	out->trace->n_hops = 1;
	out->source_seq = o->seq;
	out->meta_size = o->meta_size < meta_max ? o->meta_size : meta_max;
	memcpy(out->meta, o->meta, out->meta_size);
}

/* Convert one picture into a slot and publish it. */
static int deliver(struct decoded *s, const struct fbd_picture *pic, char *why, size_t size)
{
	const AVFrame *in = pic->frame;
	const struct fbd_stream_config *cfg = s->config;
	struct fb_frame *out;
	int r;

	alive(s);
	if (in->width <= 0 || in->height <= 0) {
		snprintf(why, size, "the decoder produced an empty picture");
		return -EINVAL;
	}
	if (!producer(s) && (r = make_ring(s, (uint32_t)in->width, (uint32_t)in->height)) < 0) {
		snprintf(why, size, "cannot create the ring: %s", fb_strerror(r));
		return r;
	}
	fb_producer *p = s->producer; /* this thread is the only one that sets it */
	const struct fb_layout *l = fb_producer_get_layout(p);
	/* A ring keeps its geometry (subscribers map it): a source that
	 * changes size mid-way is scaled to it, and says so. */
	if (s->frames && (in->width != s->in_width || in->height != s->in_height)) {
		fbd_log_about(LOG_WARNING, cfg->name, NULL,
			      "stream %s: the input changed size from %dx%d to %dx%d; its frames "
			      "are scaled to the ring's %ux%u",
			      cfg->name, s->in_width, s->in_height, in->width, in->height, l->width,
			      l->height);
		s->discontinuity = true;
	}
	s->in_width = in->width;
	s->in_height = in->height;
	s->sws = sws_getCachedContext(s->sws, in->width, in->height, in->format, (int)l->width,
				      (int)l->height, fb_av_pixel_format(l->format),
				      sws_method[cfg->scale], NULL, NULL, NULL);
	if (!s->sws) {
		snprintf(why, size, "libswscale cannot convert %s %dx%d to %s",
			 av_get_pix_fmt_name(in->format), in->width, in->height,
			 fb_format_name(l->format));
		return -EINVAL;
	}
	if (s->paced)
		pace(s, pic->pts_ns);
	if (atomic_load(&s->stop))
		return 0;

	do {
		alive(s);
		r = fb_producer_acquire(p, cfg->policy == FB_POLICY_BLOCK ? ACQUIRE_SLICE_MS : 0,
					&out);
	} while (r == -ETIMEDOUT && !atomic_load(&s->stop));
	if (r == -ENOBUFS || r == -ETIMEDOUT)
		return 0; /* dropped (counted by the ring), or stopping */
	if (r < 0) {
		snprintf(why, size, "cannot take a slot: %s", fb_strerror(r));
		return r;
	}
	/* Whole-factor shrinks of packed RGB (a derived stream's usual case)
	 * average blocks here; bicubic, as asked, stays libswscale's. */
	if (cfg->scale == FBD_SCALE_BICUBIC || !fbd_shrink(in, out, l)) {
		int dst_stride[4] = {0};
		for (int i = 0; i < 4; i++)
			dst_stride[i] = (int)out->stride[i];
		sws_scale(s->sws, (const uint8_t *const *)in->data, in->linesize, 0, in->height,
			  out->data, dst_stride);
	}
	out->pts = pic->pts;
	if (pic->parent) {
		fb_frame_made_from(out, pic->parent);
	} else { /* the rest of the trace starts empty at every acquire */
		struct fb_trace *t = out->trace;
		t->capture_ns = pic->capture_ns;
		t->capture_realtime_ns = pic->capture_realtime_ns;
		t->decode_ns = pic->decode_ns;
		t->time_base_num = pic->time_base_num;
		t->time_base_den = pic->time_base_den;
		if (pic->has_origin)
			restore_origin(out, pic, cfg->meta_max);
	}
	out->flags = (in->key_frame ? FB_FRAME_KEYFRAME : 0) |
		     (s->discontinuity ? FB_FRAME_DISCONTINUITY : 0);
	r = fb_producer_publish(p, out);
	if (r < 0) {
		snprintf(why, size, "cannot publish: %s", fb_strerror(r));
		return r;
	}
	if (s->frames++ == 0)
		fbd_stream_set_state(&s->base, FB_STREAM_RUNNING, NULL);
	s->discontinuity = false;
	return 0;
}

/* Whether an input that ends is opened again (on_end). */
static bool retries_at_end(const struct fbd_stream_config *cfg)
{
	return cfg->on_end == FBD_ON_END_RETRY ||
	       (cfg->on_end == FBD_ON_END_AUTO && fbd_stream_config_live(cfg));
}

/* Open the source and deliver its pictures until it ends (0) or fails
 * (-errno, with the reason in why): -ENOTSUP if this FFmpeg cannot decode
 * its video. */
static int run_source(struct decoded *s, char *why, size_t size)
{
	struct fbd_source *src;
	struct fbd_picture pic;
	int r;

	s->paced = s->config->pacing == FBD_PACING_NATIVE ||
		   (s->config->pacing == FBD_PACING_AUTO && !fbd_stream_config_live(s->config));
	s->frames = 0;
	s->discontinuity = true;
	r = fbd_source_open(s->config, &s->stop, &s->alive_ns, &src, why, size);
	if (r < 0)
		return r;
	while (!atomic_load(&s->stop) && (r = fbd_source_next(src, &pic, why, size)) == 0)
		r = deliver(s, &pic, why, size);
	fbd_source_close(src);
	sws_freeContext(s->sws);
	s->sws = NULL;
	return r < 0 ? r : 0;
}

/* A derived stream's next parent ring, once the main thread hands it one;
 * NULL if the stream stops first. */
static fb_subscriber *take_feed(struct decoded *s)
{
	pthread_mutex_lock(&s->base.lock);
	while (!s->feed && !atomic_load(&s->stop))
		wait_slice(s, UINT64_MAX);
	fb_subscriber *sub = s->feed;
	s->feed = NULL;
	pthread_mutex_unlock(&s->base.lock);
	return sub;
}

/* Whether a parent frame published at t is the next one to take: fps picks
 * frames evenly (the one nearest each due time, never a burst to catch
 * up). */
static bool due(struct decoded *s, uint64_t t)
{
	if (!s->config->fps_milli)
		return true;
	uint64_t interval = 1000000000000ull / s->config->fps_milli;
	if (s->next_due_ns && t + interval / 10 < s->next_due_ns)
		return false;
	s->next_due_ns = s->next_due_ns && t < s->next_due_ns + interval ? s->next_due_ns + interval
									 : t + interval;
	return true;
}

/* Point in at the part of parent frame f that cfg crops (all of it if
 * none).  False, with why, if the crop does not fit the parent's layout. */
static bool crop_parent(const struct fbd_stream_config *cfg, const struct fb_layout *l,
			const struct fb_frame *f, AVFrame *in, char *why, size_t size)
{
	const uint32_t *c = cfg->crop;
	const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(in->format);
	int step[4];

	if (!c[2])
		return true;
	if (c[0] >= l->width || c[1] >= l->height || c[2] > l->width - c[0] ||
	    c[3] > l->height - c[1] ||
	    ((desc->log2_chroma_w || desc->log2_chroma_h) && (c[0] % 2 || c[1] % 2))) {
		snprintf(why, size, "crop %u,%u,%u,%u does not fit its parent's %ux%u %s%s", c[0],
			 c[1], c[2], c[3], l->width, l->height, fb_format_name(l->format),
			 desc->log2_chroma_w ? " (x and y must be even)" : "");
		return false;
	}
	av_image_fill_max_pixsteps(step, NULL, desc);
	for (uint32_t i = 0; i < l->n_planes; i++) {
		bool chroma = i == 1 || i == 2;
		uint32_t x = chroma ? c[0] >> desc->log2_chroma_w : c[0];
		uint32_t y = chroma ? c[1] >> desc->log2_chroma_h : c[1];
		in->data[i] = f->data[i] + (size_t)y * f->stride[i] + (size_t)x * (size_t)step[i];
	}
	in->width = (int)c[2];
	in->height = (int)c[3];
	return true;
}

/* The end of its input: subscribers read what is left, then get -EPIPE. */
static void end_stream(struct decoded *s, const char *why)
{
	fbd_stream_set_state(&s->base, FB_STREAM_ENDED, why);
	fb_producer *p = producer(s);
	if (p)
		fb_producer_end(p);
}

/* A derived stream: scale its parent's frames into its own ring until that
 * ring goes (a reload replaced it, the daemon is stopping: then wait for the
 * next) or ends (its input ended: then so does this stream).  Returns
 * whether it ended. */
static bool follow_parent(struct decoded *s)
{
	char why[FB__ERROR_TEXT_MAX] = "";
	fb_subscriber *sub = take_feed(s);
	int r = 0;

	if (!sub)
		return false;
	s->frames = 0;
	s->discontinuity = true;
	s->paced = false;
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	while (!atomic_load(&s->stop) && r >= 0) {
		const struct fb_frame *f;
		alive(s);
		r = fb_subscriber_acquire(sub, ACQUIRE_SLICE_MS, &f);
		if (r == -ETIMEDOUT || r == -EINTR) {
			r = 0;
			continue;
		}
		if (r < 0 || !due(s, f->monotonic_ns)) {
			if (r == 0)
				fb_subscriber_release(sub, f);
			continue;
		}
		AVFrame in = {.width = (int)l->width,
			      .height = (int)l->height,
			      .format = fb_av_pixel_format(l->format),
			      .key_frame = !!(f->flags & FB_FRAME_KEYFRAME)};
		for (uint32_t i = 0; i < l->n_planes; i++) {
			in.data[i] = f->data[i];
			in.linesize[i] = (int)f->stride[i];
		}
		s->discontinuity |= !!(f->flags & FB_FRAME_DISCONTINUITY);
		struct fbd_picture pic = {
		    .frame = &in, .pts = f->pts, .pts_ns = INT64_MIN, .parent = f};
		if (crop_parent(s->config, l, f, &in, why, sizeof(why)))
			r = deliver(s, &pic, why, sizeof(why));
		else
			r = -EINVAL;
		fb_subscriber_release(sub, f);
	}
	fb_subscriber_free(sub);
	sws_freeContext(s->sws);
	s->sws = NULL;
	if (atomic_load(&s->stop))
		return false;
	if (r == -EPIPE) {
		snprintf(why, sizeof(why), "its parent '%s' ended", s->config->from);
		fbd_log_about(LOG_INFO, s->config->name, NULL, "stream %s: %s", s->config->name,
			      why);
		end_stream(s, why);
		return true;
	}
	if (!why[0])
		snprintf(why, sizeof(why), "waiting for its parent '%s' (its ring ended or went)",
			 s->config->from);
	fbd_log_about(LOG_WARNING, s->config->name, NULL, "stream %s: %s", s->config->name, why);
	fbd_stream_set_state(&s->base, FB_STREAM_RETRYING, why);
	return false;
}

void fbd_decoded_feed(struct fbd_stream *st, fb_subscriber *parent)
{
	struct decoded *s = decoded(st);
	pthread_mutex_lock(&st->lock);
	fb_subscriber_free(s->feed); /* one it never took: its ring is gone by now */
	s->feed = parent;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&st->lock);
}

static void *stream_thread(void *arg)
{
	struct decoded *s = arg;
	const struct fbd_stream_config *cfg = s->config;
	uint64_t backoff = cfg->retry_min_ns;
	char why[FB__ERROR_TEXT_MAX];

	while (!atomic_load(&s->stop)) {
		alive(s);
		if (cfg->from && follow_parent(s))
			break;
		if (cfg->from)
			continue;
		uint64_t started = fb_now_ns();
		why[0] = '\0';
		int r = run_source(s, why, sizeof(why));
		if (atomic_load(&s->stop))
			break;
		if (r == 0 && cfg->loop)
			continue; /* open it again from the start */
		if (r == 0 && !retries_at_end(cfg)) {
			fbd_log_about(LOG_INFO, cfg->name, NULL, "stream %s: end of %s", cfg->name,
				      cfg->url);
			end_stream(s, "end of input");
			break;
		}
		if (r == 0) /* a camera that rebooted, a server that went away */
			snprintf(why, sizeof(why),
				 "the input ended (the camera or server closed it)");
		/* A source that ran for a while before failing starts over from
		 * the shortest wait. */
		if (fb_now_ns() - started > cfg->retry_max_ns)
			backoff = cfg->retry_min_ns;
		/* An input this FFmpeg cannot decode stays so until someone
		 * changes it: try it again only every retry_max. */
		if (r == -ENOTSUP)
			backoff = cfg->retry_max_ns;
		fbd_log_about(LOG_WARNING, cfg->name, NULL, "stream %s: %s; retrying in %.1f s",
			      cfg->name, why, backoff / 1e9);
		fbd_stream_set_state(&s->base, FB_STREAM_RETRYING, why);
		if (!sleep_unless_stopped(s, backoff))
			break;
		backoff = backoff * 2 > cfg->retry_max_ns ? cfg->retry_max_ns : backoff * 2;
	}
	return NULL;
}

static int decoded_subscribe(struct fbd_stream *st, uint32_t mode, uint32_t max_holds,
			     struct fb_subscriber_fds *ret_fds, uint32_t *ret_ring_id)
{
	fb_producer *p = producer(decoded(st));
	return p ? fb_producer_add_subscriber(p, mode, max_holds, ret_fds, ret_ring_id) : -EAGAIN;
}

static void decoded_unsubscribe(struct fbd_stream *st, uint32_t ring_id)
{
	fb_producer *p = producer(decoded(st));
	if (p)
		fb_producer_remove_subscriber(p, ring_id);
}

static int decoded_unwait(struct fbd_stream *st, uint32_t ring_id)
{
	fb_producer *p = producer(decoded(st));
	return p ? fb__producer_unwait_subscriber(p, ring_id) : -ENOENT;
}

static int decoded_subscriber_sample(struct fbd_stream *st, uint32_t ring_id,
				     struct fb__subscriber_sample *ret_sample)
{
	fb_producer *p = producer(decoded(st));
	return p ? fb__producer_get_subscriber_sample(p, ring_id, ret_sample) : -ENOENT;
}

static void decoded_counters(struct fbd_stream *st, struct fbd_counters *ret_counters)
{
	fb_producer *p = producer(decoded(st));
	*ret_counters = (struct fbd_counters){0};
	if (!p)
		return;
	fb_producer_get_stats(p, &ret_counters->ring);
	fb__producer_get_latest_times(p, &ret_counters->latest_capture_ns,
				      &ret_counters->latest_publish_ns);
}

static uint64_t decoded_last_seq(struct fbd_stream *st)
{
	fb_producer *p = producer(decoded(st));
	return p ? fb__producer_get_last_seq(p) : 0;
}

static uint64_t stuck_after(const struct fbd_stream_config *cfg)
{
	return 2 * cfg->stall_timeout_ns > STUCK_MIN_NS ? 2 * cfg->stall_timeout_ns : STUCK_MIN_NS;
}

static bool decoded_wedged(struct fbd_stream *st, uint64_t now)
{
	struct decoded *s = decoded(st);
	uint64_t last = atomic_load_explicit(&s->alive_ns, memory_order_relaxed);
	uint64_t limit = stuck_after(s->config);
	char why[FB__ERROR_TEXT_MAX];

	if (now < last || now - last < limit) {
		s->interrupted_ns = 0;
		return false;
	}
	if (s->interrupted_ns && now - s->interrupted_ns < limit)
		return false;
	if (s->interrupted_ns) {
		fbd_log_about(LOG_ERR, st->name, NULL,
			      "stream %s: its thread is still stuck after it was interrupted",
			      st->name);
		return true;
	}
	snprintf(why, sizeof(why), "its source is stuck: no sign of life for %.1f s",
		 (double)(now - last) / 1e9);
	fbd_log_about(LOG_WARNING, st->name, NULL, "stream %s: %s; interrupting what it waits for",
		      st->name, why);
	fbd_stream_set_state(st, FB_STREAM_RETRYING, why);
	s->interrupted_ns = now;
	pthread_kill(s->thread, INTERRUPT_SIGNAL);
	return false;
}

/* Stop the thread: tell it, wake its sleeps, interrupt its system calls
 * until it ends; false if it did not within STOP_TIMEOUT_NS. */
static bool stop_thread(struct decoded *s)
{
	pthread_mutex_lock(&s->base.lock);
	atomic_store(&s->stop, true);
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->base.lock);
	for (uint64_t end = fb_now_ns() + STOP_TIMEOUT_NS; fb_now_ns() < end;) {
		struct timespec t;
		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_nsec += 100000000;
		if (t.tv_nsec >= 1000000000) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000;
		}
		if (pthread_timedjoin_np(s->thread, NULL, &t) == 0)
			return true;
		pthread_kill(s->thread, INTERRUPT_SIGNAL);
	}
	return false;
}

static void decoded_free(struct fbd_stream *st, bool end)
{
	struct decoded *s = decoded(st);

	if (!stop_thread(s)) {
		/* It may still use all of it: leave it be (the daemon is
		 * stopping, or one stuck stream costs its memory). */
		fbd_log_about(LOG_ERR, st->name, NULL,
			      "stream %s: its thread did not stop in %u s; leaving it behind",
			      st->name, (unsigned)(STOP_TIMEOUT_NS / 1000000000u));
		return;
	}
	fb_subscriber_free(s->feed);
	if (end)
		fb_producer_free(s->producer);
	else
		fb__producer_abandon(s->producer);
	pthread_cond_destroy(&s->wake);
	fbd_stream_config_free(s->config);
	fbd_stream_cleanup(st);
	free(s);
}

static const struct fbd_stream_ops decoded_ops = {
    .subscribe = decoded_subscribe,
    .unsubscribe = decoded_unsubscribe,
    .unwait = decoded_unwait,
    .subscriber_sample = decoded_subscriber_sample,
    .counters = decoded_counters,
    .wedged = decoded_wedged,
    .last_seq = decoded_last_seq,
    .free = decoded_free,
};

static void ignore(int signum)
{
	(void)signum;
}

int fbd_decoded_start(const struct fbd_stream_config *config, uint64_t last_seq,
		      struct fbd_stream **ret_stream)
{
	/* Without SA_RESTART: the system call it interrupts fails with EINTR. */
	static const struct sigaction interrupt = {.sa_handler = ignore};
	sigaction(INTERRUPT_SIGNAL, &interrupt, NULL);

	struct decoded *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;
	int r;

	if (!s)
		return -ENOMEM;
	s->config = fbd_stream_config_dup(config);
	if (!s->config) {
		free(s);
		return -ENOMEM;
	}
	s->resume_seq = last_seq;
	struct fb_ring_params params = {
	    .format = config->format,
	    .slots = config->slots,
	    .policy = config->policy,
	    .meta_max = config->meta_max,
	};
	fbd_stream_init(&s->base, &decoded_ops, config->name, &params);
	s->base.config = s->config;
	if (config->from)
		snprintf(s->base.source, sizeof(s->base.source), "from:%s", config->from);
	else
		snprintf(s->base.source, sizeof(s->base.source), "%s%s%s",
			 config->input_format ? config->input_format : "",
			 config->input_format ? ":" : "", config->url);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &ca);
	pthread_condattr_destroy(&ca);

	/* A configured geometry makes the ring now, so clients can subscribe
	 * before the source delivers its first frame. */
	alive(s);
	r = config->width ? make_ring(s, config->width, config->height) : 0;
	if (r == 0)
		r = -pthread_create(&s->thread, NULL, stream_thread, s);
	if (r < 0) {
		fb_producer_free(s->producer);
		pthread_cond_destroy(&s->wake);
		fbd_stream_config_free(s->config);
		fbd_stream_cleanup(&s->base);
		free(s);
		return r;
	}
	*ret_stream = &s->base;
	return 0;
}
