/* SPDX-License-Identifier: MIT */
/* A video input as a pull decoder, one picture per call: FFmpeg demuxes it,
 * or, for an RTSP camera's H.264 or H.265, framebusd's own RTSP client
 * (rtsp.c, rtp.c) reads it; libavcodec decodes. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "ring-private.h"
#include "rtp.h"
#include "rtsp.h"
#include "source.h"

_Static_assert(FBD_RTP_PADDING == AV_INPUT_BUFFER_PADDING_SIZE,
	       "rtp.c pads access units as libavcodec wants");

/* Consecutive undecodable packets after which the source counts as broken. */
#define MAX_DECODE_ERRORS 50
/* Packets whose arrival is remembered until their picture comes out of the
 * decoder: more than any decoder's reordering delay. */
#define ARRIVALS 32

/* When a packet came out of the demuxer (a picture's capture time). */
struct arrival {
	int64_t pts;
	uint64_t monotonic_ns;
	uint64_t realtime_ns;
};

struct fbd_source {
	const struct fbd_stream_config *cfg;
	const atomic_bool *stop;
	_Atomic uint64_t *alive_ns;
	AVFormatContext *fmt;
	AVCodecContext *dec;
	AVPacket *pkt;
	AVFrame *frame;
	int video;
	AVRational time_base;
	/* framebusd's RTSP client, or NULL (FFmpeg reads the input): the
	 * access units of its last RTP packet, and when the last two packets
	 * came (an access unit ended by a new timestamp came with the one
	 * before). */
	struct fbd_rtsp *rtsp;
	struct fbd_rtp_depay depay;
	struct fbd_rtp_access_unit units[2];
	int n_units, next_unit;
	struct arrival packet_now, packet_before;
	bool flushing; /* the input ended: the decoder gives what it still has */
	int errors;    /* consecutive decoding errors */
	uint64_t pictures;
	struct arrival arrivals[ARRIVALS]; /* the newest at (next_arrival - 1) % ARRIVALS */
	uint32_t next_arrival;
	/* The stall timeout.  FFmpeg calls interrupted() from the source's
	 * thread and from threads of its own (udp's receiver), hence atomics;
	 * only the source's thread looks at the bytes read. */
	pthread_t thread;
	_Atomic uint64_t last_io_ns; /* when bytes last arrived, or the wait began */
	atomic_bool stalled;         /* FFmpeg was told to give up on the input */
	AVIOContext *watched;        /* the input's bytes, once it is open */
	int64_t watched_bytes;
};

/* FFmpeg calls this during every blocking operation: stop on request, and
 * give up on an input that sent nothing for stall_timeout.  Bytes still
 * arriving are no stall, however long one call takes (probing a live input
 * reads it for seconds at its own rate). */
static int interrupted(void *opaque)
{
	struct fbd_source *s = opaque;
	uint64_t now = fb_now_ns();

	if (atomic_load(s->stop))
		return 1;
	if (pthread_equal(pthread_self(), s->thread))
		atomic_store_explicit(s->alive_ns, now, memory_order_relaxed);
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

static int open_decoder(struct fbd_source *s, const AVCodec *codec, const char *via, char *why,
			size_t size);

static int open_input(struct fbd_source *s, char *why, size_t size)
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
	atomic_store(&s->last_io_ns, fb_now_ns());
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
	if (r == AVERROR_HTTP_UNAUTHORIZED) { /* as framebusd's RTSP client says it */
		snprintf(why, size, "401 Unauthorized: wrong user or password (FFmpeg read it)");
		return -EACCES;
	}
	if (r < 0) {
		char url[1024];
		fbd_url_shown(s->cfg->url, url, sizeof(url));
		describe(why, size, url, r);
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
	s->time_base = s->fmt->streams[s->video]->time_base;
	s->dec = avcodec_alloc_context3(codec);
	if (!s->dec)
		return -ENOMEM;
	r = avcodec_parameters_to_context(s->dec, s->fmt->streams[s->video]->codecpar);
	if (r < 0) {
		describe(why, size, "bad codec parameters", r);
		return r;
	}
	return open_decoder(s, codec, "", why, size);
}

/* Open s->dec, made for codec: via says who reads the input, for the log. */
static int open_decoder(struct fbd_source *s, const AVCodec *codec, const char *via, char *why,
			size_t size)
{
	int r;
	s->dec->thread_count = (int)s->cfg->decoder_threads;
	/* Frame threads hold each picture back a frame per thread: for a
	 * camera that is latency (about 68 ms at 30 fps on this 2-core host,
	 * scripts/bench e2e), so FFmpeg's choice there is slice threads. */
	bool slices = !s->cfg->decoder_threads && fbd_stream_config_live(s->cfg);
	if (slices)
		s->dec->thread_type = FF_THREAD_SLICE;
	r = avcodec_open2(s->dec, codec, NULL);
	if (r < 0) {
		describe(why, size, "cannot open the decoder", r);
		return r;
	}
	char url[1024], size_text[32] = "";
	fbd_url_shown(s->cfg->url, url, sizeof(url));
	/* framebusd's RTSP client knows the size only from the first picture. */
	if (s->dec->width && s->dec->height)
		snprintf(size_text, sizeof(size_text), " %dx%d", s->dec->width, s->dec->height);
	fbd_log_about(LOG_INFO, s->cfg->name, NULL, "stream %s: opened %s (%s%s%s%s)", s->cfg->name,
		      url, codec->name, size_text, slices ? ", slice threads" : "", via);
	return 0;
}

/* Why framebusd's RTSP client does not read this input, or NULL if it
 * does. */
static const char *not_builtin(const struct fbd_stream_config *cfg, char *text, size_t size)
{
	if (strncasecmp(cfg->url, "rtsp://", 7))
		return "";
	if (cfg->rtsp_client == FBD_RTSP_CLIENT_FFMPEG)
		return "rtsp_client = ffmpeg";
	if (cfg->input_format && strcmp(cfg->input_format, "rtsp")) {
		snprintf(text, size, "input_format = %s", cfg->input_format);
		return text;
	}
	/* TCP is what it does: that option changes nothing. */
	for (uint32_t i = 0; i < cfg->n_options; i++)
		if (strcmp(cfg->option_keys[i], "rtsp_transport") ||
		    strcmp(cfg->option_values[i], "tcp")) {
			snprintf(text, size, "FFmpeg option option.%s is set", cfg->option_keys[i]);
			return text;
		}
	return NULL;
}

/* The input through framebusd's RTSP client: -ENOTSUP (and why) if it
 * cannot take it, but FFmpeg may. */
static int open_builtin(struct fbd_source *s, char *why, size_t size)
{
	int r = fbd_rtsp_open(s->cfg->url, s->stop, s->alive_ns, s->cfg->stall_timeout_ns, &s->rtsp,
			      why, size);
	if (r < 0)
		return r;
	const struct fbd_rtsp_video *v = fbd_rtsp_video(s->rtsp);
	fbd_rtp_depay_init(&s->depay, v->codec, v->payload_type);
	s->time_base = (AVRational){1, (int)v->clock_rate};
	const AVCodec *codec =
	    avcodec_find_decoder(v->codec == FBD_RTP_H265 ? AV_CODEC_ID_HEVC : AV_CODEC_ID_H264);
	if (!codec) {
		snprintf(why, size, "no decoder for its video codec %s in this FFmpeg",
			 v->codec == FBD_RTP_H265 ? "hevc" : "h264");
		return -ENOTSUP;
	}
	s->dec = avcodec_alloc_context3(codec);
	if (!s->dec)
		return -ENOMEM;
	if (v->extradata_size) {
		s->dec->extradata = av_mallocz(v->extradata_size + AV_INPUT_BUFFER_PADDING_SIZE);
		if (!s->dec->extradata)
			return -ENOMEM;
		memcpy(s->dec->extradata, v->extradata, v->extradata_size);
		s->dec->extradata_size = (int)v->extradata_size;
	}
	s->dec->pkt_timebase = s->time_base;
	r = open_decoder(s, codec, ", framebusd's RTSP client", why, size);
	/* Not -ENOTSUP: that would be read by FFmpeg. */
	return r == -ENOTSUP ? -EINVAL : r;
}

/* Whether the decoder's error count says the input is broken. */
static int decode_error(struct fbd_source *s, int averror, char *why, size_t size)
{
	if (++s->errors < MAX_DECODE_ERRORS)
		return 0;
	describe(why, size, "the input keeps sending undecodable data", averror);
	return averror;
}

static int stalled(struct fbd_source *s, char *why, size_t size)
{
	snprintf(why, size, "the input stalled: nothing came for %.1f s (stall_timeout)",
		 (double)s->cfg->stall_timeout_ns / 1e9);
	return -ETIMEDOUT;
}

/* Log why FFmpeg reads the input rather than framebusd's RTSP client,
 * unless told says it already. */
static void tell_fallback(const struct fbd_stream_config *cfg, char *told, size_t told_size,
			  const char *why)
{
	if (!why[0] || !strcmp(told, why))
		return;
	fbd_log_about(LOG_INFO, cfg->name, NULL,
		      "stream %s: FFmpeg reads it, not framebusd's RTSP client: %s", cfg->name,
		      why);
	snprintf(told, told_size, "%s", why);
}

int fbd_source_open(const struct fbd_stream_config *config, const atomic_bool *stop,
		    _Atomic uint64_t *alive_ns, char *told, size_t told_size,
		    struct fbd_source **ret_source, char *why, size_t size)
{
	struct fbd_source *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->cfg = config;
	s->stop = stop;
	s->alive_ns = alive_ns;
	s->thread = pthread_self();
	s->pkt = av_packet_alloc();
	s->frame = av_frame_alloc();
	r = s->pkt && s->frame ? 0 : -ENOMEM;
	char text[160];
	const char *ffmpeg = r < 0 || !config->url ? "" : not_builtin(config, text, sizeof(text));
	if (!ffmpeg) {
		r = open_builtin(s, why, size);
		if (r == -ENOTSUP) {
			tell_fallback(config, told, told_size, why);
			fbd_rtsp_close(s->rtsp);
			s->rtsp = NULL;
			why[0] = 0;
		} else if (r >= 0) {
			told[0] = 0;
		}
	} else {
		tell_fallback(config, told, told_size, ffmpeg);
	}
	if (r >= 0 ? !s->rtsp : r == -ENOTSUP)
		r = open_input(s, why, size);
	if (r == -ETIMEDOUT && !ffmpeg)
		r = stalled(s, why, size);
	if (r < 0 && atomic_load(&s->stalled) && !atomic_load(stop))
		r = stalled(s, why, size);
	if (r < 0) {
		fbd_source_close(s);
		if (!why[0])
			snprintf(why, size, "%s",
				 r == -ENOMEM ? "out of memory" : "the source failed");
		return r > -4096 ? r : -EIO;
	}
	*ret_source = s;
	return 0;
}

/* The arrival of the packet a picture with this pts came from; without one
 * (no pts, or forgotten), the newest packet's. */
static const struct arrival *arrival_of(const struct fbd_source *s, int64_t pts)
{
	const struct arrival *newest = &s->arrivals[(s->next_arrival - 1) % ARRIVALS];
	if (pts == AV_NOPTS_VALUE)
		return newest;
	for (uint32_t i = 0; i < ARRIVALS; i++)
		if (s->arrivals[i].pts == pts && s->arrivals[i].monotonic_ns)
			return &s->arrivals[i];
	return newest;
}

/* A picture framebus-output sent from another host carries its frame's
 * identity in a SEI (the h264 and hevc decoders export those as side data):
 * its origin, and its capture time, mapped onto this host's monotonic clock
 * through the realtime clocks (NTP or PTP keeps them together; one ahead of
 * the other cannot make a capture later than now). */
static void restore_origin(const AVFrame *frame, struct fbd_picture *pic)
{
	for (int i = 0; i < frame->nb_side_data; i++) {
		const AVFrameSideData *sd = frame->side_data[i];
		if (sd->type != AV_FRAME_DATA_SEI_UNREGISTERED ||
		    !fbd_identity_read(sd->data, sd->size, &pic->origin))
			continue;
		pic->has_origin = true;
		uint64_t capture = pic->origin.capture_realtime_ns;
		if (!capture)
			return;
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		uint64_t now_realtime = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
		uint64_t now_ns = fb_now_ns();
		uint64_t age = now_realtime > capture ? now_realtime - capture : 0;
		pic->capture_realtime_ns = capture;
		pic->capture_ns = age < now_ns ? now_ns - age : 0;
		return;
	}
}

/* One picture from the decoder: 0 and the picture, 1 if it needs a packet
 * (or, flushing, has nothing left), or an error. */
static int receive(struct fbd_source *s, struct fbd_picture *ret, char *why, size_t size)
{
	av_frame_unref(s->frame);
	int r = avcodec_receive_frame(s->dec, s->frame);
	if (r == AVERROR(EAGAIN) || r == AVERROR_EOF)
		return 1;
	if (r < 0)
		return decode_error(s, r, why, size) < 0 ? r : 1;
	s->errors = 0;
	s->pictures++;
	int64_t pts = s->frame->best_effort_timestamp;
	AVRational tb = s->time_base;
	const struct arrival *a = arrival_of(s, s->frame->pts);
	*ret = (struct fbd_picture){
	    .frame = s->frame,
	    .pts = pts,
	    .pts_ns = pts == AV_NOPTS_VALUE ? INT64_MIN
					    : av_rescale_q(pts, tb, (AVRational){1, 1000000000}),
	    .capture_ns = a->monotonic_ns,
	    .capture_realtime_ns = a->realtime_ns,
	    .decode_ns = fb_now_ns(),
	    .time_base_num = tb.num,
	    .time_base_den = tb.den,
	};
	restore_origin(s->frame, ret);
	return 0;
}

static void remember_arrival(struct fbd_source *s, const struct arrival *a)
{
	s->arrivals[s->next_arrival++ % ARRIVALS] = *a;
}

/* The next access unit from framebusd's RTSP client into s->pkt. */
static int read_builtin(struct fbd_source *s, char *why, size_t size)
{
	while (s->next_unit == s->n_units) {
		const uint8_t *packet;
		size_t len;
		int r = fbd_rtsp_read(s->rtsp, &packet, &len, why, size);
		char notice[256];
		if (fbd_rtsp_take_notice(s->rtsp, notice, sizeof(notice)))
			fbd_log_about(LOG_WARNING, s->cfg->name, NULL, "stream %s: %s",
				      s->cfg->name, notice);
		if (r < 0)
			return r;
		s->packet_before = s->packet_now;
		s->packet_now = (struct arrival){
		    .monotonic_ns = fb_now_ns(),
		    .realtime_ns = fb__now_ns(CLOCK_REALTIME),
		};
		uint64_t dropped = s->depay.dropped;
		r = fbd_rtp_depay_push(&s->depay, packet, len, s->units, why, size);
		if (r < 0)
			return r;
		s->n_units = r;
		s->next_unit = 0;
		/* The first, then once a hundred more: a lossy link does not
		 * flood the log (one packet may drop several frames). */
		uint64_t now = s->depay.dropped;
		if (now != dropped && (!dropped || now / 100 != dropped / 100))
			fbd_log_about(LOG_WARNING, s->cfg->name, NULL,
				      "stream %s: frames dropped: RTP packets were lost, the next "
				      "frames wait for a keyframe (%" PRIu64 " so far)",
				      s->cfg->name, now);
	}
	/* The access unit as it is, padded by the depacketizer: no copy. */
	const struct fbd_rtp_access_unit *u = &s->units[s->next_unit++];
	s->pkt->buf = av_buffer_ref(u->buf);
	if (!s->pkt->buf)
		return -ENOMEM;
	s->pkt->data = (uint8_t *)u->data;
	s->pkt->size = (int)u->size;
	s->pkt->pts = u->pts; /* dts unknown: the decoder orders pictures itself */
	s->pkt->dts = AV_NOPTS_VALUE;
	struct arrival a = u->ended_here ? s->packet_now : s->packet_before;
	a.pts = u->pts;
	remember_arrival(s, &a);
	return 0;
}

int fbd_source_next(struct fbd_source *s, struct fbd_picture *ret_picture, char *why, size_t size)
{
	for (;;) {
		int r = receive(s, ret_picture, why, size);
		if (r <= 0)
			return r;
		if (s->flushing) {
			if (s->pictures)
				return 1;
			if (s->rtsp)
				snprintf(
				    why, size,
				    "the camera (framebusd's RTSP client, codec %s) closed the "
				    "connection before its first picture",
				    s->dec->codec->name);
			else
				snprintf(why, size,
					 "the input (FFmpeg read it as %s, codec %s) ended before "
					 "its first picture",
					 s->fmt->iformat->name, s->dec->codec->name);
			return -ENODATA;
		}
		if (s->rtsp) {
			r = read_builtin(s, why, size);
			if (r == -ETIMEDOUT)
				return stalled(s, why, size);
			if (r == -ECONNRESET) { /* the camera closed it: the input ended */
				s->flushing = true;
				avcodec_send_packet(s->dec, NULL);
				continue;
			}
			if (r < 0)
				return r;
			r = avcodec_send_packet(s->dec, s->pkt);
			av_packet_unref(s->pkt);
			if (r < 0 && r != AVERROR(EAGAIN) && decode_error(s, r, why, size) < 0)
				return r > -4096 ? r : -EIO;
			continue;
		}
		/* Only time spent reading counts as a stall, not time spent
		 * waiting for a slot or pacing. */
		atomic_store(&s->last_io_ns, fb_now_ns());
		r = av_read_frame(s->fmt, s->pkt);
		if (atomic_load(&s->stalled) && !atomic_load(s->stop)) {
			av_packet_unref(s->pkt);
			return stalled(s, why, size);
		}
		if (r == AVERROR_EOF) {
			s->flushing = true;
			r = avcodec_send_packet(s->dec, NULL);
		} else if (r < 0) {
			describe(why, size, "reading the input failed", r);
			return r > -4096 ? r : -EIO;
		} else if (s->pkt->stream_index == s->video) {
			remember_arrival(s, &(struct arrival){
						.pts = s->pkt->pts,
						.monotonic_ns = fb_now_ns(),
						.realtime_ns = fb__now_ns(CLOCK_REALTIME),
					    });
			r = avcodec_send_packet(s->dec, s->pkt);
		}
		av_packet_unref(s->pkt);
		if (r < 0 && r != AVERROR_EOF && r != AVERROR(EAGAIN) &&
		    decode_error(s, r, why, size) < 0)
			return r > -4096 ? r : -EIO;
	}
}

void fbd_source_close(struct fbd_source *s)
{
	if (!s)
		return;
	s->watched = NULL; /* closing may call interrupted() */
	avcodec_free_context(&s->dec);
	avformat_close_input(&s->fmt);
	fbd_rtsp_close(s->rtsp);
	fbd_rtp_depay_clear(&s->depay);
	av_packet_free(&s->pkt);
	av_frame_free(&s->frame);
	free(s);
}
