/* SPDX-License-Identifier: MIT */
/*
 * framebus-output: streams of the bus, encoded with libavcodec and sent with
 * libavformat to SRT, RTSP, RTMP or MPEG-TS over UDP/TCP, for another
 * host's framebusd, a media server or an NVR.  Each frame's identity (its
 * origin, seq, capture time and meta) travels in-band, in a SEI
 * (daemon/identity.c), so a framebusd ingesting the stream restores it.
 *
 * One thread per output, each a client of framebusd of its own: it takes
 * the newest frame (latest mode), so a slow network costs this output its
 * frames (counted as dropped), never the bus or another output.  A lost
 * connection is opened again with a backoff; each output's state is a JSON
 * record on a results stream "output.NAME" (framebusctl status shows it,
 * framebus-mqtt can forward it) and a line on stderr when it changes;
 * with --metrics, Prometheus metrics of them all too (daemon/prometheus.c's
 * thread, which takes only the list's lock, never an output's).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <glob.h>
#include <ini.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "framebus/framebus.h"
#include "identity.h"
#include "inifile.h"
#include "meta.h"
#include "pixfmt.h"
#include "prometheus.h"

#define MAX_OUTPUTS 32
#define MAX_OPTIONS 32
#define BACKOFF_MIN_NS 500000000ull
/* A connection that streamed this long sets the backoff back to its least. */
#define STABLE_NS 10000000000ull
/* How long a frame is waited for, and so how often the state is looked at. */
#define TICK_MS 250
#define STATE_EVERY_NS 1000000000ull
/* How long a stream's frames are watched to learn its rate (no fps =). */
#define RATE_SPAN_NS 1000000000ull
#define STATE_META_MAX 1024
/* The timestamps sent: 90 kHz, as MPEG does. */
static const AVRational time_base = {1, 90000};

enum state { STATE_WAITING, STATE_CONNECTING, STATE_STREAMING, STATE_RETRYING, STATE_FAILED };
static const char *const state_names[] = {"waiting", "connecting", "streaming", "retrying",
					  "failed"};

struct output {
	char name[FB_NAME_MAX + 1];
	char stream[FB_NAME_MAX + 1];
	char *url;
	char *shown_url; /* without user info or query (a passphrase may be there) */
	char *format;    /* the muxer; NULL: from the URL's scheme */
	char *encoder;   /* NULL: libx264, else libopenh264 */
	int64_t bitrate;
	int gop;
	double fps; /* 0: the stream's */
	uint64_t stall_timeout_ns;
	uint64_t retry_max_ns;
	char *enc_keys[MAX_OPTIONS], *enc_values[MAX_OPTIONS];
	size_t n_enc;
	char *out_keys[MAX_OPTIONS], *out_values[MAX_OPTIONS];
	size_t n_out;

	char *text;       /* its section's lines, to tell a changed output on reloading */
	atomic_bool stop; /* removed or changed by a reload */

	/* The output's thread's: */
	pthread_t thread;
	bool started;
	fb_client *client;
	fb_subscriber *sub, *lost;
	fb_producer *state_ring;
	const AVCodec *codec;
	AVCodecContext *enc;
	AVFormatContext *mux;
	AVFrame *picture;
	AVPacket *pkt;
	struct SwsContext *sws;
	bool udu_sei; /* the encoder writes SEI from frame side data */
	uint64_t first_ns, next_try_ns, backoff_ns;
	/* The stream's frame rate as this output measures it, from the first
	 * frame it took (rate_seq, rate_ns) over at least RATE_SPAN_NS; 0
	 * until then. */
	uint64_t rate_seq, rate_ns;
	double measured_fps;
	_Atomic uint64_t io_since_ns; /* a write under way since, or 0 */
	/* Atomic: the metrics' thread reads them (the output's writes them). */
	_Atomic uint64_t connected_ns; /* streaming since, or 0 */
	_Atomic enum state state;
	_Atomic uint64_t frames, sent, dropped, reconnects;
	char reason[256];
	uint64_t seq;
	uint64_t state_at_ns;
	bool state_changed;
};

struct outputs {
	struct output *o[MAX_OUTPUTS];
	size_t n;
};

static const char *socket_path;
static atomic_bool stopping;
/* The outputs running (main's), and the lock main changes the list under
 * and the metrics' thread reads it under. */
static struct outputs running;
static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

struct parser {
	struct fbd_ini_file ini;
	struct outputs *set;
};

static struct output *find_output(const struct outputs *set, const char *name)
{
	for (size_t i = 0; i < set->n; i++)
		if (!strcmp(set->o[i]->name, name))
			return set->o[i];
	return NULL;
}

static void free_output(struct output *o)
{
	if (!o)
		return;
	free(o->url);
	free(o->shown_url);
	free(o->format);
	free(o->encoder);
	free(o->text);
	for (size_t k = 0; k < o->n_enc; k++)
		free(o->enc_keys[k]), free(o->enc_values[k]);
	for (size_t k = 0; k < o->n_out; k++)
		free(o->out_keys[k]), free(o->out_values[k]);
	free(o);
}

static void free_outputs(struct outputs *set)
{
	for (size_t i = 0; i < set->n; i++)
		free_output(set->o[i]);
	set->n = 0;
}

/* "4M", "800k", "2500000": bits per second. */
static bool parse_bitrate(const char *v, int64_t *ret)
{
	char *end;
	errno = 0;
	double n = strtod(v, &end);
	if (errno || end == v || n <= 0)
		return false;
	if (*end == 'k' || *end == 'K')
		n *= 1e3, end++;
	else if (*end == 'M' || *end == 'm')
		n *= 1e6, end++;
	if (*end || n < 10e3 || n > 1e9)
		return false;
	*ret = (int64_t)n;
	return true;
}

static const char *default_format(const char *url)
{
	if (!strncmp(url, "srt://", 6) || !strncmp(url, "udp://", 6) || !strncmp(url, "tcp://", 6))
		return "mpegts";
	if (!strncmp(url, "rtsp://", 7))
		return "rtsp";
	if (!strncmp(url, "rtmp://", 7))
		return "flv";
	return NULL;
}

/* scheme://host:port/path of url: no user info, no query. */
static char *shown(const char *url)
{
	const char *scheme = strstr(url, "://");
	const char *host = scheme ? scheme + 3 : url;
	const char *at = strchr(host, '@');
	const char *end = host + strcspn(host, "?#");
	if (at && at < end)
		host = at + 1;
	char *s;
	if (asprintf(&s, "%.*s%.*s", (int)(scheme ? scheme + 3 - url : 0), url, (int)(end - host),
		     host) < 0)
		return NULL;
	return s;
}

static int add_option(struct parser *p, const char *section, const char *key, const char *v,
		      char **keys, char **values, size_t *n)
{
	const char *name = strchr(key, '.') + 1;
	if (!name[0])
		return fbd_ini_fail(&p->ini, section, key, "no option name after the '.'");
	if (*n == MAX_OPTIONS)
		return fbd_ini_fail(&p->ini, section, key, "more than %d options", MAX_OPTIONS);
	keys[*n] = strdup(name);
	values[*n] = strdup(v);
	(*n)++;
	return 1;
}

static int output_key(struct parser *p, struct output *o, const char *section, const char *key,
		      const char *v)
{
	uint64_t n;
	if (!strcmp(key, "stream")) {
		if (!fbd_ini_stream_name(v))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a stream name (1-%d letters, digits, "
					    "'.', '_' or '-')",
					    v, FB_NAME_MAX);
		snprintf(o->stream, sizeof(o->stream), "%s", v);
		return 1;
	}
	if (!strcmp(key, "url")) {
		if (!strstr(v, "://"))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a URL (srt://, rtsp://, rtmp://, "
					    "udp:// or tcp://)",
					    v);
		fbd_ini_set_string(&o->url, v);
		free(o->shown_url);
		o->shown_url = shown(v);
		return 1;
	}
	if (!strcmp(key, "format"))
		return fbd_ini_set_string(&o->format, v);
	if (!strcmp(key, "encoder"))
		return fbd_ini_set_string(&o->encoder, v);
	if (!strcmp(key, "bitrate")) {
		if (!parse_bitrate(v, &o->bitrate))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a bitrate from 10k to 1000M (bits/s, "
					    "with k or M)",
					    v);
		return 1;
	}
	if (!strcmp(key, "gop")) {
		if (!fbd_ini_uint(v, 1, 10000, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number of frames from 1 to 10000", v);
		o->gop = (int)n;
		return 1;
	}
	if (!strcmp(key, "fps")) {
		char *end;
		errno = 0;
		o->fps = strtod(v, &end);
		if (errno || end == v || *end || !(o->fps >= 1 && o->fps <= 1000))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a frame rate from 1 to 1000", v);
		return 1;
	}
	if (!strcmp(key, "stall_timeout") || !strcmp(key, "retry_max")) {
		if (!fbd_ini_duration(v, &n) || n < 100000000ull)
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a duration of at least 100ms (e.g. 5s)",
					    v);
		*(key[0] == 's' ? &o->stall_timeout_ns : &o->retry_max_ns) = n;
		return 1;
	}
	if (!strncmp(key, "option.", 7))
		return add_option(p, section, key, v, o->enc_keys, o->enc_values, &o->n_enc);
	if (!strncmp(key, "output_option.", 14))
		return add_option(p, section, key, v, o->out_keys, o->out_values, &o->n_out);
	return fbd_ini_fail(&p->ini, section, key, "unknown key");
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parser *p = user;
	if (p->ini.failed)
		return 0;
	if (!strncmp(section, "output ", 7)) {
		struct output *o = find_output(p->set, section + 7);
		if (!o)
			return 0; /* read_line failed */
		char *text;
		if (asprintf(&text, "%s%s=%s\n", o->text ? o->text : "", key, value) < 0)
			return fbd_ini_fail(&p->ini, section, key, "%s", strerror(ENOMEM));
		free(o->text);
		o->text = text;
		return output_key(p, o, section, key, value);
	}
	return fbd_ini_fail(&p->ini, section[0] ? section : NULL, key,
			    "unknown section (expected [output NAME])");
}

/* Reads one line for inih and counts lines; an [output NAME] header adds
 * the output here (inih says nothing of a section without keys). */
static char *read_line(char *str, int num, void *stream)
{
	struct parser *p = stream;
	char *r = fbd_ini_read_line(&p->ini, str, num);
	if (!r)
		return NULL;
	char name[128];
	if (!fbd_ini_header(r, "output", name, sizeof(name)))
		return r;
	/* Its state stream is output.NAME. */
	if (!fbd_ini_stream_name(name) || strlen(name) + 7 > FB_NAME_MAX)
		fbd_ini_fail(&p->ini, "output", name,
			     "an output's name must be 1-%d letters, digits, '.', '_' or '-'",
			     FB_NAME_MAX - 7);
	else if (find_output(p->set, name))
		fbd_ini_fail(&p->ini, "output", name, "defined twice");
	else if (p->set->n == MAX_OUTPUTS)
		fbd_ini_fail(&p->ini, "output", name, "more than %d outputs", MAX_OUTPUTS);
	else if (!(p->set->o[p->set->n] = calloc(1, sizeof(struct output))))
		fbd_ini_fail(&p->ini, "output", name, "%s", strerror(ENOMEM));
	else {
		struct output *o = p->set->o[p->set->n++];
		snprintf(o->name, sizeof(o->name), "%.*s", FB_NAME_MAX, name);
		o->bitrate = 4000000;
		o->gop = 60;
		o->stall_timeout_ns = 5000000000ull;
		o->retry_max_ns = 30000000000ull;
	}
	return r;
}

static int parse_file(struct outputs *set, const char *path, char *error, size_t size)
{
	struct parser p = {.ini = {.path = path, .error = error, .error_size = size}, .set = set};
	p.ini.file = fopen(path, "r");
	if (!p.ini.file) {
		snprintf(error, size, "%s: %s", path, strerror(errno));
		return -1;
	}
	size_t before = set->n;
	int r = ini_parse_stream(read_line, &p, handler, &p);
	fclose(p.ini.file);
	if (p.ini.failed)
		return -1;
	if (r != 0) {
		snprintf(error, size,
			 "%s:%d: syntax error (expected [output NAME], key = value or a comment)",
			 path, r);
		return -1;
	}
	for (size_t i = before; i < set->n; i++) {
		struct output *o = set->o[i];
		if (!o->stream[0] || !o->url) {
			snprintf(error, size, "%s: [output %s] %s: missing", path, o->name,
				 o->stream[0] ? "url" : "stream");
			return -1;
		}
	}
	return 0;
}

/* The configuration file, then each DIR/ *.conf in name order (those that
 * framebusctl output add writes).  Without outputs it is an error unless
 * there is a directory for outputs to come. */
static int load_config(struct outputs *set, const char *path, const char *dir, char *error,
		       size_t size)
{
	glob_t files = {0};
	char *pattern = NULL;
	int r = parse_file(set, path, error, size);
	bool has_dir = access(dir, R_OK | X_OK) == 0;
	if (r == 0 && has_dir && asprintf(&pattern, "%s/*.conf", dir) >= 0 &&
	    glob(pattern, 0, NULL, &files) == 0)
		for (size_t i = 0; r == 0 && i < files.gl_pathc; i++)
			r = parse_file(set, files.gl_pathv[i], error, size);
	globfree(&files);
	free(pattern);
	if (r == 0 && set->n == 0 && !has_dir) {
		snprintf(error, size, "%s: no [output NAME] section (and no directory %s)", path,
			 dir);
		r = -1;
	}
	if (r < 0)
		free_outputs(set);
	return r;
}

/* ------------------------------------------------------------------------ */
/* State                                                                     */
/* ------------------------------------------------------------------------ */

static void set_state(struct output *o, enum state state, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_state(struct output *o, enum state state, const char *fmt, ...)
{
	char reason[sizeof(o->reason)] = "";
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(reason, sizeof(reason), fmt, ap);
		va_end(ap);
	}
	if (state == o->state && !strcmp(reason, o->reason))
		return;
	o->state = state;
	snprintf(o->reason, sizeof(o->reason), "%s", reason);
	o->state_changed = true;
	fprintf(stderr, "framebus-output: %s: %s %s%s%s\n", o->name, state_names[state],
		o->shown_url, reason[0] ? ": " : "", reason);
}

/* The state as a record of output.NAME, when it changed and once a second. */
static void post_state(struct output *o)
{
	uint64_t now = fb_now_ns();
	if (!o->state_changed && now - o->state_at_ns < STATE_EVERY_NS)
		return;
	if (!o->state_ring) {
		char name[FB_NAME_MAX + 8]; /* the output's name is 7 shorter than a stream's */
		snprintf(name, sizeof(name), "output.%s", o->name);
		int r = fb_client_publish_results(o->client, name, 8, FB_POLICY_DROP,
						  STATE_META_MAX, &o->state_ring);
		if (r < 0 && r != -ECONNRESET)
			fprintf(stderr, "framebus-output: %s: cannot publish its state as %s: %s\n",
				o->name, name, fb_strerror(r));
		if (r < 0)
			return;
	}
	struct fb_frame *f;
	if (fb_producer_acquire(o->state_ring, 0, &f) < 0)
		return;
	FILE *out = fmemopen(f->meta, STATE_META_MAX, "w");
	if (!out) {
		fb_producer_discard(o->state_ring, f);
		return;
	}
	fprintf(out, "{\"output\":\"%s\",\"stream\":\"%s\",\"url\":", o->name, o->stream);
	json_text(out, (const uint8_t *)o->shown_url, strlen(o->shown_url));
	fprintf(out, ",\"state\":\"%s\",\"reason\":", state_names[o->state]);
	json_text(out, (const uint8_t *)o->reason, strlen(o->reason));
	fprintf(out,
		",\"encoder\":\"%s\",\"frames\":%llu,\"sent\":%llu,\"dropped\":%llu,"
		"\"reconnects\":%llu,\"seq\":%llu}",
		o->codec ? o->codec->name : "", (unsigned long long)o->frames,
		(unsigned long long)o->sent, (unsigned long long)o->dropped,
		(unsigned long long)o->reconnects, (unsigned long long)o->seq);
	long len = ftell(out);
	fclose(out);
	f->meta_size = len > 0 && len < STATE_META_MAX ? (uint32_t)len : 0;
	fb_producer_publish(o->state_ring, f);
	o->state_changed = false;
	o->state_at_ns = now;
}

/* ------------------------------------------------------------------------ */
/* Encoding and sending                                                      */
/* ------------------------------------------------------------------------ */

static void describe(char *why, size_t size, const char *what, int averror)
{
	char text[AV_ERROR_MAX_STRING_SIZE];
	av_strerror(averror, text, sizeof(text));
	snprintf(why, size, "%s: %s", what, text);
}

/* Whether the output is to end: we stop, or a reload removed or changed it. */
static bool ending(struct output *o)
{
	return atomic_load(&stopping) || atomic_load(&o->stop);
}

/* FFmpeg's blocking calls give up when we stop, and a write that waits on
 * the network longer than stall_timeout counts as a lost connection. */
static int interrupted(void *opaque)
{
	struct output *o = opaque;
	uint64_t since = atomic_load(&o->io_since_ns);
	return ending(o) || (since && fb_now_ns() - since > o->stall_timeout_ns);
}

/* The encoder: the one configured, else libx264, else libopenh264. */
static int choose_encoder(struct output *o)
{
	static const char *preferred[] = {"libx264", "libopenh264"};
	if (o->encoder) {
		o->codec = avcodec_find_encoder_by_name(o->encoder);
		if (!o->codec || o->codec->type != AVMEDIA_TYPE_VIDEO) {
			o->codec = NULL;
			set_state(o, STATE_FAILED,
				  "FFmpeg has no video encoder '%s' (ffmpeg -encoders lists them)",
				  o->encoder);
			return -1;
		}
	}
	for (size_t i = 0; !o->codec && i < sizeof(preferred) / sizeof(preferred[0]); i++)
		o->codec = avcodec_find_encoder_by_name(preferred[i]);
	if (!o->codec) {
		set_state(
		    o, STATE_FAILED,
		    "this FFmpeg has neither libx264 nor libopenh264: name an encoder (encoder =)");
		return -1;
	}
	const char *format = o->format ? o->format : default_format(o->url);
	if (!format) {
		set_state(o, STATE_FAILED,
			  "url '%s': no container for this scheme (srt://, udp:// and tcp:// "
			  "send MPEG-TS, rtsp:// RTSP, rtmp:// FLV): name one (format =)",
			  o->shown_url);
		return -1;
	}
	if (!av_guess_format(format, NULL, NULL)) {
		set_state(o, STATE_FAILED, "FFmpeg has no muxer '%s' (format =)", format);
		return -1;
	}
	return 0;
}

/* Measure the stream's rate from frame f's seq and publish time against the
 * first frame taken: frames the latest mode skipped count too.  Measured
 * here, not asked of framebusd: a stream that has just started shows a few
 * frames in its last second, and a camera's 6 fps given to the encoder made
 * it spend five times the bitrate. */
static void measure_rate(struct output *o, const struct fb_frame *f)
{
	if (o->measured_fps)
		return;
	if (!o->rate_ns || f->seq <= o->rate_seq || f->monotonic_ns < o->rate_ns) {
		o->rate_seq = f->seq;
		o->rate_ns = f->monotonic_ns;
	} else if (f->monotonic_ns - o->rate_ns >= RATE_SPAN_NS) {
		o->measured_fps =
		    (double)(f->seq - o->rate_seq) * 1e9 / (double)(f->monotonic_ns - o->rate_ns);
	}
}

/* The rate the encoder's rate control counts frames at (libx264's
 * zerolatency tune spreads the bitrate over frames, not timestamps): the
 * configured one, else the measured one, a whole number when it is near
 * one; at least 1. */
static AVRational frame_rate(struct output *o)
{
	double fps = o->fps ? o->fps : o->measured_fps;
	if (fps < 1)
		return (AVRational){1, 1};
	if (fabs(fps - round(fps)) < 0.03 * fps)
		return (AVRational){(int)round(fps), 1};
	return av_d2q(fps, 100000);
}

static void close_output(struct output *o)
{
	if (o->mux) {
		if (!(o->mux->oformat->flags & AVFMT_NOFILE))
			avio_closep(&o->mux->pb);
		avformat_free_context(o->mux);
		o->mux = NULL;
	}
	avcodec_free_context(&o->enc);
	av_frame_free(&o->picture);
	sws_freeContext(o->sws);
	o->sws = NULL;
}

/* The encoder, for frames of layout l, and the connection: 0, or -1 with the
 * reason in why; -2 when trying again cannot help (an option the encoder
 * refuses, a format it cannot take). */
static int open_output(struct output *o, const struct fb_layout *l, char *why, size_t size)
{
	const char *format = o->format ? o->format : default_format(o->url);
	enum AVPixelFormat in_fmt = fb_av_pixel_format(l->format);
	AVDictionary *opts = NULL;
	int e;

	if (in_fmt == AV_PIX_FMT_NONE) {
		snprintf(why, size, "stream %s has frames of format %s: no pictures to encode",
			 o->stream, fb_format_name(l->format));
		return -2;
	}
	/* 4:2:0 when the encoder has it (what every player plays), else the
	 * nearest it has. */
	enum AVPixelFormat enc_fmt = AV_PIX_FMT_YUV420P;
	const enum AVPixelFormat *fmts = o->codec->pix_fmts;
	bool has420 = !fmts;
	for (size_t i = 0; fmts && fmts[i] != AV_PIX_FMT_NONE; i++)
		has420 |= fmts[i] == AV_PIX_FMT_YUV420P;
	if (!has420)
		enc_fmt = avcodec_find_best_pix_fmt_of_list(fmts, in_fmt, 0, NULL);

	o->enc = avcodec_alloc_context3(o->codec);
	o->picture = av_frame_alloc();
	e = avformat_alloc_output_context2(&o->mux, NULL, format, o->url);
	if (!o->enc || !o->picture || e < 0) {
		describe(why, size, "cannot set up the output", e < 0 ? e : AVERROR(ENOMEM));
		return -2;
	}
	o->mux->interrupt_callback = (AVIOInterruptCB){.callback = interrupted, .opaque = o};
	/* Each picture leaves at once, not when the next fills the buffer. */
	o->mux->flags |= AVFMT_FLAG_FLUSH_PACKETS;
	o->enc->width = (int)l->width;
	o->enc->height = (int)l->height;
	o->enc->pix_fmt = enc_fmt;
	o->enc->time_base = time_base;
	o->enc->framerate = frame_rate(o);
	o->enc->bit_rate = o->bitrate;
	o->enc->gop_size = o->gop;
	o->enc->max_b_frames = 0; /* latency: no picture waits for a later one */
	if (o->mux->oformat->flags & AVFMT_GLOBALHEADER)
		o->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
	if (!strcmp(o->codec->name, "libx264")) {
		av_dict_set(&opts, "preset", "veryfast", 0);
		av_dict_set(&opts, "tune", "zerolatency", 0);
	}
	for (size_t i = 0; i < o->n_enc; i++)
		av_dict_set(&opts, o->enc_keys[i], o->enc_values[i], 0);
	o->udu_sei = av_opt_find(o->enc, "udu_sei", NULL, 0, AV_OPT_SEARCH_CHILDREN) != NULL;
	if (o->udu_sei)
		av_dict_set(&opts, "udu_sei", "1", 0);
	else if (!o->reconnects)
		fprintf(stderr,
			"framebus-output: %s: encoder %s cannot carry each frame's identity (it "
			"has no udu_sei option): pictures only\n",
			o->name, o->codec->name);
	e = avcodec_open2(o->enc, o->codec, &opts);
	if (e >= 0 && av_dict_count(opts)) {
		const AVDictionaryEntry *bad = av_dict_get(opts, "", NULL, AV_DICT_IGNORE_SUFFIX);
		snprintf(why, size, "encoder %s has no option '%s' (option.%s)", o->codec->name,
			 bad->key, bad->key);
		av_dict_free(&opts);
		return -2;
	}
	av_dict_free(&opts);
	if (e < 0) {
		char what[128];
		snprintf(what, sizeof(what), "cannot open encoder %s", o->codec->name);
		describe(why, size, what, e);
		return -2;
	}
	o->picture->format = enc_fmt;
	o->picture->width = (int)l->width;
	o->picture->height = (int)l->height;
	o->sws = sws_getContext((int)l->width, (int)l->height, in_fmt, (int)l->width,
				(int)l->height, enc_fmt, SWS_BILINEAR, NULL, NULL, NULL);
	if (!o->sws || av_frame_get_buffer(o->picture, 0) < 0) {
		snprintf(why, size, "cannot convert %s to %s", av_get_pix_fmt_name(in_fmt),
			 av_get_pix_fmt_name(enc_fmt));
		return -2;
	}
	AVStream *st = avformat_new_stream(o->mux, NULL);
	if (!st || avcodec_parameters_from_context(st->codecpar, o->enc) < 0) {
		snprintf(why, size, "cannot add the video to the muxer");
		return -2;
	}
	st->time_base = time_base;

	for (size_t i = 0; i < o->n_out; i++)
		av_dict_set(&opts, o->out_keys[i], o->out_values[i], 0);
	if (!(o->mux->oformat->flags & AVFMT_NOFILE)) {
		e = avio_open2(&o->mux->pb, o->url, AVIO_FLAG_WRITE, &o->mux->interrupt_callback,
			       &opts);
		if (e < 0) {
			av_dict_free(&opts);
			describe(why, size, "cannot connect", e);
			return e == AVERROR_PROTOCOL_NOT_FOUND ? -2 : -1;
		}
	}
	atomic_store(&o->io_since_ns, fb_now_ns());
	e = avformat_write_header(o->mux, &opts);
	atomic_store(&o->io_since_ns, 0);
	if (e >= 0 && av_dict_count(opts) && !o->reconnects) {
		const AVDictionaryEntry *bad = av_dict_get(opts, "", NULL, AV_DICT_IGNORE_SUFFIX);
		fprintf(stderr,
			"framebus-output: %s: neither the %s muxer nor the protocol took "
			"output_option.%s\n",
			o->name, format, bad->key);
	}
	av_dict_free(&opts);
	if (e < 0) {
		describe(why, size, "cannot start the stream", e);
		return e == AVERROR_PROTOCOL_NOT_FOUND ? -2 : -1;
	}
	return 0;
}

/* Every packet the encoder has, to the network. */
static int send_packets(struct output *o, char *why, size_t size)
{
	int e;
	while ((e = avcodec_receive_packet(o->enc, o->pkt)) >= 0) {
		av_packet_rescale_ts(o->pkt, o->enc->time_base, o->mux->streams[0]->time_base);
		o->pkt->stream_index = 0;
		atomic_store(&o->io_since_ns, fb_now_ns());
		e = av_interleaved_write_frame(o->mux, o->pkt);
		atomic_store(&o->io_since_ns, 0);
		if (e < 0) {
			describe(why, size,
				 e == AVERROR_EXIT && !ending(o)
				     ? "the network took no data for stall_timeout"
				     : "sending failed",
				 e);
			return -1;
		}
	}
	if (e != AVERROR(EAGAIN) && e != AVERROR_EOF) {
		describe(why, size, "encoding failed", e);
		return -1;
	}
	return 0;
}

static int encode(struct output *o, const struct fb_frame *f, char *why, size_t size)
{
	const struct fb_layout *l = fb_subscriber_get_layout(o->sub);
	int e = av_frame_make_writable(o->picture);
	if (e < 0) {
		describe(why, size, "no memory", e);
		return -1;
	}
	sws_scale(o->sws, (const uint8_t *const *)f->data, (const int *)f->stride, 0,
		  (int)l->height, o->picture->data, o->picture->linesize);
	if (!o->first_ns)
		o->first_ns = f->monotonic_ns;
	o->picture->pts = av_rescale_q((int64_t)(f->monotonic_ns - o->first_ns),
				       (AVRational){1, 1000000000}, time_base);
	o->picture->pict_type = AV_PICTURE_TYPE_NONE;
	av_frame_remove_side_data(o->picture, AV_FRAME_DATA_SEI_UNREGISTERED);
	if (o->udu_sei) {
		uint8_t buf[FBD_IDENTITY_MAX];
		struct fbd_identity id;
		fbd_identity_of(f, o->stream, &id);
		size_t n = fbd_identity_write(&id, buf);
		AVFrameSideData *sd =
		    av_frame_new_side_data(o->picture, AV_FRAME_DATA_SEI_UNREGISTERED, n);
		if (sd)
			memcpy(sd->data, buf, n);
	}
	e = avcodec_send_frame(o->enc, o->picture);
	if (e < 0) {
		describe(why, size, "encoding failed", e);
		return -1;
	}
	return send_packets(o, why, size);
}

/* ------------------------------------------------------------------------ */
/* An output's thread                                                        */
/* ------------------------------------------------------------------------ */

static void lost_connection(struct output *o, const char *why)
{
	uint64_t now = fb_now_ns();
	close_output(o);
	if (ending(o))
		return; /* our own interruption */
	if (o->connected_ns && now - o->connected_ns >= STABLE_NS)
		o->backoff_ns = BACKOFF_MIN_NS;
	if (o->connected_ns)
		o->reconnects++;
	o->connected_ns = 0;
	o->next_try_ns = now + o->backoff_ns;
	set_state(o, STATE_RETRYING, "%s; again in %.1f s", why, (double)o->backoff_ns / 1e9);
	o->backoff_ns = o->backoff_ns * 2 < o->retry_max_ns ? o->backoff_ns * 2 : o->retry_max_ns;
}

/* Subscribe if not yet, or again after framebusd restarted. */
static void subscribe(struct output *o)
{
	int r;
	if (o->lost) {
		r = fb_client_resubscribe(o->client, o->lost, &o->sub);
		if (r == -EAGAIN)
			return;
		fb_subscriber_free(o->lost);
		o->lost = NULL;
		if (r == 0)
			return;
	}
	r = fb_client_subscribe(o->client, o->stream, FB_MODE_LATEST, 0, &o->sub);
	if (r == -ENOENT)
		set_state(o, STATE_WAITING, "framebusd has no stream %s (yet)", o->stream);
	else if (r < 0)
		set_state(o, STATE_WAITING, "cannot subscribe to %s: %s", o->stream,
			  fb_client_last_error(o->client)[0] ? fb_client_last_error(o->client)
							     : fb_strerror(r));
}

/* Connect when it is time to (try again), holding no frame meanwhile. */
static void connect_output(struct output *o)
{
	char why[512];
	if (o->mux || fb_now_ns() < o->next_try_ns)
		return;
	if (!o->fps && !o->measured_fps) {
		set_state(o, STATE_WAITING, "learning the frame rate of %s", o->stream);
		return;
	}
	set_state(o, STATE_CONNECTING, NULL);
	post_state(o);
	int r = open_output(o, fb_subscriber_get_layout(o->sub), why, sizeof(why));
	if (r == -2) {
		close_output(o);
		set_state(o, STATE_FAILED, "%s", why);
	} else if (r < 0) {
		lost_connection(o, why);
	} else {
		o->connected_ns = fb_now_ns();
		o->first_ns = 0;
		set_state(o, STATE_STREAMING, NULL);
	}
}

/* The subscription ended: the stream may come back with another size, for
 * which the encoder starts again. */
static void unsubscribed(struct output *o)
{
	close_output(o);
	o->rate_ns = 0; /* it may come back at another rate */
	o->measured_fps = 0;
	o->connected_ns = 0;
	o->next_try_ns = 0;
}

static void take_frame(struct output *o)
{
	const struct fb_frame *f;
	char why[512];
	int r = fb_subscriber_acquire(o->sub, TICK_MS, &f);
	if (r == -ETIMEDOUT || r == -EAGAIN || r == -EINTR)
		return;
	if (r == -EOWNERDEAD || r == -ECANCELED) {
		o->lost = o->sub;
		o->sub = NULL;
		unsubscribed(o);
		set_state(o, STATE_WAITING, "framebusd went away");
		return;
	}
	if (r < 0) {
		set_state(o, STATE_WAITING, "stream %s %s", o->stream,
			  r == -EPIPE ? "ended" : fb_strerror(r));
		fb_client_unsubscribe(o->client, o->sub);
		o->sub = NULL;
		unsubscribed(o);
		return;
	}
	o->frames++;
	o->seq = f->seq;
	o->dropped += f->missed;
	measure_rate(o, f);
	if (o->mux && encode(o, f, why, sizeof(why)) < 0)
		lost_connection(o, why);
	else if (o->mux)
		o->sent++;
	else
		o->dropped++;
	fb_subscriber_release(o->sub, f);
}

static void *run_output(void *arg)
{
	struct output *o = arg;
	o->backoff_ns = BACKOFF_MIN_NS;
	o->pkt = av_packet_alloc();
	o->state = STATE_WAITING;
	choose_encoder(o);
	/* A failed output stays, saying why, until we stop. */
	while (!ending(o)) {
		if (!o->client) {
			int r = fb_client_connect(socket_path, "framebus-output", &o->client);
			if (r < 0) {
				if (o->state != STATE_FAILED)
					set_state(o, STATE_WAITING,
						  "cannot connect to framebusd: %s",
						  fb_strerror(r));
				usleep(TICK_MS * 1000);
				continue;
			}
		}
		fb_client_process(o->client);
		if (!o->sub && o->state != STATE_FAILED)
			subscribe(o);
		if (o->sub && o->state != STATE_FAILED)
			connect_output(o);
		if (o->sub && o->state != STATE_FAILED)
			take_frame(o);
		else
			usleep(TICK_MS * 1000);
		post_state(o);
	}
	if (o->mux && o->state == STATE_STREAMING) {
		avcodec_send_frame(o->enc, NULL);
		char why[256];
		if (send_packets(o, why, sizeof(why)) == 0)
			av_write_trailer(o->mux);
	}
	close_output(o);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                   */
/* ------------------------------------------------------------------------ */

/* The labels every family has. */
static void labels(FILE *out, const struct output *o)
{
	fbd_metric_label(out, "output", o->name);
	fputc(',', out);
	fbd_metric_label(out, "stream", o->stream);
}

/* The metrics' thread, for a scrape: each family, a line per output (and
 * per state or result).  docs/tracing.md lists them. */
static char *metrics_page(void *data, size_t *ret_size)
{
	(void)data;
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);
	if (!out)
		return NULL;
	uint64_t now = fb_now_ns();
	pthread_mutex_lock(&running_lock);
	fbd_metric_family(
	    out, "framebus_output_info", "gauge",
	    "An output, 1, with where it sends (its URL without user info or query).");
	for (size_t i = 0; i < running.n; i++)
		if (running.o[i]) {
			fputs("framebus_output_info{", out);
			labels(out, running.o[i]);
			fputc(',', out);
			fbd_metric_label(out, "url", running.o[i]->shown_url);
			fputs("} 1\n", out);
		}
	fbd_metric_family(out, "framebus_output_state", "gauge",
			  "1 for the output's state (waiting, connecting, streaming, retrying, "
			  "failed), 0 for the others.");
	for (size_t i = 0; i < running.n; i++)
		for (enum state st = 0; running.o[i] && st <= STATE_FAILED; st++) {
			fputs("framebus_output_state{", out);
			labels(out, running.o[i]);
			fprintf(out, ",state=\"%s\"} %d\n", state_names[st],
				atomic_load(&running.o[i]->state) == st);
		}
	fbd_metric_family(out, "framebus_output_frames_total", "counter",
			  "Frames of its stream the output sent, or dropped (skipped while it "
			  "was busy, or taken while not connected).");
	for (size_t i = 0; i < running.n; i++)
		if (running.o[i]) {
			fputs("framebus_output_frames_total{", out);
			labels(out, running.o[i]);
			fprintf(out, ",result=\"sent\"} %llu\nframebus_output_frames_total{",
				(unsigned long long)atomic_load(&running.o[i]->sent));
			labels(out, running.o[i]);
			fprintf(out, ",result=\"dropped\"} %llu\n",
				(unsigned long long)atomic_load(&running.o[i]->dropped));
		}
	fbd_metric_family(out, "framebus_output_reconnects_total", "counter",
			  "Connections that broke after streaming.");
	for (size_t i = 0; i < running.n; i++)
		if (running.o[i]) {
			fputs("framebus_output_reconnects_total{", out);
			labels(out, running.o[i]);
			fprintf(out, "} %llu\n",
				(unsigned long long)atomic_load(&running.o[i]->reconnects));
		}
	fbd_metric_family(out, "framebus_output_streaming_seconds", "gauge",
			  "How long the output's connection has been streaming; 0 when it is "
			  "not.");
	for (size_t i = 0; i < running.n; i++)
		if (running.o[i]) {
			uint64_t since = atomic_load(&running.o[i]->connected_ns);
			fputs("framebus_output_streaming_seconds{", out);
			labels(out, running.o[i]);
			fprintf(out, "} %.3f\n",
				since && now > since ? (double)(now - since) / 1e9 : 0.0);
		}
	pthread_mutex_unlock(&running_lock);
	if (fclose(out) != 0) {
		free(text);
		return NULL;
	}
	*ret_size = size;
	return text;
}

/* ------------------------------------------------------------------------ */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: framebus-output [--config FILE] [--config-dir DIR] [--socket PATH]\n"
		"                       [--metrics ADDRESS:PORT]\n"
		"Encode the streams FILE and DIR/*.conf name and send them to SRT, RTSP, RTMP\n"
		"or MPEG-TS over UDP/TCP, each frame's origin, seq, capture time and meta\n"
		"in-band.  Each output's state is a record of the results stream output.NAME.\n"
		"DIR changing (framebusctl output add, remove) or SIGHUP reloads them.\n"
		"  --config FILE    the configuration (default " FBO_DEFAULT_CONFIG ")\n"
		"  --config-dir DIR outputs added on demand (default " FBO_DEFAULT_DIR ")\n"
		"  --socket PATH    framebusd's socket (default $FRAMEBUS_SOCKET, else\n"
		"                   " FB_DEFAULT_SOCKET ")\n"
		"  --metrics ADDRESS:PORT  serve the outputs' Prometheus metrics at\n"
		"                   http://ADDRESS:PORT/metrics (e.g. 127.0.0.1:9465)\n");
}

static void start_output(struct output *o)
{
	fprintf(stderr, "framebus-output: %s: %s to %s\n", o->name, o->stream, o->shown_url);
	o->started = pthread_create(&o->thread, NULL, run_output, o) == 0;
	if (!o->started)
		fprintf(stderr, "framebus-output: %s: cannot start its thread\n", o->name);
}

/* End the output's thread (stopping, or the output was removed or changed),
 * say what it did and free it. */
static void end_output(struct output *o)
{
	atomic_store(&o->stop, true);
	if (o->started) {
		pthread_join(o->thread, NULL);
		fprintf(stderr,
			"framebus-output: %s: %llu frames, %llu sent, %llu dropped, %llu "
			"reconnects\n",
			o->name, (unsigned long long)o->frames, (unsigned long long)o->sent,
			(unsigned long long)o->dropped, (unsigned long long)o->reconnects);
	}
	if (o->sub)
		fb_client_unsubscribe(o->client, o->sub);
	fb_subscriber_free(o->lost);
	if (o->state_ring)
		fb_client_unpublish(o->client, o->state_ring);
	fb_client_free(o->client);
	av_packet_free(&o->pkt);
	free_output(o);
}

/* Read the configuration again: outputs gone or changed end, new or
 * changed ones start, the others go on untouched.  A configuration with an
 * error changes nothing. */
static void reload(struct outputs *cur, const char *path, const char *dir)
{
	struct outputs next = {0}, now = {0}, ended = {0};
	char error[512];
	if (load_config(&next, path, dir, error, sizeof(error)) < 0) {
		fprintf(stderr, "framebus-output: not reloaded, outputs unchanged: %s\n", error);
		return;
	}
	/* Out of the list (the metrics' thread no longer sees them), then
	 * ended, without the lock: ending may wait for the network. */
	pthread_mutex_lock(&running_lock);
	for (size_t i = 0; i < cur->n; i++) {
		struct output *o = cur->o[i], *n = find_output(&next, o->name);
		if (n && !strcmp(n->text, o->text))
			continue;
		fprintf(stderr, "framebus-output: %s: %s\n", o->name, n ? "changed" : "removed");
		ended.o[ended.n++] = o;
		cur->o[i] = NULL;
	}
	pthread_mutex_unlock(&running_lock);
	for (size_t i = 0; i < ended.n; i++)
		end_output(ended.o[i]);
	/* In the new order: those unchanged as they run, the others anew. */
	for (size_t i = 0; i < next.n; i++) {
		struct output *n = next.o[i], *o = NULL;
		for (size_t k = 0; k < cur->n && !o; k++)
			if (cur->o[k] && !strcmp(cur->o[k]->name, n->name))
				o = cur->o[k];
		if (o) {
			free_output(n);
		} else {
			start_output(n);
			o = n;
		}
		now.o[now.n++] = o;
	}
	pthread_mutex_lock(&running_lock);
	*cur = now;
	pthread_mutex_unlock(&running_lock);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'}, {"config-dir", required_argument, NULL, 'd'},
	    {"socket", required_argument, NULL, 's'}, {"metrics", required_argument, NULL, 'm'},
	    {"help", no_argument, NULL, 'h'},         {0},
	};
	const char *config_path = FBO_DEFAULT_CONFIG, *config_dir = FBO_DEFAULT_DIR;
	const char *metrics = NULL;
	struct sockaddr_storage metrics_addr;
	struct fbd_prom_server *server = NULL;
	char error[512];
	int ch;

	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config_path = optarg;
			break;
		case 'd':
			config_dir = optarg;
			break;
		case 's':
			socket_path = optarg;
			break;
		case 'm':
			metrics = optarg;
			if (!fbd_ini_address(metrics, &metrics_addr)) {
				fprintf(stderr,
					"framebus-output: --metrics '%s' is not ADDRESS:PORT "
					"(127.0.0.1:9465, [::1]:9465)\n",
					metrics);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (load_config(&running, config_path, config_dir, error, sizeof(error)) < 0) {
		fprintf(stderr, "framebus-output: %s\n", error);
		return 2;
	}
	av_log_set_level(AV_LOG_ERROR);
	avformat_network_init();
	/* A peer that went away must give EPIPE, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGHUP);
	sigprocmask(SIG_BLOCK, &signals, NULL); /* the threads inherit it */
	int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
	if (signal_fd < 0) {
		fprintf(stderr, "framebus-output: signalfd: %s\n", strerror(errno));
		return 1;
	}
	/* Outputs added or removed on demand: files appearing in or leaving
	 * the directory (written whole, then renamed into it). */
	int watch_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (watch_fd >= 0 &&
	    inotify_add_watch(watch_fd, config_dir,
			      IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE) < 0) {
		close(watch_fd);
		watch_fd = -1;
	}
	if (watch_fd >= 0)
		fprintf(stderr, "framebus-output: outputs on demand in %s\n", config_dir);
	if (metrics) {
		int r = fbd_prom_serve("framebus-output", &metrics_addr, metrics_page, NULL, NULL,
				       &server);
		if (r < 0) {
			fprintf(stderr,
				"framebus-output: --metrics %s: cannot serve "
				"http://%s/metrics: %s (is the address this host's, and the "
				"port free?)\n",
				metrics, metrics, strerror(-r));
			return 1;
		}
		fprintf(stderr, "framebus-output: metrics at http://%s/metrics\n", metrics);
	}
	for (size_t i = 0; i < running.n; i++)
		start_output(running.o[i]);
	for (;;) {
		struct pollfd fds[2] = {{signal_fd, POLLIN, 0}, {watch_fd, POLLIN, 0}};
		if (poll(fds, watch_fd >= 0 ? 2 : 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "framebus-output: poll: %s\n", strerror(errno));
			break;
		}
		if (fds[1].revents) {
			char events[4096];
			while (read(watch_fd, events, sizeof(events)) > 0)
				;
			reload(&running, config_path, config_dir);
		}
		if (!fds[0].revents)
			continue;
		struct signalfd_siginfo si;
		if (read(signal_fd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo == SIGHUP) {
			reload(&running, config_path, config_dir);
			continue;
		}
		fprintf(stderr, "framebus-output: %s\n",
			si.ssi_signo == SIGINT ? "interrupted" : "terminated");
		break;
	}
	atomic_store(&stopping, true);
	fbd_prom_stop(server); /* no scrape reads the outputs now */
	for (size_t i = 0; i < running.n; i++)
		end_output(running.o[i]);
	if (watch_fd >= 0)
		close(watch_fd);
	close(signal_fd);
	avformat_network_deinit();
	return 0;
}
