/* SPDX-License-Identifier: MIT */
/* The stream back-end for a configured source: a thread of its own pulls
 * pictures from the source (source.c), paces them, makes the ring once the
 * size is known, converts each picture straight into a slot with libswscale
 * (no intermediate frame), publishes it, and keeps the stream's state,
 * opening the source again with backoff when it fails.  A derived stream
 * (from = PARENT) pulls its pictures from its parent's ring instead: one
 * decode, many sizes, formats and rates.  When that parent decodes a source
 * itself, the derived stream scales from the decoder's picture (a reference
 * its parent's thread leaves it, struct pictures) rather than from the
 * parent's converted frame: half the bytes to read for a yuv420p camera
 * and a bgr24 ring. */
#define _GNU_SOURCE
#include <errno.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
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

/* The newest pictures a stream decoded, for the streams derived from it:
 * its thread leaves a reference to each (no copy) just before publishing
 * the frame made from it; theirs take the one their parent frame names.
 * Two deep: a derived stream that takes the newest frame of the ring while
 * its parent is between leaving the next picture and publishing it still
 * finds its own.  Shared by the stream and each derived stream reading it
 * (refs), and freed with the last. */
struct pictures {
	pthread_mutex_t lock;
	atomic_uint refs;
	atomic_uint readers; /* derived streams taking from it: pictures are left only then */
	uint64_t seq[2];     /* the parent frame each was converted into; 0: none */
	AVFrame *frame[2];
	uint32_t newest;
};

struct decoded {
	struct fbd_stream base;
	struct fbd_stream_config *config;
	pthread_t thread;
	atomic_bool stop;
	/* Wakes the thread's sleeps (backoff, pacing) on stop. */
	pthread_cond_t wake;
	fb_producer *producer;          /* under base.lock; set once */
	_Atomic uint64_t alive_ns;      /* the thread's last sign of life */
	uint64_t interrupted_ns;        /* main thread: when it interrupted it, 0: not stuck */
	fb_subscriber *feed;            /* a derived stream's next parent ring; under base.lock */
	struct pictures *feed_pictures; /* and its parent's pictures, if it decodes; the same */
	uint64_t resume_seq;            /* its ring numbers frames on from this one */
	/* A stream that decodes: what it leaves for its derived streams. */
	struct pictures *pictures;
	/* A derived stream: parent frames it passed over, because it was
	 * still busy with an earlier one (the gaps in their seq) or by its fps
	 * limit. */
	_Atomic uint64_t skipped_busy, skipped_rate;

	/* The thread's own, for one opening of the source. */
	struct SwsContext *sws;
	int sws_width, sws_height, sws_format; /* the pictures it was made for */
	AVFrame *sws_in, *sws_out;             /* sws_scale_frame()'s, with scale_threads */
	/* The pictures the log last said how they are converted, and how. */
	int told_width, told_height, told_format, told_shrunk;
	/* Why FFmpeg reads the input, as the log last said it (source.c's; "":
	 * framebusd's RTSP client reads it, or nothing said yet). */
	char told_fallback[FB__ERROR_TEXT_MAX];
	bool paced;
	uint64_t pace_origin_ns;
	int64_t pace_origin_pts_ns;
	uint64_t frames;
	bool discontinuity;
	int in_width, in_height; /* the size the input's pictures last had */
	uint64_t next_due_ns;    /* a derived stream's rate limit: the next frame to take */
	uint64_t parent_seq;     /* the last parent frame it saw; 0: none yet */
};

static const struct fbd_stream_ops decoded_ops;

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

static struct pictures *pictures_new(void)
{
	struct pictures *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->frame[0] = av_frame_alloc();
	p->frame[1] = av_frame_alloc();
	if (!p->frame[0] || !p->frame[1]) {
		av_frame_free(&p->frame[0]);
		av_frame_free(&p->frame[1]);
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	atomic_init(&p->refs, 1);
	return p;
}

static void pictures_unref(struct pictures *p)
{
	if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
		return;
	av_frame_free(&p->frame[0]);
	av_frame_free(&p->frame[1]);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* A derived stream stops reading p: the last one to go lets the decoder
 * have its pictures back. */
static void pictures_leave(struct pictures *p)
{
	if (!p)
		return;
	if (atomic_fetch_sub(&p->readers, 1) == 1) {
		pthread_mutex_lock(&p->lock);
		for (int i = 0; i < 2; i++) {
			av_frame_unref(p->frame[i]);
			p->seq[i] = 0;
		}
		pthread_mutex_unlock(&p->lock);
	}
	pictures_unref(p);
}

/* The stream's thread: picture in is the one its next frame, seq, is made
 * from. */
static void pictures_put(struct pictures *p, uint64_t seq, const AVFrame *in)
{
	pthread_mutex_lock(&p->lock);
	uint32_t i = p->newest ^ 1;
	av_frame_unref(p->frame[i]);
	p->seq[i] = av_frame_ref(p->frame[i], in) == 0 ? seq : 0;
	p->newest = i;
	pthread_mutex_unlock(&p->lock);
}

/* A derived stream's thread: a reference of its own to the picture parent
 * frame seq was made from, or NULL (gone already, or never left). */
static AVFrame *pictures_take(struct pictures *p, uint64_t seq)
{
	AVFrame *f = NULL;
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < 2 && !f; i++)
		if (p->seq[i] == seq)
			f = av_frame_clone(p->frame[i]);
	pthread_mutex_unlock(&p->lock);
	return f;
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

static void borrowed(void *opaque, uint8_t *data)
{
	(void)opaque;
	(void)data;
}

/* f, emptied, as a picture over planes it does not own (for
 * sws_scale_frame(), which takes references). */
static int borrow(AVFrame *f, int width, int height, int format, uint8_t *const data[4],
		  const int linesize[4])
{
	av_frame_unref(f);
	f->width = width;
	f->height = height;
	f->format = format;
	for (int i = 0; i < 4; i++) {
		f->data[i] = data[i];
		f->linesize[i] = linesize[i];
	}
	f->buf[0] = av_buffer_create(data[0], 1, borrowed, NULL, 0);
	return f->buf[0] ? 0 : -ENOMEM;
}

/* libswscale's context for pictures like in to the ring, with the stream's
 * method and threads; made again only when their size or format changes (a
 * source that changes size, a derived stream between its parent's
 * picture and its frame). */
static struct SwsContext *scaler(struct decoded *s, const AVFrame *in, const struct fb_layout *l)
{
	struct SwsContext *c = s->sws;
	if (c && s->sws_width == in->width && s->sws_height == in->height &&
	    s->sws_format == in->format)
		return c;
	sws_freeContext(c);
	s->sws = c = sws_alloc_context();
	if (!c)
		return NULL;
	av_opt_set_int(c, "srcw", in->width, 0);
	av_opt_set_int(c, "srch", in->height, 0);
	av_opt_set_int(c, "src_format", in->format, 0);
	av_opt_set_int(c, "dstw", l->width, 0);
	av_opt_set_int(c, "dsth", l->height, 0);
	av_opt_set_int(c, "dst_format", fb_av_pixel_format(l->format), 0);
	av_opt_set_int(c, "sws_flags", sws_method[s->config->scale], 0);
	av_opt_set_int(c, "threads", s->config->scale_threads, 0);
	if (sws_init_context(c, NULL, NULL) < 0) {
		sws_freeContext(c);
		s->sws = NULL;
		return NULL;
	}
	s->sws_width = in->width;
	s->sws_height = in->height;
	s->sws_format = in->format;
	return c;
}

/* Say how pictures like in become the stream's frames, once (not again at
 * each loop of a file): by whole factors (shrink.c, in this thread) or by
 * libswscale, with its method and scale_threads. */
static void tell_conversion(struct decoded *s, const AVFrame *in, const struct fb_layout *l,
			    bool shrunk)
{
	const struct fbd_stream_config *cfg = s->config;
	if (s->told_width == in->width && s->told_height == in->height &&
	    s->told_format == in->format && s->told_shrunk == shrunk)
		return;
	s->told_width = in->width;
	s->told_height = in->height;
	s->told_format = in->format;
	s->told_shrunk = shrunk;
	char how[96];
	if (shrunk)
		snprintf(how, sizeof(how), "shrunk by whole factors (shrink.c, its own thread)");
	else
		snprintf(how, sizeof(how), "with libswscale (%s, scale_threads %u)",
			 fbd_scale_name(cfg->scale), cfg->scale_threads);
	fbd_log_about(LOG_INFO, cfg->name, NULL, "stream %s: %dx%d %s to %ux%u %s %s", cfg->name,
		      in->width, in->height, av_get_pix_fmt_name(in->format), l->width, l->height,
		      fb_format_name(l->format), how);
}

/* libswscale converts in into slot out: in this thread, or with
 * scale_threads in sws_scale_frame()'s. */
static void scale(struct decoded *s, const AVFrame *in, struct fb_frame *out,
		  const struct fb_layout *l)
{
	int stride[4] = {0};
	for (int i = 0; i < 4; i++)
		stride[i] = (int)out->stride[i];
	if (s->config->scale_threads != 1 && (s->sws_in || (s->sws_in = av_frame_alloc())) &&
	    (s->sws_out || (s->sws_out = av_frame_alloc())) &&
	    borrow(s->sws_in, in->width, in->height, in->format, in->data, in->linesize) == 0 &&
	    borrow(s->sws_out, (int)l->width, (int)l->height, fb_av_pixel_format(l->format),
		   out->data, stride) == 0 &&
	    sws_scale_frame(s->sws, s->sws_out, s->sws_in) >= 0) {
		av_frame_unref(s->sws_in);
		av_frame_unref(s->sws_out);
		return;
	}
	sws_scale(s->sws, (const uint8_t *const *)in->data, in->linesize, 0, in->height, out->data,
		  stride);
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
	if (!scaler(s, in, l)) {
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
	const bool shrunk = cfg->scale != FBD_SCALE_BICUBIC && fbd_shrink(in, out, l);
	if (!shrunk)
		scale(s, in, out, l);
	tell_conversion(s, in, l, shrunk);
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
	/* Its derived streams scale from the decoder's picture itself when
	 * the frame has all of it (the same size, colour kept). */
	if (!pic->parent && s->pictures &&
	    atomic_load_explicit(&s->pictures->readers, memory_order_relaxed) &&
	    in->width == (int)l->width && in->height == (int)l->height &&
	    l->format != FB_FORMAT_GRAY8 && l->format != FB_FORMAT_GRAY16)
		pictures_put(s->pictures, fb__producer_get_last_seq(p) + 1, in);
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
 * its video, -EACCES if the camera refuses the URL's credentials. */
static int run_source(struct decoded *s, char *why, size_t size)
{
	struct fbd_source *src;
	struct fbd_picture pic;
	int r;

	s->paced = s->config->pacing == FBD_PACING_NATIVE ||
		   (s->config->pacing == FBD_PACING_AUTO && !fbd_stream_config_live(s->config));
	s->frames = 0;
	s->discontinuity = true;
	r = fbd_source_open(s->config, &s->stop, &s->alive_ns, s->told_fallback,
			    sizeof(s->told_fallback), &src, why, size);
	if (r < 0)
		return r;
	while (!atomic_load(&s->stop) && (r = fbd_source_next(src, &pic, why, size)) == 0)
		r = deliver(s, &pic, why, size);
	fbd_source_close(src);
	sws_freeContext(s->sws);
	s->sws = NULL;
	return r < 0 ? r : 0;
}

/* A derived stream's next parent ring (and its parent's pictures, if it
 * decodes), once the main thread hands it one; NULL if the stream stops
 * first. */
static fb_subscriber *take_feed(struct decoded *s, struct pictures **ret_pictures)
{
	pthread_mutex_lock(&s->base.lock);
	while (!s->feed && !atomic_load(&s->stop))
		wait_slice(s, UINT64_MAX);
	fb_subscriber *sub = s->feed;
	*ret_pictures = s->feed_pictures;
	s->feed = NULL;
	s->feed_pictures = NULL;
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

/* Point in, a whole picture of its parent's size, at the part c crops (x,
 * y, width, height; width 0: all of it).  False if the crop does not fit in
 * it or its format cannot start there (odd x or y of a subsampled
 * picture). */
static bool crop_picture(const uint32_t *c, AVFrame *in)
{
	const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(in->format);
	const uint32_t width = (uint32_t)in->width, height = (uint32_t)in->height;
	int offset[4] = {0}; /* bytes of each plane's row left of the crop */

	if (!c[2])
		return true;
	if (c[0] >= width || c[1] >= height || c[2] > width - c[0] || c[3] > height - c[1] ||
	    (desc->log2_chroma_w && c[0] % 2) || (desc->log2_chroma_h && c[1] % 2) ||
	    (c[0] && av_image_fill_linesizes(offset, in->format, (int)c[0]) < 0))
		return false;
	for (int i = 0; i < 4 && in->data[i]; i++) {
		bool chroma = (i == 1 || i == 2) && !(desc->flags & AV_PIX_FMT_FLAG_RGB);
		uint32_t y = chroma ? c[1] >> desc->log2_chroma_h : c[1];
		in->data[i] += (size_t)y * (size_t)in->linesize[i] + (size_t)offset[i];
	}
	in->width = (int)c[2];
	in->height = (int)c[3];
	return true;
}

/* Point in at the part of parent frame f that cfg crops (all of it if
 * none).  False, with why, if the crop does not fit the parent's layout. */
static bool crop_parent(const struct fbd_stream_config *cfg, const struct fb_layout *l,
			const struct fb_frame *f, AVFrame *in, char *why, size_t size)
{
	const uint32_t *c = cfg->crop;
	const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(in->format);

	for (uint32_t i = 0; i < l->n_planes; i++) {
		in->data[i] = f->data[i];
		in->linesize[i] = (int)f->stride[i];
	}
	if (!crop_picture(c, in)) {
		snprintf(why, size, "crop %u,%u,%u,%u does not fit its parent's %ux%u %s%s", c[0],
			 c[1], c[2], c[3], l->width, l->height, fb_format_name(l->format),
			 desc->log2_chroma_w ? " (x and y must be even)" : "");
		return false;
	}
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

/* Count the parent frames published since the last one it saw: while it
 * was busy with that one, it saw none of them. */
static void saw(struct decoded *s, uint64_t seq)
{
	if (s->parent_seq && seq > s->parent_seq + 1)
		atomic_fetch_add_explicit(&s->skipped_busy, seq - s->parent_seq - 1,
					  memory_order_relaxed);
	s->parent_seq = seq;
}

/* Scale parent frame f (ring layout l) into the stream's ring: from the
 * decoder's picture it was made from, when its parent left it and the crop
 * can start there, else from f itself. */
static int derive(struct decoded *s, const struct fb_layout *l, const struct fb_frame *f,
		  struct pictures *pictures, char *why, size_t size)
{
	AVFrame *picture = pictures ? pictures_take(pictures, f->seq) : NULL;
	AVFrame in = {.key_frame = !!(f->flags & FB_FRAME_KEYFRAME)};
	struct fbd_picture pic = {.frame = &in, .pts = f->pts, .pts_ns = INT64_MIN, .parent = f};
	int r;

	if (picture) {
		in.width = picture->width;
		in.height = picture->height;
		in.format = picture->format;
		memcpy(in.data, picture->data, sizeof(in.data));
		memcpy(in.linesize, picture->linesize, sizeof(in.linesize));
	}
	if (!picture || !crop_picture(s->config->crop, &in)) {
		in.width = (int)l->width;
		in.height = (int)l->height;
		in.format = fb_av_pixel_format(l->format);
		memset(in.data, 0, sizeof(in.data));
		r = crop_parent(s->config, l, f, &in, why, size) ? 0 : -EINVAL;
	} else {
		r = 0;
	}
	if (r == 0)
		r = deliver(s, &pic, why, size);
	av_frame_free(&picture);
	return r;
}

/* A derived stream: scale its parent's frames into its own ring until that
 * ring goes (a reload replaced it, the daemon is stopping: then wait for the
 * next) or ends (its input ended: then so does this stream).  Returns
 * whether it ended. */
static bool follow_parent(struct decoded *s)
{
	char why[FB__ERROR_TEXT_MAX] = "";
	struct pictures *pictures;
	fb_subscriber *sub = take_feed(s, &pictures);
	int r = 0;

	if (!sub)
		return false;
	s->frames = 0;
	s->discontinuity = true;
	s->paced = false;
	s->parent_seq = 0;
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	while (!atomic_load(&s->stop) && r >= 0) {
		const struct fb_frame *f;
		alive(s);
		r = fb_subscriber_acquire(sub, ACQUIRE_SLICE_MS, &f);
		if (r == -ETIMEDOUT || r == -EINTR) {
			r = 0;
			continue;
		}
		if (r < 0)
			continue;
		saw(s, f->seq);
		s->discontinuity |= !!(f->flags & FB_FRAME_DISCONTINUITY);
		if (due(s, f->monotonic_ns))
			r = derive(s, l, f, pictures, why, sizeof(why));
		else
			atomic_fetch_add_explicit(&s->skipped_rate, 1, memory_order_relaxed);
		fb_subscriber_release(sub, f);
	}
	fb_subscriber_free(sub);
	pictures_leave(pictures);
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

void fbd_decoded_feed(struct fbd_stream *st, fb_subscriber *parent, struct fbd_stream *from)
{
	struct decoded *s = decoded(st);
	struct pictures *pictures = from->ops == &decoded_ops ? decoded(from)->pictures : NULL;
	if (pictures) {
		atomic_fetch_add(&pictures->refs, 1);
		atomic_fetch_add(&pictures->readers, 1);
	}
	pthread_mutex_lock(&st->lock);
	fb_subscriber_free(s->feed); /* one it never took: its ring is gone by now */
	pictures_leave(s->feed_pictures);
	s->feed = parent;
	s->feed_pictures = pictures;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&st->lock);
}

static void *stream_thread(void *arg)
{
	struct decoded *s = arg;
	const struct fbd_stream_config *cfg = s->config;
	uint64_t backoff = cfg->retry_min_ns;
	char why[FB__ERROR_TEXT_MAX];

	/* Named after its stream, as far as the kernel keeps (15 bytes), for
	 * top -H, perf and /proc/PID/task/TID: a stream's CPU apart (the
	 * decoder threads it starts take the name too). */
	char name[16];
	snprintf(name, sizeof(name), "%.15s", cfg->name);
	pthread_setname_np(pthread_self(), name);
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
		/* An input this FFmpeg cannot decode, or a camera refusing the
		 * URL's user and password (-EACCES, as is a file this user may
		 * not read), stays so until someone changes it: try it again
		 * only every retry_max (many cameras lock the account for half
		 * an hour after 5-7 failed logins).  A reload with another url
		 * starts a new stream, which tries at once. */
		if (r == -ENOTSUP || r == -EACCES)
			backoff = cfg->retry_max_ns;
		fbd_log_about(LOG_WARNING, cfg->name, NULL, "stream %s: %s; retrying in %.1f s",
			      cfg->name, why, backoff / 1e9);
		size_t n = strlen(why);
		snprintf(why + n, sizeof(why) - n, " (next try in %.1f s)", backoff / 1e9);
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
	ret_counters->derived = decoded(st)->config->from != NULL;
	ret_counters->skipped_busy =
	    atomic_load_explicit(&decoded(st)->skipped_busy, memory_order_relaxed);
	ret_counters->skipped_rate =
	    atomic_load_explicit(&decoded(st)->skipped_rate, memory_order_relaxed);
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
	pictures_leave(s->feed_pictures);
	pictures_unref(s->pictures);
	av_frame_free(&s->sws_in);
	av_frame_free(&s->sws_out);
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
	if (r == 0 && !config->from && !(s->pictures = pictures_new()))
		r = -ENOMEM;
	if (r == 0)
		r = -pthread_create(&s->thread, NULL, stream_thread, s);
	if (r < 0) {
		pictures_unref(s->pictures);
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
