/* SPDX-License-Identifier: MIT */
/*
 * framebus-record: record a stream losslessly (queue mode) into MP4 or
 * Matroska files with libavcodec, with a JSON-lines file of each frame's
 * metadata beside each video.
 *
 * Frames whose pixel format the encoder takes as is reach it without a copy:
 * the AVFrame's buffer is the ring slot itself, given back when the encoder
 * lets go of it.  Other formats are converted by libswscale straight out of
 * the slot.  Every way of stopping (a signal, the end of the stream, the
 * daemon going away, --duration, --frames) finishes the file properly.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "framebus/framebus.h"
#include "meta.h"
#include "pixfmt.h"

/* The timestamps written: capture times at 90 kHz, as MPEG does. */
static const AVRational time_base = {1, 90000};

struct options {
	const char *socket;
	const char *stream;
	const char *output;
	double segment_s;
	double fragment_s;  /* the crash-safe unit: a keyframe and a fragment each */
	double keep_days;   /* retention: older segments are deleted (0: kept) */
	uint64_t keep_size; /* retention: the oldest go past this many bytes (0: kept) */
	double duration_s;
	uint64_t max_frames;
	const char *encoder;
	const char *preset;
	int crf;
	int64_t bitrate;
};

/* One output file and its JSON-lines companion. */
struct recording {
	AVFormatContext *fmt;
	AVCodecContext *enc;
	AVStream *st;
	AVFrame *converted; /* when the encoder needs another pixel format */
	AVPacket *pkt;
	FILE *jsonl;
	int video_fd; /* the video file again, for fsync(): avio has no such call */
	char path[PATH_MAX];
	char jsonl_path[PATH_MAX];
	uint64_t first_ns; /* CLOCK_MONOTONIC of its first frame */
	int64_t last_pts;
	uint64_t frames;
};

struct ring;

/* A ring slot lent to the encoder as an AVBuffer. */
struct lent_slot {
	struct ring *ring;
	const struct fb_frame *frame;
};

/* A subscription and the slots of its ring lent to the encoder (one record
 * per slot: a slot is lent at most once at a time).  One left behind by a
 * daemon restart lives on until the encoder gives back its last slot. */
struct ring {
	fb_subscriber *sub;
	struct lent_slot lent[FB_MAX_SLOTS];
	bool retired;
};

struct recorder {
	struct options opt;
	fb_client *client;
	struct ring *ring; /* the subscription read now */
	struct fb_layout layout;
	const AVCodec *codec;
	enum AVPixelFormat in_fmt, enc_fmt;
	struct SwsContext *sws;
	AVRational fps;
	struct recording cur;
	char last_name[PATH_MAX];
	unsigned name_clashes;
	uint64_t frames, skipped, files, restarts;
	AVFrame *lending; /* reused for every frame lent to the encoder */
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: framebus-record [OPTIONS] STREAM OUTPUT\n"
		"Record STREAM (every frame, in order) into OUTPUT (.mp4 or .mkv), with\n"
		"OUTPUT's name ending in .jsonl instead for each frame's seq, source_seq,\n"
		"pts, latency, meta, origin and capture time.  OUTPUT may hold strftime\n"
		"conversions.\n"
		"  --socket PATH       framebusd's socket (default $FRAMEBUS_SOCKET, else\n"
		"                      " FB_DEFAULT_SOCKET ")\n"
		"  --segment SECONDS   start a new file every SECONDS (OUTPUT must then be a\n"
		"                      strftime pattern, e.g. cam0-%%Y%%m%%d-%%H%%M%%S.mp4)\n"
		"  --fragment SECONDS  write the file in pieces this long (default 1): MP4 is\n"
		"                      fragmented, Matroska in clusters, each starting with a\n"
		"                      keyframe, and the .jsonl is flushed with each, so a\n"
		"                      power cut or SIGKILL loses at most the last piece\n"
		"  --keep-days DAYS    with --segment: delete segments (and their .jsonl)\n"
		"                      older than DAYS, never the one being written\n"
		"  --keep-size SIZE    with --segment: delete the oldest segments while all\n"
		"                      of them take more than SIZE bytes (e.g. 20G)\n"
		"  --duration SECONDS  stop after SECONDS of video\n"
		"  --frames N          stop after N frames\n"
		"  --encoder NAME      FFmpeg encoder (default libx264, else another H.264 or\n"
		"                      MPEG-4 encoder this FFmpeg has)\n"
		"  --crf N             constant quality, for encoders that have it (default 23)\n"
		"  --bitrate BITS      target bit rate instead (e.g. 4M)\n"
		"  --preset NAME       encoder preset (libx264 default: veryfast)\n"
		"SIGINT and SIGTERM, the end of the stream and framebusd going away all\n"
		"finish the current file properly.\n");
}

static bool parse_seconds(const char *s, double *ret)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > 1e7)
		return false;
	*ret = v;
	return true;
}

static bool parse_count(const char *s, uint64_t *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v == 0 || s[0] == '-')
		return false;
	*ret = v;
	return true;
}

static bool parse_bitrate(const char *s, int64_t *ret)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (*end == 'k' || *end == 'K')
		v *= 1e3, end++;
	else if (*end == 'M' || *end == 'm')
		v *= 1e6, end++;
	if (errno || end == s || *end || !(v >= 1000) || v > 1e10)
		return false;
	*ret = (int64_t)v;
	return true;
}

/* A size in bytes, with K, M, G or T (powers of 1024). */
static bool parse_size(const char *s, uint64_t *ret)
{
	static const char units[] = "KMGT";
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	const char *unit = *end ? strchr(units, *end) : NULL;
	if (unit)
		v *= (double)(1ull << (10 * (unit - units + 1))), end++;
	if (errno || end == s || *end || !(v >= 1) || v > 1e18)
		return false;
	*ret = (uint64_t)v;
	return true;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"segment", required_argument, NULL, 'S'},
	    {"fragment", required_argument, NULL, 'F'},
	    {"keep-days", required_argument, NULL, 'D'},
	    {"keep-size", required_argument, NULL, 'K'},
	    {"duration", required_argument, NULL, 'd'},
	    {"frames", required_argument, NULL, 'n'},
	    {"encoder", required_argument, NULL, 'e'},
	    {"crf", required_argument, NULL, 'q'},
	    {"bitrate", required_argument, NULL, 'b'},
	    {"preset", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int ch;

	*o = (struct options){.crf = -1, .fragment_s = 1};
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		bool ok = true;
		char *end;
		switch (ch) {
		case 's':
			o->socket = optarg;
			break;
		case 'S':
			ok = parse_seconds(optarg, &o->segment_s);
			break;
		case 'F':
			ok = parse_seconds(optarg, &o->fragment_s) && o->fragment_s >= 0.1;
			break;
		case 'D':
			ok = parse_seconds(optarg, &o->keep_days) && o->keep_days > 0;
			break;
		case 'K':
			ok = parse_size(optarg, &o->keep_size);
			break;
		case 'd':
			ok = parse_seconds(optarg, &o->duration_s);
			break;
		case 'n':
			ok = parse_count(optarg, &o->max_frames);
			break;
		case 'e':
			o->encoder = optarg;
			break;
		case 'q':
			o->crf = (int)strtol(optarg, &end, 10);
			ok = end != optarg && !*end && o->crf >= 0 && o->crf <= 63;
			break;
		case 'b':
			ok = parse_bitrate(optarg, &o->bitrate);
			break;
		case 'p':
			o->preset = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
		if (!ok) {
			const struct option *lo = longopts;
			while (lo->val != ch)
				lo++;
			fprintf(stderr, "framebus-record: bad value '%s' for --%s\n", optarg,
				lo->name);
			return -1;
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		return -1;
	}
	o->stream = argv[optind];
	o->output = argv[optind + 1];
	if (o->segment_s > 0 && !strchr(o->output, '%')) {
		fprintf(stderr,
			"framebus-record: with --segment, OUTPUT must be a strftime pattern "
			"such as %s-%%Y%%m%%d-%%H%%M%%S.mp4 so that each file gets its "
			"own name\n",
			o->stream);
		return -1;
	}
	if ((o->keep_days > 0 || o->keep_size) && !(o->segment_s > 0)) {
		fprintf(stderr, "framebus-record: --keep-days and --keep-size keep segments: "
				"give --segment too\n");
		return -1;
	}
	if (o->crf >= 0 && o->bitrate) {
		fprintf(stderr, "framebus-record: --crf and --bitrate exclude each other\n");
		return -1;
	}
	return 0;
}

/* The encoder: the one asked for, else the best H.264 one this FFmpeg has. */
static int choose_encoder(struct recorder *rec)
{
	static const char *preferred[] = {"libx264", "libopenh264", "h264", "mpeg4"};

	if (rec->opt.encoder) {
		rec->codec = avcodec_find_encoder_by_name(rec->opt.encoder);
		if (!rec->codec || rec->codec->type != AVMEDIA_TYPE_VIDEO) {
			fprintf(stderr,
				"framebus-record: FFmpeg has no video encoder '%s' "
				"(ffmpeg -encoders lists them)\n",
				rec->opt.encoder);
			return -1;
		}
	}
	for (size_t i = 0; !rec->codec && i < sizeof(preferred) / sizeof(preferred[0]); i++)
		rec->codec = avcodec_find_encoder_by_name(preferred[i]);
	if (!rec->codec) {
		fprintf(stderr, "framebus-record: this FFmpeg has no H.264 or MPEG-4 encoder: "
				"name one with --encoder\n");
		return -1;
	}
	rec->enc_fmt = rec->in_fmt;
	const enum AVPixelFormat *fmts = rec->codec->pix_fmts;
	bool direct = !fmts;
	for (size_t i = 0; fmts && fmts[i] != AV_PIX_FMT_NONE; i++)
		direct |= fmts[i] == rec->in_fmt;
	if (!direct) {
		/* 4:2:0 when the encoder has it: what every player plays. */
		rec->enc_fmt = avcodec_find_best_pix_fmt_of_list(fmts, rec->in_fmt, 0, NULL);
		for (size_t i = 0; fmts[i] != AV_PIX_FMT_NONE; i++)
			if (fmts[i] == AV_PIX_FMT_YUV420P)
				rec->enc_fmt = AV_PIX_FMT_YUV420P;
		rec->sws =
		    sws_getContext((int)rec->layout.width, (int)rec->layout.height, rec->in_fmt,
				   (int)rec->layout.width, (int)rec->layout.height, rec->enc_fmt,
				   SWS_BILINEAR, NULL, NULL, NULL);
		if (!rec->sws) {
			fprintf(stderr, "framebus-record: libswscale cannot convert %s to %s\n",
				av_get_pix_fmt_name(rec->in_fmt),
				av_get_pix_fmt_name(rec->enc_fmt));
			return -1;
		}
	}
	return 0;
}

static void describe_av(const char *what, const char *path, int averror)
{
	char text[AV_ERROR_MAX_STRING_SIZE];
	av_strerror(averror, text, sizeof(text));
	fprintf(stderr, "framebus-record: %s %s: %s\n", what, path, text);
}

/* OUTPUT's name for a file starting at realtime_ns, and its .jsonl twin. */
/* The sidecar of video file path: its name ending in .jsonl instead. */
static void sidecar_of(const char *path, char *ret, size_t size)
{
	const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
	size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - path) : strlen(path);
	snprintf(ret, size, "%.*s.jsonl", (int)stem, path);
}

static int name_files(struct recorder *rec, uint64_t realtime_ns, struct recording *r)
{
	time_t t = (time_t)(realtime_ns / 1000000000u);
	struct tm tm;
	char name[PATH_MAX];

	localtime_r(&t, &tm);
	if (!strchr(rec->opt.output, '%'))
		snprintf(name, sizeof(name), "%s", rec->opt.output);
	else if (strftime(name, sizeof(name), rec->opt.output, &tm) == 0) {
		fprintf(stderr,
			"framebus-record: OUTPUT pattern '%s' gives an empty or too long "
			"name\n",
			rec->opt.output);
		return -1;
	}
	const char *dot = strrchr(name, '.');
	const char *slash = strrchr(name, '/');
	size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - name) : strlen(name);
	/* Segments shorter than the pattern's resolution: number the clashes. */
	if (strcmp(name, rec->last_name) == 0)
		snprintf(r->path, sizeof(r->path), "%.*s-%u%s", (int)stem, name,
			 ++rec->name_clashes, name + stem);
	else {
		rec->name_clashes = 0;
		snprintf(r->path, sizeof(r->path), "%s", name);
	}
	snprintf(rec->last_name, sizeof(rec->last_name), "%s", name);
	sidecar_of(r->path, r->jsonl_path, sizeof(r->jsonl_path));
	return 0;
}

struct segment {
	char path[PATH_MAX];
	time_t mtime;
	uint64_t bytes; /* with its sidecar */
};

static int by_age(const void *a, const void *b)
{
	const struct segment *x = a, *y = b;
	return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

/* Retention (--keep-days, --keep-size): of the segments OUTPUT's pattern
 * names (each conversion matching anything), delete those older than
 * keep_days, then the oldest while they all take more than keep_size bytes,
 * each with its sidecar; never the one being written. */
static void keep(struct recorder *rec)
{
	char pattern[2 * PATH_MAX], sidecar[PATH_MAX];
	size_t n = 0;
	for (const char *p = rec->opt.output; *p && n + 3 < sizeof(pattern); p++) {
		if (*p == '%' && p[1] && p[1] != '%') {
			pattern[n++] = '*';
			p++;
			continue;
		}
		if (*p == '%')
			p++;
		if (strchr("\\*?[", *p))
			pattern[n++] = '\\'; /* a character of the name itself */
		pattern[n++] = *p;
	}
	pattern[n] = 0;
	glob_t g;
	if (glob(pattern, GLOB_NOSORT, NULL, &g) != 0)
		return;
	struct segment *segs = calloc(g.gl_pathc, sizeof(*segs));
	uint64_t total = 0;
	size_t count = 0;
	for (size_t i = 0; segs && i < g.gl_pathc; i++) {
		struct stat st, side;
		if (stat(g.gl_pathv[i], &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		struct segment *s = &segs[count++];
		snprintf(s->path, sizeof(s->path), "%s", g.gl_pathv[i]);
		s->mtime = st.st_mtime;
		sidecar_of(s->path, sidecar, sizeof(sidecar));
		s->bytes =
		    (uint64_t)st.st_size + (stat(sidecar, &side) == 0 ? (uint64_t)side.st_size : 0);
		total += s->bytes;
	}
	globfree(&g);
	if (segs)
		qsort(segs, count, sizeof(*segs), by_age);
	time_t now = time(NULL);
	for (size_t i = 0; segs && i < count; i++) {
		const struct segment *s = &segs[i];
		bool old =
		    rec->opt.keep_days > 0 && (double)(now - s->mtime) > rec->opt.keep_days * 86400;
		bool over = rec->opt.keep_size && total > rec->opt.keep_size;
		if ((!old && !over) || !strcmp(s->path, rec->cur.path))
			continue;
		sidecar_of(s->path, sidecar, sizeof(sidecar));
		if (unlink(s->path) < 0 && errno != ENOENT) {
			fprintf(stderr, "framebus-record: cannot delete %s: %s\n", s->path,
				strerror(errno));
			continue;
		}
		unlink(sidecar);
		total -= s->bytes;
		fprintf(stderr, "framebus-record: deleted %s (%s)\n", s->path,
			old ? "older than --keep-days" : "past --keep-size");
	}
	free(segs);
}

static int open_recording(struct recorder *rec, const struct fb_frame *first)
{
	struct recording *r = &rec->cur;
	int e;

	*r = (struct recording){.first_ns = first->monotonic_ns, .last_pts = -1, .video_fd = -1};
	if (name_files(rec, first->realtime_ns, r) < 0)
		return -1;
	e = avformat_alloc_output_context2(&r->fmt, NULL, NULL, r->path);
	if (e < 0 || !r->fmt) {
		fprintf(stderr,
			"framebus-record: cannot tell the container from the name %s: "
			"end it in .mp4 or .mkv\n",
			r->path);
		return -1;
	}
	r->enc = avcodec_alloc_context3(rec->codec);
	r->pkt = av_packet_alloc();
	r->st = avformat_new_stream(r->fmt, NULL);
	if (!r->enc || !r->pkt || !r->st)
		return -ENOMEM;
	r->enc->width = (int)rec->layout.width;
	r->enc->height = (int)rec->layout.height;
	r->enc->pix_fmt = rec->enc_fmt;
	r->enc->time_base = time_base;
	r->enc->framerate = rec->fps;
	/* A keyframe starts each fragment: one every --fragment seconds. */
	double fps = rec->fps.num > 0 ? av_q2d(rec->fps) : 25;
	r->enc->gop_size =
	    (int)(fps * rec->opt.fragment_s + 0.5) > 0 ? (int)(fps * rec->opt.fragment_s + 0.5) : 1;
	if (r->fmt->oformat->flags & AVFMT_GLOBALHEADER)
		r->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
	if (rec->opt.bitrate)
		r->enc->bit_rate = rec->opt.bitrate;
	else if (av_opt_set_int(r->enc->priv_data, "crf", rec->opt.crf >= 0 ? rec->opt.crf : 23,
				0) < 0) {
		if (rec->opt.crf >= 0)
			fprintf(stderr, "framebus-record: %s has no --crf; using a bit rate\n",
				rec->codec->name);
		r->enc->bit_rate = 4000000;
	}
	if (rec->opt.preset || !strcmp(rec->codec->name, "libx264"))
		if (av_opt_set(r->enc->priv_data, "preset",
			       rec->opt.preset ? rec->opt.preset : "veryfast", 0) < 0) {
			fprintf(stderr, "framebus-record: %s has no preset '%s'\n",
				rec->codec->name, rec->opt.preset);
			return -1;
		}
	e = avcodec_open2(r->enc, rec->codec, NULL);
	if (e < 0) {
		describe_av("cannot open the encoder for", r->path, e);
		return -1;
	}
	avcodec_parameters_from_context(r->st->codecpar, r->enc);
	r->st->time_base = time_base;
	if (rec->sws) {
		r->converted = av_frame_alloc();
		if (!r->converted)
			return -ENOMEM;
		r->converted->format = rec->enc_fmt;
		r->converted->width = r->enc->width;
		r->converted->height = r->enc->height;
		if (av_frame_get_buffer(r->converted, 0) < 0)
			return -ENOMEM;
	}
	e = avio_open(&r->fmt->pb, r->path, AVIO_FLAG_WRITE);
	if (e < 0) {
		describe_av("cannot create", r->path, e);
		return -1;
	}
	/* Crash-safe: a fragmented MP4 (an empty moov first, then a moof per
	 * keyframe) or Matroska clusters of a fragment each; what was written
	 * before a kill plays. */
	AVDictionary *mux = NULL;
	av_dict_set(&mux, "movflags", "frag_keyframe+empty_moov+default_base_moof", 0);
	av_dict_set_int(&mux, "cluster_time_limit", (int64_t)(rec->opt.fragment_s * 1000), 0);
	e = avformat_write_header(r->fmt, &mux);
	av_dict_free(&mux);
	if (e < 0) {
		describe_av("cannot write the header of", r->path, e);
		return -1;
	}
	r->video_fd = open(r->path, O_RDONLY | O_CLOEXEC);
	r->jsonl = fopen(r->jsonl_path, "we");
	if (!r->jsonl || r->video_fd < 0) {
		fprintf(stderr, "framebus-record: cannot create %s: %s\n", r->jsonl_path,
			strerror(errno));
		return -1;
	}
	rec->files++;
	if (rec->opt.keep_days > 0 || rec->opt.keep_size)
		keep(rec);
	return 0;
}

/* Write every packet the encoder has ready. */
static int drain(struct recording *r)
{
	int e;
	while ((e = avcodec_receive_packet(r->enc, r->pkt)) >= 0) {
		av_packet_rescale_ts(r->pkt, r->enc->time_base, r->st->time_base);
		r->pkt->stream_index = r->st->index;
		bool piece = r->pkt->flags & AV_PKT_FLAG_KEY; /* a fragment begins */
		e = av_interleaved_write_frame(r->fmt, r->pkt);
		if (e < 0) {
			describe_av("cannot write to", r->path, e);
			return -1;
		}
		/* The file's previous fragment is complete now: it goes to the
		 * disk, and the sidecar's lines up to here with it. */
		if (piece) {
			avio_flush(r->fmt->pb);
			fflush(r->jsonl);
			fsync(r->video_fd);
			fsync(fileno(r->jsonl));
		}
	}
	return e == AVERROR(EAGAIN) || e == AVERROR_EOF ? 0 : e;
}

/* Flush the encoder and close the file properly; frees everything. */
static int finish_recording(struct recorder *rec)
{
	struct recording *r = &rec->cur;
	int result = 0;

	if (!r->fmt)
		return 0;
	if (r->enc && avcodec_is_open(r->enc) && r->fmt->pb) {
		avcodec_send_frame(r->enc, NULL);
		result = drain(r);
		int e = av_write_trailer(r->fmt);
		if (e < 0) {
			describe_av("cannot finish", r->path, e);
			result = -1;
		}
		fprintf(stderr, "framebus-record: %s: %llu frames\n", r->path,
			(unsigned long long)r->frames);
	}
	if (r->fmt->pb)
		avio_closep(&r->fmt->pb);
	if (r->jsonl && fclose(r->jsonl) != 0) {
		fprintf(stderr, "framebus-record: cannot write %s: %s\n", r->jsonl_path,
			strerror(errno));
		result = -1;
	}
	if (r->video_fd >= 0)
		close(r->video_fd);
	avcodec_free_context(&r->enc);
	avformat_free_context(r->fmt);
	av_frame_free(&r->converted);
	av_packet_free(&r->pkt);
	*r = (struct recording){0};
	return result;
}

static void free_ring(struct ring *ring)
{
	fb_subscriber_free(ring->sub);
	free(ring);
}

static void give_back_slot(void *opaque, uint8_t *data)
{
	struct lent_slot *lent = opaque;
	struct ring *ring = lent->ring;
	fb_subscriber_release(ring->sub, lent->frame);
	if (ring->retired && fb_subscriber_get_held(ring->sub) == 0)
		free_ring(ring);
}

/* The slot as an AVFrame the encoder reads in place; the slot goes back
 * to the ring when the encoder drops its last reference. */
static AVFrame *lend_slot(struct recorder *rec, const struct fb_frame *f)
{
	AVFrame *av = rec->lending;
	struct lent_slot *lent = &rec->ring->lent[f->slot];

	*lent = (struct lent_slot){rec->ring, f};
	av->buf[0] = av_buffer_create(f->data[0], (size_t)rec->layout.frame_size, give_back_slot,
				      lent, AV_BUFFER_FLAG_READONLY);
	if (!av->buf[0]) {
		fb_subscriber_release(rec->ring->sub, f);
		return NULL;
	}
	av->format = rec->in_fmt;
	av->width = (int)rec->layout.width;
	av->height = (int)rec->layout.height;
	for (uint32_t p = 0; p < rec->layout.n_planes; p++) {
		av->data[p] = f->data[p];
		av->linesize[p] = (int)f->stride[p];
	}
	return av;
}

/* Encode one frame and give its slot back (now, or once the encoder is done
 * with it). */
static int record_frame(struct recorder *rec, const struct fb_frame *f)
{
	struct recording *r = &rec->cur;
	int64_t pts = av_rescale_q((int64_t)(f->monotonic_ns - r->first_ns),
				   (AVRational){1, 1000000000}, time_base);
	AVFrame *av;
	int e;

	if (pts <= r->last_pts)
		pts = r->last_pts + 1;
	r->last_pts = pts;
	fprintf(r->jsonl,
		"{\"frame\":%llu,\"seq\":%llu,\"source_seq\":%llu,\"pts\":%lld,\"file_pts\":%lld,"
		"\"monotonic_ns\":%llu,\"realtime_ns\":%llu,\"latency_us\":%.1f,",
		(unsigned long long)r->frames, (unsigned long long)f->seq,
		(unsigned long long)f->source_seq, (long long)f->pts, (long long)pts,
		(unsigned long long)f->monotonic_ns, (unsigned long long)f->realtime_ns,
		(double)(fb_now_ns() - f->monotonic_ns) / 1e3);
	json_meta(r->jsonl, f->meta, f->meta_size);
	/* Where the picture comes from: the first stream it passed (itself if
	 * none) and when it was captured (docs/tracing.md). */
	const struct fb_trace *t = f->trace;
	const char *origin = t->n_hops ? t->hops[0].stream : rec->opt.stream;
	fputs(",\"origin\":[", r->jsonl);
	json_text(r->jsonl, (const uint8_t *)origin, strnlen(origin, FB_NAME_MAX));
	fprintf(r->jsonl, ",%llu],\"capture_ns\":%llu,\"capture_realtime_ns\":%llu}\n",
		(unsigned long long)(t->n_hops ? t->hops[0].seq : f->seq),
		(unsigned long long)t->capture_ns, (unsigned long long)t->capture_realtime_ns);

	if (rec->sws) {
		e = av_frame_make_writable(r->converted);
		if (e >= 0)
			sws_scale(rec->sws, (const uint8_t *const *)f->data, (const int *)f->stride,
				  0, (int)rec->layout.height, r->converted->data,
				  r->converted->linesize);
		fb_subscriber_release(rec->ring->sub, f);
		if (e < 0)
			return -ENOMEM;
		av = r->converted;
	} else if (!(av = lend_slot(rec, f)))
		return -ENOMEM;
	av->pts = pts;
	av->pict_type = AV_PICTURE_TYPE_NONE;
	e = avcodec_send_frame(r->enc, av);
	if (av == rec->lending)
		av_frame_unref(av); /* the slot goes back now unless the encoder kept it */
	if (e < 0) {
		describe_av("cannot encode a frame for", r->path, e);
		return -1;
	}
	r->frames++;
	return drain(r);
}

static const char *stopped_by(void)
{
	return stop_signal == SIGINT ? "interrupted" : "terminated";
}

static void on_connection(void *userdata, bool connected, const char *detail)
{
	(void)userdata;
	(void)connected;
	fprintf(stderr, "framebus-record: %s\n", detail);
}

/* Subscribe to the stream: rec's layout is its ring's. */
static int subscribe(struct recorder *rec)
{
	struct ring *ring = calloc(1, sizeof(*ring));
	if (!ring)
		return -ENOMEM;
	int r = fb_client_subscribe(rec->client, rec->opt.stream, FB_MODE_QUEUE, 0, &ring->sub);
	if (r < 0) {
		free(ring);
		return r;
	}
	rec->layout = *fb_subscriber_get_layout(ring->sub);
	rec->ring = ring;
	return 0;
}

/* The subscription ended: if framebusd went away, keep the file open, wait
 * for the daemon to come back and subscribe again (a ring of the same
 * layout).  Returns NULL once recording goes on, else why it stops. */
static const char *resume(struct recorder *rec, int *ret_status)
{
	struct ring *old = rec->ring, *ring = calloc(1, sizeof(*ring));
	const char *why = NULL;
	bool waiting = false;
	int r;

	if (!ring) {
		*ret_status = 1;
		return "out of memory";
	}
	while ((r = fb_client_resubscribe(rec->client, old->sub, &ring->sub)) == -EAGAIN) {
		if (!waiting) {
			/* The wait may be long: what was recorded so far goes
			 * to disk now. */
			if (rec->cur.jsonl)
				fflush(rec->cur.jsonl);
			if (rec->cur.fmt && rec->cur.fmt->pb)
				avio_flush(rec->cur.fmt->pb);
			fprintf(stderr, "framebus-record: framebusd went away; waiting for it to "
					"come back (the recording stays open)\n");
			waiting = true;
		}
		if (stop_signal)
			break;
		usleep(250000);
	}
	if (r == 0) {
		rec->restarts++;
		fprintf(stderr, "framebus-record: subscribed to %s again; recording goes on\n",
			rec->opt.stream);
	} else {
		free(ring);
		ring = NULL;
		why = r == -EAGAIN      ? stopped_by()
		      : r == -ECANCELED ? "framebusd removed the stream"
		      : r == -ESTALE    ? "the stream came back with another geometry"
		      : r == -EPIPE     ? "the stream ended"
					: fb_strerror(r);
		*ret_status = r == -ESTALE || (r != -EAGAIN && r != -ECANCELED && r != -EPIPE);
	}
	rec->ring = ring;
	if (fb_subscriber_get_held(old->sub) == 0)
		free_ring(old);
	else
		old->retired = true; /* freed with the encoder's last slot of it */
	return why;
}

/* Record until something says stop; returns why, as text for the user. */
static const char *run(struct recorder *rec, int *ret_status)
{
	uint64_t start_ns = 0;
	const struct fb_frame *f;

	*ret_status = 0;
	for (;;) {
		if (stop_signal)
			return stopped_by();
		int r = fb_subscriber_acquire(rec->ring->sub, 200, &f);
		if (r == -ETIMEDOUT || r == -EINTR)
			continue;
		if (r == -EDQUOT) { /* the encoder still holds every frame we may */
			usleep(1000);
			continue;
		}
		if (r == -EPIPE)
			return "the stream ended";
		if (r == -EOWNERDEAD || r == -ECANCELED) {
			const char *why = resume(rec, ret_status);
			if (why)
				return why;
			continue;
		}
		if (r < 0) {
			*ret_status = 1;
			return fb_strerror(r);
		}
		if (f->missed) {
			rec->skipped += f->missed;
			fprintf(stderr,
				"framebus-record: skipped %llu frames before frame %llu: "
				"the recorder fell a whole ring behind\n",
				(unsigned long long)f->missed, (unsigned long long)f->seq);
		}
		if (!start_ns)
			start_ns = f->monotonic_ns;
		if (rec->opt.duration_s > 0 &&
		    f->monotonic_ns - start_ns >= (uint64_t)(rec->opt.duration_s * 1e9)) {
			fb_subscriber_release(rec->ring->sub, f);
			return "the duration was reached";
		}
		if (rec->cur.fmt && rec->opt.segment_s > 0 &&
		    f->monotonic_ns - rec->cur.first_ns >= (uint64_t)(rec->opt.segment_s * 1e9) &&
		    finish_recording(rec) < 0) {
			fb_subscriber_release(rec->ring->sub, f);
			*ret_status = 1;
			return "a file could not be finished";
		}
		if (!rec->cur.fmt && open_recording(rec, f) < 0) {
			fb_subscriber_release(rec->ring->sub, f);
			*ret_status = 1;
			return "a file could not be started";
		}
		if (record_frame(rec, f) < 0) {
			*ret_status = 1;
			return "a frame could not be recorded";
		}
		if (++rec->frames == rec->opt.max_frames)
			return "the frame count was reached";
	}
}

int main(int argc, char **argv)
{
	struct recorder rec = {0};
	struct fb_stream_info info;
	int r, status;

	if (parse_options(argc, argv, &rec.opt) < 0)
		return 2;
	av_log_set_level(AV_LOG_ERROR);
	r = fb_client_connect(rec.opt.socket, "framebus-record", &rec.client);
	if (r < 0) {
		fprintf(stderr, "framebus-record: cannot connect to framebusd: %s\n",
			fb_strerror(r));
		return 1;
	}
	fb_client_set_connection_callback(rec.client, on_connection, &rec);
	r = fb_client_get_stream(rec.client, rec.opt.stream, &info);
	if (r == 0)
		r = subscribe(&rec);
	if (r < 0) {
		const char *why = fb_client_last_error(rec.client);
		fprintf(stderr, "framebus-record: cannot subscribe to '%s': %s\n", rec.opt.stream,
			r == -ENOENT ? "the bus has no such stream"
			: why[0]     ? why
				     : fb_strerror(r));
		fb_client_free(rec.client);
		return 1;
	}
	if (rec.layout.format == FB_FORMAT_RESULTS) {
		fprintf(stderr, "framebus-record: '%s' is a results stream: it has no pictures\n",
			rec.opt.stream);
		fb_client_unsubscribe(rec.client, rec.ring->sub);
		free(rec.ring);
		fb_client_free(rec.client);
		return 1;
	}
	rec.in_fmt = fb_av_pixel_format(rec.layout.format);
	rec.fps = info.fps > 0 ? av_d2q(info.fps, 1000) : (AVRational){25, 1};
	if (choose_encoder(&rec) < 0 || (!rec.sws && !(rec.lending = av_frame_alloc()))) {
		sws_freeContext(rec.sws);
		fb_client_unsubscribe(rec.client, rec.ring->sub);
		free(rec.ring);
		fb_client_free(rec.client);
		return 1;
	}

	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: wake the wait */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	fprintf(stderr, "framebus-record: recording %s (%ux%u %s) with %s%s\n", rec.opt.stream,
		rec.layout.width, rec.layout.height, fb_format_name(rec.layout.format),
		rec.codec->name, rec.sws ? " (converted)" : "");

	const char *why = run(&rec, &status);
	if (finish_recording(&rec) < 0)
		status = 1;
	fprintf(stderr,
		"framebus-record: stopped (%s): %llu frames in %llu files, %llu skipped, "
		"%llu daemon restarts\n",
		why, (unsigned long long)rec.frames, (unsigned long long)rec.files,
		(unsigned long long)rec.skipped, (unsigned long long)rec.restarts);
	sws_freeContext(rec.sws);
	av_frame_free(&rec.lending);
	if (rec.ring) {
		fb_client_unsubscribe(rec.client, rec.ring->sub);
		free(rec.ring);
	}
	fb_client_free(rec.client);
	return status;
}
