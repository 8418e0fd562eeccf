/* SPDX-License-Identifier: MIT */
/*
 * framebus-record: record every frame of a stream (queue mode) into MP4 or
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
	double retry_s;     /* after a failed write, how often to try a new file */
	double keep_days;   /* retention: older segments are deleted (0: kept) */
	uint64_t keep_size; /* retention: the oldest go past this many bytes (0: kept) */
	double duration_s;
	uint64_t max_frames;
	const char *encoder;
	const char *preset;
	int crf;
	int64_t bitrate;
	bool lossless; /* ffv1: the pixels come back bit-exact */
};

/* A sidecar line waiting for its frame to reach the file. */
struct line {
	int64_t pts; /* its frame's, in time_base */
	bool muxed;  /* its frame's packet went to the muxer */
	char *text;
	size_t len;
};

/* One output file and its JSON-lines companion.  Nothing reaches either
 * file but whole fragments (commit()): the muxer writes into pending, and a
 * fragment's bytes go to the video with the lines of exactly its frames to
 * the sidecar, so that however the recorder stops, the sidecar has a line
 * for each frame in the video and no other. */
struct recording {
	AVFormatContext *fmt;
	AVCodecContext *enc;
	AVStream *st;
	AVFrame *converted; /* when the encoder needs another pixel format */
	AVPacket *pkt;
	int video_fd, jsonl_fd;
	uint8_t *pending; /* what the muxer wrote since the last commit */
	size_t pending_len, pending_size;
	struct line *lines; /* frames in the encoder or the muxer, not committed */
	size_t n_lines, lines_size;
	off_t video_end, jsonl_end; /* the files' lengths at the last commit */
	int64_t fragment_pts;       /* the keyframe that began the fragment */
	char path[PATH_MAX];
	char jsonl_path[PATH_MAX];
	uint64_t first_ns; /* CLOCK_MONOTONIC of its first frame */
	int64_t last_pts;
	int64_t pts_step; /* a tick of the container's time base, in time_base */
	uint64_t frames;  /* sent to the encoder */
	uint64_t in_file; /* committed */
	bool started;     /* the muxer has written its header */
	bool broken;      /* writing failed: the files end at the last commit */
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
	char last_name[PATH_MAX], prev_name[PATH_MAX]; /* prev: to give a name back */
	unsigned name_clashes, prev_clashes;
	uint64_t frames, skipped, files, restarts;
	AVFrame *lending;            /* reused for every frame lent to the encoder */
	int64_t frame_ticks;         /* a frame's nominal duration, in time_base */
	int64_t fragment_ticks;      /* the least a fragment holds, in time_base */
	char failure[PATH_MAX + 64]; /* why writing stopped, for the log */
	bool stalled;                /* no file can be written: frames are skipped */
	uint64_t stall_skipped;      /* frames not recorded since writing stopped */
	uint64_t retry_ns;           /* when to try a new file */
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
		"  --retry SECONDS     when a write fails (a full disk, a vanished directory),\n"
		"                      skip frames and try a new file this often (default 5)\n"
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
		"  --lossless          keep the pixels bit-exact: ffv1 in the stream's own\n"
		"                      pixel format (or one holding the same values), in\n"
		"                      Matroska (.mkv) only\n"
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
	    {"retry", required_argument, NULL, 'R'},
	    {"keep-days", required_argument, NULL, 'D'},
	    {"keep-size", required_argument, NULL, 'K'},
	    {"duration", required_argument, NULL, 'd'},
	    {"frames", required_argument, NULL, 'n'},
	    {"encoder", required_argument, NULL, 'e'},
	    {"crf", required_argument, NULL, 'q'},
	    {"bitrate", required_argument, NULL, 'b'},
	    {"preset", required_argument, NULL, 'p'},
	    {"lossless", no_argument, NULL, 'L'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int ch;

	*o = (struct options){.crf = -1, .fragment_s = 1, .retry_s = 5};
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
		case 'R':
			ok = parse_seconds(optarg, &o->retry_s) && o->retry_s >= 0.1;
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
		case 'L':
			o->lossless = true;
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
	if (o->lossless && (o->encoder || o->crf >= 0 || o->bitrate || o->preset)) {
		fprintf(stderr, "framebus-record: --lossless chooses its encoder (ffv1): drop "
				"--encoder, --crf, --bitrate and --preset\n");
		return -1;
	}
	/* ffv1 has no MP4 codec tag; Matroska is its home (and the archives'). */
	const AVOutputFormat *container = av_guess_format(NULL, o->output, NULL);
	if (o->lossless && (!container || strcmp(container->name, "matroska"))) {
		fprintf(stderr,
			"framebus-record: --lossless records ffv1, which only Matroska holds: "
			"end OUTPUT in .mkv (not %s)\n",
			o->output);
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

	if (rec->opt.lossless && !(rec->codec = avcodec_find_encoder_by_name("ffv1"))) {
		fprintf(stderr, "framebus-record: --lossless needs FFmpeg's ffv1 encoder\n");
		return -1;
	}
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
		int loss = 0;
		rec->enc_fmt = avcodec_find_best_pix_fmt_of_list(fmts, rec->in_fmt, 0, &loss);
		/* Lossless: a format holding the same values (nv12's planes
		 * apart, bgr24 with a padding byte), converted exactly. */
		if (rec->opt.lossless && loss) {
			fprintf(stderr, "framebus-record: %s cannot keep %s frames bit-exact\n",
				rec->codec->name, av_get_pix_fmt_name(rec->in_fmt));
			return -1;
		}
		/* Else 4:2:0 when the encoder has it: what every player plays. */
		for (size_t i = 0; !rec->opt.lossless && fmts[i] != AV_PIX_FMT_NONE; i++)
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
	memcpy(rec->prev_name, rec->last_name, sizeof(rec->prev_name));
	rec->prev_clashes = rec->name_clashes;
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

/* Writing failed: say why, once, in rec->failure; -err. */
static int write_failed(struct recorder *rec, const char *path, int err)
{
	rec->cur.broken = true;
	snprintf(rec->failure, sizeof(rec->failure), "cannot write %s: %s", path, strerror(err));
	return -err;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

#if LIBAVFORMAT_VERSION_MAJOR >= 61
#define MUX_CONST const
#else
#define MUX_CONST
#endif

/* The muxer's output: kept in memory until commit(). */
static int mux_write(void *opaque, MUX_CONST uint8_t *buf, int size)
{
	struct recording *r = opaque;
	if (r->pending_len + (size_t)size > r->pending_size) {
		size_t want = r->pending_size ? 2 * r->pending_size : 1 << 16;
		while (want < r->pending_len + (size_t)size)
			want *= 2;
		uint8_t *p = realloc(r->pending, want);
		if (!p)
			return AVERROR(ENOMEM);
		r->pending = p;
		r->pending_size = want;
	}
	memcpy(r->pending + r->pending_len, buf, (size_t)size);
	r->pending_len += (size_t)size;
	return size;
}

/* Only a trailer seeks (Matroska's goes back to its header): what is
 * pending goes to the file first. */
static int64_t mux_seek(void *opaque, int64_t offset, int whence)
{
	struct recording *r = opaque;
	struct stat st;
	int e = write_all(r->video_fd, r->pending, r->pending_len);
	if (e < 0)
		return AVERROR(-e);
	r->pending_len = 0;
	if (whence & AVSEEK_SIZE)
		return fstat(r->video_fd, &st) < 0 ? AVERROR(errno) : st.st_size;
	off_t pos = lseek(r->video_fd, offset, whence & ~AVSEEK_FORCE);
	return pos < 0 ? AVERROR(errno) : pos;
}

/* Create the files; -errno with rec->failure set when they cannot be. */
static int create_files(struct recorder *rec)
{
	struct recording *r = &rec->cur;
	r->video_fd = open(r->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (r->video_fd < 0)
		return write_failed(rec, r->path, errno);
	r->jsonl_fd = open(r->jsonl_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (r->jsonl_fd < 0)
		return write_failed(rec, r->jsonl_path, errno);
	return 0;
}

/* What the muxer wrote goes to the video, then the lines of the frames in
 * it to the sidecar, and both to the disk.  A failure cuts both files back
 * to the last commit, where they still match and play, and breaks the
 * recording. */
static int commit(struct recorder *rec)
{
	struct recording *r = &rec->cur;
	struct stat vst, jst;
	size_t len = 0, kept = 0;
	uint8_t *text;
	int e;

	for (size_t i = 0; i < r->n_lines; i++)
		len += r->lines[i].muxed ? r->lines[i].len : 0;
	/* The files appear with their first fragment: a file never holds a
	 * header alone, which plays nowhere. */
	if (r->video_fd < 0 && !len)
		return 0;
	if (r->video_fd < 0 && (e = create_files(rec)) < 0)
		return e;
	text = malloc(len ? len : 1);
	if (!text)
		return write_failed(rec, r->jsonl_path, ENOMEM);
	len = 0;
	for (size_t i = 0; i < r->n_lines; i++)
		if (r->lines[i].muxed) {
			memcpy(text + len, r->lines[i].text, r->lines[i].len);
			len += r->lines[i].len;
		}
	/* A deleted file (its directory removed, say) takes writes without a
	 * complaint, to be lost when it is closed. */
	if (fstat(r->video_fd, &vst) < 0 || fstat(r->jsonl_fd, &jst) < 0)
		e = write_failed(rec, r->path, errno);
	else if (vst.st_nlink == 0 || jst.st_nlink == 0) {
		e = write_failed(rec, r->path, ENOENT);
		snprintf(rec->failure, sizeof(rec->failure), "%s was deleted",
			 vst.st_nlink ? r->jsonl_path : r->path);
	} else if ((e = write_all(r->video_fd, r->pending, r->pending_len)) < 0)
		write_failed(rec, r->path, -e);
	/* Right after: a kill between the two writes is the only way for the
	 * files to disagree, so nothing slow (an fsync) goes between them. */
	else if ((e = write_all(r->jsonl_fd, text, len)) < 0)
		write_failed(rec, r->jsonl_path, -e);
	else if ((e = -(fsync(r->video_fd) < 0 ? errno : 0)) < 0)
		write_failed(rec, r->path, -e);
	else if ((e = -(fsync(r->jsonl_fd) < 0 ? errno : 0)) < 0)
		write_failed(rec, r->jsonl_path, -e);
	free(text);
	if (e < 0) {
		/* Gives back the space of what did not fit, too. */
		if (ftruncate(r->video_fd, r->video_end) < 0 ||
		    ftruncate(r->jsonl_fd, r->jsonl_end) < 0)
			fprintf(stderr, "framebus-record: cannot cut %s back: %s\n", r->path,
				strerror(errno));
		return e;
	}
	if (!r->video_end)
		rec->files++;
	if (rec->stalled)
		fprintf(stderr,
			"framebus-record: writing again, into %s, after %llu frames not "
			"recorded\n",
			r->path, (unsigned long long)rec->stall_skipped);
	rec->stalled = false;
	rec->stall_skipped = 0;
	r->video_end += (off_t)r->pending_len;
	r->jsonl_end += (off_t)len;
	r->pending_len = 0;
	for (size_t i = 0; i < r->n_lines; i++) {
		if (r->lines[i].muxed) {
			free(r->lines[i].text);
			r->in_file++;
		} else
			r->lines[kept++] = r->lines[i];
	}
	r->n_lines = kept;
	return 0;
}

/* The fragment being written ends: the muxer writes it out (an MP4 moof and
 * mdat, a Matroska cluster) and it is committed. */
static int end_fragment(struct recorder *rec)
{
	struct recording *r = &rec->cur;
	int e = av_write_frame(r->fmt, NULL);
	if (e >= 0) {
		avio_flush(r->fmt->pb);
		e = r->fmt->pb->error;
	}
	if (e < 0) {
		describe_av("cannot end a fragment of", r->path, e);
		return -1;
	}
	return commit(rec);
}

/* A frame's instant in the recording: when its picture was captured, so the
 * file keeps the camera's pace through decoding and processing, or when it
 * was published where that is unknown. */
static uint64_t frame_time_ns(const struct fb_frame *f)
{
	return f->trace->capture_ns ? f->trace->capture_ns : f->monotonic_ns;
}

/* Start a recording with frame first (its files appear with its first
 * fragment, commit()). */
static int open_recording(struct recorder *rec, const struct fb_frame *first)
{
	struct recording *r = &rec->cur;
	int e;

	*r = (struct recording){.first_ns = frame_time_ns(first),
				.last_pts = -1,
				.video_fd = -1,
				.jsonl_fd = -1,
				.fragment_pts = AV_NOPTS_VALUE};
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
	if (rec->opt.lossless) {
		/* Version 3: CRCs in each slice, so damage in an archive shows,
		 * and slices encoded on every core: 1080p takes more than one. */
		av_opt_set_int(r->enc->priv_data, "level", 3, 0);
		r->enc->thread_count = 0;
	} else if (rec->opt.bitrate)
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
	uint8_t *buffer = av_malloc(1 << 16);
	if (buffer)
		r->fmt->pb = avio_alloc_context(buffer, 1 << 16, 1, r, NULL, mux_write, mux_seek);
	if (!r->fmt->pb) {
		av_free(buffer);
		return -ENOMEM;
	}
	/* Crash-safe: a fragmented MP4 (an empty moov first, then a moof per
	 * fragment) or Matroska clusters, a fragment each (end_fragment()). */
	AVDictionary *mux = NULL;
	av_dict_set(&mux, "movflags", "frag_custom+empty_moov+default_base_moof", 0);
	e = avformat_write_header(r->fmt, &mux);
	av_dict_free(&mux);
	if (e >= 0) {
		avio_flush(r->fmt->pb);
		e = r->fmt->pb->error;
	}
	if (e < 0) {
		describe_av("cannot write the header of", r->path, e);
		return -1;
	}
	r->started = true;
	r->pts_step = av_rescale_q_rnd(1, r->st->time_base, time_base, AV_ROUND_UP);
	if (rec->opt.keep_days > 0 || rec->opt.keep_size)
		keep(rec);
	return 0;
}

/* Write every packet the encoder has ready.  A keyframe a fragment's length
 * after the last one begins the next fragment. */
static int drain(struct recorder *rec)
{
	struct recording *r = &rec->cur;
	int e;
	while ((e = avcodec_receive_packet(r->enc, r->pkt)) >= 0) {
		AVPacket *pkt = r->pkt;
		if (pkt->flags & AV_PKT_FLAG_KEY) {
			if (r->fragment_pts != AV_NOPTS_VALUE &&
			    pkt->pts - r->fragment_pts >= rec->fragment_ticks &&
			    (e = end_fragment(rec)) < 0) {
				av_packet_unref(pkt);
				return e;
			}
			if (r->fragment_pts == AV_NOPTS_VALUE ||
			    pkt->pts - r->fragment_pts >= rec->fragment_ticks)
				r->fragment_pts = pkt->pts;
		}
		for (size_t i = 0; i < r->n_lines; i++)
			if (r->lines[i].pts == pkt->pts)
				r->lines[i].muxed = true;
		/* Without it, an MP4's edit list can end before the last frame. */
		if (!pkt->duration)
			pkt->duration = rec->frame_ticks;
		av_packet_rescale_ts(pkt, r->enc->time_base, r->st->time_base);
		pkt->stream_index = r->st->index;
		e = av_write_frame(r->fmt, pkt);
		av_packet_unref(pkt);
		if (e < 0) {
			describe_av("cannot write to", r->path, e);
			return -1;
		}
	}
	return e == AVERROR(EAGAIN) || e == AVERROR_EOF ? 0 : e;
}

/* Writing failed: the file ends at its last commit.  Until a new file can
 * be written, tried every --retry seconds, frames are skipped (counted,
 * never kept). */
static void stall(struct recorder *rec)
{
	if (!rec->stalled)
		fprintf(stderr,
			"framebus-record: %s; skipping frames until a new file can be "
			"written (trying every %g s)\n",
			rec->failure, rec->opt.retry_s);
	rec->stalled = true;
	rec->retry_ns = fb_now_ns() + (uint64_t)(rec->opt.retry_s * 1e9);
}

/* Close the files and free everything.  Frames that did not reach the file
 * count as skipped; files that never got a fragment go. */
static void close_recording(struct recorder *rec)
{
	struct recording *r = &rec->cur;
	uint64_t lost = r->frames - r->in_file;

	rec->frames -= lost;
	rec->skipped += lost;
	rec->stall_skipped += lost;
	if (r->video_end > 0)
		fprintf(stderr, "framebus-record: %s: %llu frames\n", r->path,
			(unsigned long long)r->in_file);
	else {
		if (r->video_fd >= 0)
			unlink(r->path);
		if (r->jsonl_fd >= 0)
			unlink(r->jsonl_path);
		/* The name is free again. */
		memcpy(rec->last_name, rec->prev_name, sizeof(rec->last_name));
		rec->name_clashes = rec->prev_clashes;
	}
	if (r->fmt && r->fmt->pb) {
		av_freep(&r->fmt->pb->buffer);
		avio_context_free(&r->fmt->pb);
	}
	if (r->video_fd >= 0)
		close(r->video_fd);
	if (r->jsonl_fd >= 0)
		close(r->jsonl_fd);
	for (size_t i = 0; i < r->n_lines; i++)
		free(r->lines[i].text);
	free(r->lines);
	free(r->pending);
	avcodec_free_context(&r->enc);
	avformat_free_context(r->fmt);
	av_frame_free(&r->converted);
	av_packet_free(&r->pkt);
	*r = (struct recording){.video_fd = -1, .jsonl_fd = -1};
}

/* Flush the encoder, finish the file properly and close it: 0, else
 * -EIO when writing failed (rec is stalled then), -1 after another error. */
static int finish_recording(struct recorder *rec)
{
	struct recording *r = &rec->cur;
	int e;

	if (!r->fmt)
		return 0;
	if (!r->started) { /* open_recording() failed, and said why */
		close_recording(rec);
		return 0;
	}
	avcodec_send_frame(r->enc, NULL);
	e = drain(rec);
	if (e >= 0)
		e = end_fragment(rec); /* creates the files, for the trailer's seeks */
	if (e >= 0 && r->video_fd >= 0) {
		e = av_write_trailer(r->fmt);
		if (e >= 0) {
			avio_flush(r->fmt->pb);
			e = r->fmt->pb->error;
		}
		if (e < 0) {
			e = write_failed(rec, r->path, AVUNERROR(e));
		} else {
			e = commit(rec);
		}
	}
	if (e < 0 && r->broken) {
		stall(rec);
		e = -EIO;
	} else if (e < 0)
		e = -1;
	close_recording(rec);
	return e;
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
	int64_t pts = av_rescale_q((int64_t)(frame_time_ns(f) - r->first_ns),
				   (AVRational){1, 1000000000}, time_base);
	AVFrame *av;
	int e;

	/* Frames closer than the container can tell apart (Matroska counts
	 * milliseconds) are moved apart. */
	if (r->last_pts >= 0 && pts < r->last_pts + r->pts_step)
		pts = r->last_pts + r->pts_step;
	r->last_pts = pts;
	/* Its sidecar line, kept until the frame is committed to the file. */
	if (r->n_lines == r->lines_size) {
		size_t size = r->lines_size ? 2 * r->lines_size : 64;
		struct line *lines = realloc(r->lines, size * sizeof(*lines));
		if (!lines) {
			fb_subscriber_release(rec->ring->sub, f);
			return -ENOMEM;
		}
		r->lines = lines;
		r->lines_size = size;
	}
	struct line *line = &r->lines[r->n_lines];
	*line = (struct line){.pts = pts};
	FILE *out = open_memstream(&line->text, &line->len);
	if (!out) {
		fb_subscriber_release(rec->ring->sub, f);
		return -ENOMEM;
	}
	fprintf(out,
		"{\"frame\":%llu,\"seq\":%llu,\"source_seq\":%llu,\"pts\":%lld,\"file_pts\":%lld,"
		"\"monotonic_ns\":%llu,\"realtime_ns\":%llu,\"latency_us\":%.1f,",
		(unsigned long long)r->frames, (unsigned long long)f->seq,
		(unsigned long long)f->source_seq, (long long)f->pts, (long long)pts,
		(unsigned long long)f->monotonic_ns, (unsigned long long)f->realtime_ns,
		(double)(fb_now_ns() - f->monotonic_ns) / 1e3);
	json_meta(out, f->meta, f->meta_size);
	/* Where the picture comes from: the first stream it passed (itself if
	 * none) and when it was captured (docs/tracing.md). */
	const struct fb_trace *t = f->trace;
	const char *origin = t->n_hops ? t->hops[0].stream : rec->opt.stream;
	fputs(",\"origin\":[", out);
	json_text(out, (const uint8_t *)origin, strnlen(origin, FB_NAME_MAX));
	fprintf(out, ",%llu],\"capture_ns\":%llu,\"capture_realtime_ns\":%llu}\n",
		(unsigned long long)(t->n_hops ? t->hops[0].seq : f->seq),
		(unsigned long long)t->capture_ns, (unsigned long long)t->capture_realtime_ns);
	if (fclose(out) != 0) {
		free(line->text);
		fb_subscriber_release(rec->ring->sub, f);
		return -ENOMEM;
	}
	r->n_lines++;

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
	rec->frames++;
	return drain(rec);
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
			if (rec->cur.fmt && end_fragment(rec) < 0 && rec->cur.broken) {
				stall(rec);
				close_recording(rec);
			}
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
			start_ns = frame_time_ns(f);
		if (rec->opt.duration_s > 0 && (int64_t)(frame_time_ns(f) - start_ns) >=
						   (int64_t)(rec->opt.duration_s * 1e9)) {
			fb_subscriber_release(rec->ring->sub, f);
			return "the duration was reached";
		}
		if (rec->cur.fmt && rec->opt.segment_s > 0 &&
		    (int64_t)(frame_time_ns(f) - rec->cur.first_ns) >=
			(int64_t)(rec->opt.segment_s * 1e9) &&
		    finish_recording(rec) == -1) {
			fb_subscriber_release(rec->ring->sub, f);
			*ret_status = 1;
			return "a file could not be finished";
		}
		if (!rec->cur.fmt && rec->stalled && fb_now_ns() < rec->retry_ns) {
			fb_subscriber_release(rec->ring->sub, f);
			rec->skipped++;
			rec->stall_skipped++;
			continue;
		}
		if (!rec->cur.fmt && open_recording(rec, f) < 0) {
			fb_subscriber_release(rec->ring->sub, f);
			*ret_status = 1;
			return "a file could not be started";
		}
		if (record_frame(rec, f) < 0) {
			if (!rec->cur.broken) {
				*ret_status = 1;
				return "a frame could not be recorded";
			}
			stall(rec);
			close_recording(rec);
			continue;
		}
		if (rec->frames == rec->opt.max_frames)
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
	rec.frame_ticks = av_rescale_q(1, av_inv_q(rec.fps), time_base);
	/* Capture times jitter: a fragment may fall short by a frame and a half. */
	rec.fragment_ticks =
	    (int64_t)(rec.opt.fragment_s * time_base.den) - 3 * rec.frame_ticks / 2;
	if (rec.fragment_ticks < 1)
		rec.fragment_ticks = 1;
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
	fprintf(stderr, "framebus-record: recording %s (%ux%u %s) with %s%s%s\n", rec.opt.stream,
		rec.layout.width, rec.layout.height, fb_format_name(rec.layout.format),
		rec.codec->name, rec.sws ? ", converted to " : "",
		rec.sws ? av_get_pix_fmt_name(rec.enc_fmt) : "");

	const char *why = run(&rec, &status);
	if (finish_recording(&rec) < 0 || rec.stalled)
		status = 1; /* it ended with frames it could not write */
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
