/* SPDX-License-Identifier: MIT */
/* One stream's source: FFmpeg demuxes and decodes it, libswscale converts
 * each picture straight into a ring slot (no intermediate frame). */
#define _GNU_SOURCE
#include <errno.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pixfmt.h"
#include "stream.h"

/* Consecutive undecodable packets after which the source counts as broken. */
#define MAX_DECODE_ERRORS 50
/* How long a block ring's acquire waits before checking for stop again. */
#define ACQUIRE_SLICE_MS 100

struct source {
	struct fbd_stream *st;
	const struct fbd_stream_config *cfg;
	AVFormatContext *fmt;
	AVCodecContext *dec;
	struct SwsContext *sws;
	AVPacket *pkt;
	AVFrame *frame;
	int video;
	bool paced;
	/* The stall timeout.  FFmpeg calls interrupted() from the source
	 * thread and from threads of its own (udp's receiver), hence atomics;
	 * only the source thread looks at the bytes read. */
	pthread_t thread;
	_Atomic uint64_t last_io_ns; /* when bytes last arrived, or the wait began */
	atomic_bool stalled;         /* FFmpeg was told to give up on the input */
	AVIOContext *watched;        /* the input's bytes, once it is open */
	int64_t watched_bytes;
	uint64_t pace_origin_ns;
	int64_t pace_origin_pts;
	uint64_t frames;
	bool discontinuity;
	int in_width, in_height; /* the size the input's pictures last had */
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* FFmpeg calls this during every blocking operation: stop on request, and
 * give up on an input that sent nothing for stall_timeout.  Bytes still
 * arriving are no stall, however long one call takes (probing a live input
 * reads it for seconds at its own rate). */
static int interrupted(void *opaque)
{
	struct source *s = opaque;
	uint64_t now = now_ns();

	if (atomic_load(&s->st->stop))
		return 1;
	if (pthread_equal(pthread_self(), s->thread) && s->watched &&
	    s->watched->bytes_read != s->watched_bytes) {
		s->watched_bytes = s->watched->bytes_read;
		atomic_store(&s->last_io_ns, now);
	}
	/* Another thread may have set it after this one read the clock. */
	uint64_t last = atomic_load(&s->last_io_ns);
	if (now < last || now - last <= s->cfg->stall_timeout_ns)
		return 0;
	/* An interrupted read leaves the input at an error or a false end:
	 * whatever FFmpeg returns from now on, this source is done. */
	atomic_store(&s->stalled, true);
	return 1;
}

static void describe(char *why, size_t size, const char *what, int averror)
{
	char text[AV_ERROR_MAX_STRING_SIZE] = "";
	av_strerror(averror, text, sizeof(text));
	snprintf(why, size, "%s: %s", what, text);
}

/* Why FFmpeg has no decoder for the input's video: a codec this build
 * lacks, or one FFmpeg does not know at all (named by its FourCC then). */
static void describe_codec(char *why, size_t size, AVFormatContext *fmt)
{
	int i = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
	const AVCodecParameters *par = fmt->streams[i < 0 ? 0 : i]->codecpar;
	const AVCodecDescriptor *desc = avcodec_descriptor_get(par->codec_id);

	if (desc)
		snprintf(why, size, "no decoder for its video codec %s (%s) in this FFmpeg",
			 desc->name, desc->long_name);
	else if (par->codec_tag)
		snprintf(why, size, "FFmpeg does not know its video codec (FourCC %s)",
			 av_fourcc2str(par->codec_tag));
	else
		snprintf(why, size, "FFmpeg does not know its video codec");
}

static bool is_live(const struct fbd_stream_config *cfg)
{
	if (cfg->input_format)
		return strcmp(cfg->input_format, "lavfi") != 0;
	return strstr(cfg->url, "://") && strncmp(cfg->url, "file://", 7) != 0;
}

static int open_input(struct source *s, char *why, size_t size)
{
	const AVInputFormat *ifmt = NULL;
	AVDictionary *opts = NULL;
	const AVCodec *codec = NULL;
	int r;

	if (s->cfg->input_format && !(ifmt = av_find_input_format(s->cfg->input_format))) {
		snprintf(why, size, "FFmpeg has no input format '%s'", s->cfg->input_format);
		return -EINVAL;
	}
	s->fmt = avformat_alloc_context();
	if (!s->fmt)
		return -ENOMEM;
	s->fmt->interrupt_callback = (AVIOInterruptCB){.callback = interrupted, .opaque = s};
	for (uint32_t i = 0; i < s->cfg->n_options; i++)
		av_dict_set(&opts, s->cfg->option_keys[i], s->cfg->option_values[i], 0);
	atomic_store(&s->last_io_ns, now_ns());
	r = avformat_open_input(&s->fmt, s->cfg->url, ifmt, &opts);
	if (r >= 0)
		s->watched = s->fmt->pb; /* none for inputs doing their own I/O (rtsp) */
	if (r >= 0 && av_dict_count(opts) > 0) {
		const AVDictionaryEntry *e = av_dict_get(opts, "", NULL, AV_DICT_IGNORE_SUFFIX);
		fbd_log_about(LOG_WARNING, s->cfg->name, NULL,
			      "stream %s: FFmpeg ignored option %s=%s", s->cfg->name, e->key,
			      e->value);
	}
	av_dict_free(&opts);
	if (r < 0) {
		describe(why, size, s->cfg->url, r);
		return r;
	}
	r = avformat_find_stream_info(s->fmt, NULL);
	if (r < 0) {
		describe(why, size, "cannot read stream information", r);
		return r;
	}
	if (atomic_load(&s->stalled))
		return AVERROR_EXIT; /* FFmpeg keeps what it found before */
	r = av_find_best_stream(s->fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
	if (r == AVERROR_DECODER_NOT_FOUND) {
		/* Not until the input changes: the caller waits long. */
		describe_codec(why, size, s->fmt);
		return -ENOTSUP;
	}
	if (r < 0) {
		snprintf(why, size, "no video stream in the input");
		return r;
	}
	s->video = r;
	s->dec = avcodec_alloc_context3(codec);
	if (!s->dec)
		return -ENOMEM;
	r = avcodec_parameters_to_context(s->dec, s->fmt->streams[s->video]->codecpar);
	if (r < 0) {
		describe(why, size, "bad codec parameters", r);
		return r;
	}
	s->dec->thread_count = (int)s->cfg->decoder_threads;
	r = avcodec_open2(s->dec, codec, NULL);
	if (r < 0) {
		describe(why, size, "cannot open the decoder", r);
		return r;
	}
	fbd_log_about(LOG_INFO, s->cfg->name, NULL, "stream %s: opened %s (%s %dx%d)", s->cfg->name,
		      s->cfg->url, codec->name, s->dec->width, s->dec->height);
	return 0;
}

static void pace(struct source *s, int64_t pts)
{
	AVRational tb = s->fmt->streams[s->video]->time_base;
	if (pts == AV_NOPTS_VALUE)
		return;
	if (s->frames == 0 || pts < s->pace_origin_pts) {
		s->pace_origin_pts = pts;
		s->pace_origin_ns = now_ns();
		return;
	}
	uint64_t due = s->pace_origin_ns + (uint64_t)av_rescale_q(pts - s->pace_origin_pts, tb,
								  (AVRational){1, 1000000000});
	uint64_t now = now_ns();
	if (due > now)
		fbd_stream_sleep(s->st, due - now);
}

/* Convert one decoded picture into a slot and publish it. */
static int deliver(struct source *s, char *why, size_t size)
{
	AVFrame *in = s->frame;
	fb_producer *p;
	struct fb_frame *out;
	int r;

	if (in->width <= 0 || in->height <= 0) {
		snprintf(why, size, "the decoder produced an empty picture");
		return -EINVAL;
	}
	r = fbd_stream_ring(s->st, (uint32_t)in->width, (uint32_t)in->height, &p);
	if (r < 0) {
		snprintf(why, size, "cannot create the ring: %s", fb_strerror(r));
		return r;
	}
	const struct fb_layout *l = fb_producer_get_layout(p);
	/* A ring keeps its geometry (subscribers map it): a source that
	 * changes size mid-way is scaled to it, and says so. */
	if (s->frames && (in->width != s->in_width || in->height != s->in_height)) {
		fbd_log_about(LOG_WARNING, s->cfg->name, NULL,
			      "stream %s: the input changed size from %dx%d to %dx%d; its frames "
			      "are scaled to the ring's %ux%u",
			      s->cfg->name, s->in_width, s->in_height, in->width, in->height,
			      l->width, l->height);
		s->discontinuity = true;
	}
	s->in_width = in->width;
	s->in_height = in->height;
	s->sws = sws_getCachedContext(s->sws, in->width, in->height, in->format, (int)l->width,
				      (int)l->height, fb_av_pixel_format(l->format), SWS_BILINEAR,
				      NULL, NULL, NULL);
	if (!s->sws) {
		snprintf(why, size, "libswscale cannot convert %s %dx%d to %s",
			 av_get_pix_fmt_name(in->format), in->width, in->height,
			 fb_format_name(l->format));
		return -EINVAL;
	}
	if (s->paced)
		pace(s, in->best_effort_timestamp);
	if (atomic_load(&s->st->stop))
		return 0;

	do
		r = fb_producer_acquire(p, s->cfg->policy == FB_POLICY_BLOCK ? ACQUIRE_SLICE_MS : 0,
					&out);
	while (r == -ETIMEDOUT && !atomic_load(&s->st->stop));
	if (r == -ENOBUFS || r == -ETIMEDOUT)
		return 0; /* dropped (counted by the ring), or stopping */
	if (r < 0) {
		snprintf(why, size, "cannot take a slot: %s", fb_strerror(r));
		return r;
	}
	int dst_stride[4] = {0};
	for (int i = 0; i < 4; i++)
		dst_stride[i] = (int)out->stride[i];
	sws_scale(s->sws, (const uint8_t *const *)in->data, in->linesize, 0, in->height, out->data,
		  dst_stride);
	out->pts = in->best_effort_timestamp;
	out->flags = (in->key_frame ? FB_FRAME_KEYFRAME : 0) |
		     (s->discontinuity ? FB_FRAME_DISCONTINUITY : 0);
	r = fb_producer_publish(p, out);
	if (r < 0) {
		snprintf(why, size, "cannot publish: %s", fb_strerror(r));
		return r;
	}
	if (s->frames++ == 0)
		fbd_stream_set_state(s->st, FB_STREAM_RUNNING, NULL);
	s->discontinuity = false;
	return 0;
}

/* Feed one packet (NULL: flush) and deliver what comes out. */
static int decode(struct source *s, const AVPacket *pkt, int *errors, char *why, size_t size)
{
	int r = avcodec_send_packet(s->dec, pkt);
	if (r < 0 && r != AVERROR_EOF) {
		if (r == AVERROR(EAGAIN))
			return 0;
		if (++*errors >= MAX_DECODE_ERRORS) {
			describe(why, size, "the input keeps sending undecodable data", r);
			return r;
		}
		return 0;
	}
	while ((r = avcodec_receive_frame(s->dec, s->frame)) >= 0) {
		*errors = 0;
		r = deliver(s, why, size);
		av_frame_unref(s->frame);
		if (r < 0 || atomic_load(&s->st->stop))
			return r;
	}
	if (r == AVERROR(EAGAIN) || r == AVERROR_EOF)
		return 0;
	if (++*errors >= MAX_DECODE_ERRORS) {
		describe(why, size, "the input keeps sending undecodable data", r);
		return r;
	}
	return 0;
}

int fbd_source_run(struct fbd_stream *st, char *why, size_t size)
{
	struct source s = {
	    .st = st, .cfg = st->config, .discontinuity = true, .thread = pthread_self()};
	int errors = 0, r;

	s.paced = st->config->pacing == FBD_PACING_NATIVE ||
		  (st->config->pacing == FBD_PACING_AUTO && !is_live(st->config));
	s.pkt = av_packet_alloc();
	s.frame = av_frame_alloc();
	if (!s.pkt || !s.frame) {
		r = -ENOMEM;
		goto out;
	}
	r = open_input(&s, why, size);
	if (r < 0)
		goto out;
	while (!atomic_load(&st->stop)) {
		/* Only time spent reading counts as a stall, not time spent
		 * waiting for a slot or pacing. */
		atomic_store(&s.last_io_ns, now_ns());
		r = av_read_frame(s.fmt, s.pkt);
		if (atomic_load(&s.stalled)) {
			av_packet_unref(s.pkt);
			break;
		}
		if (r == AVERROR_EOF) {
			r = decode(&s, NULL, &errors, why, size);
			if (r >= 0 && s.frames == 0) {
				snprintf(why, size,
					 "the input (FFmpeg read it as %s, codec %s) ended before "
					 "its first picture",
					 s.fmt->iformat->name, s.dec->codec->name);
				r = -ENODATA;
			}
			break;
		}
		if (r < 0) {
			if (atomic_load(&st->stop))
				break;
			describe(why, size, "reading the input failed", r);
			break;
		}
		if (s.pkt->stream_index == s.video)
			r = decode(&s, s.pkt, &errors, why, size);
		av_packet_unref(s.pkt);
		if (r < 0)
			break;
	}
out:
	if (atomic_load(&s.stalled) && !atomic_load(&st->stop)) {
		snprintf(why, size, "the input stalled: nothing came for %.1f s (stall_timeout)",
			 (double)st->config->stall_timeout_ns / 1e9);
		r = -ETIMEDOUT;
	}
	s.watched = NULL; /* closing may call interrupted() */
	sws_freeContext(s.sws);
	avcodec_free_context(&s.dec);
	avformat_close_input(&s.fmt);
	av_packet_free(&s.pkt);
	av_frame_free(&s.frame);
	if (r < 0 && !why[0])
		snprintf(why, size, "%s", r == -ENOMEM ? "out of memory" : "the source failed");
	return r < 0 ? (r > -4096 ? r : -EIO) : 0;
}
