/* SPDX-License-Identifier: MIT */
/* framebusctl: look at and into a running framebusd. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libavcodec/avcodec.h>
#include <libswscale/swscale.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "framebus/framebus.h"
#include "pixfmt.h"

static const char *socket_path;

static void usage(FILE *out)
{
	fprintf(out,
		"usage: framebusctl [--socket PATH] COMMAND\n"
		"  status [--json]                 every stream: state, geometry, fps, drops,\n"
		"                                  subscribers, their lag, wait and busy times\n"
		"  top [--once | --json] [--interval S]\n"
		"                                  every stream and subscriber, refreshed every\n"
		"                                  S seconds (default 1) until 'q' or ^C\n"
		"  trace STREAM [--frames N] [--json] [--plot FILE.png]\n"
		"                                  N frames' way from capture to here, hop by\n"
		"                                  hop (default 20), and the stream's consumers\n"
		"  snapshot STREAM FILE.png        save the stream's newest frame as PNG\n"
		"  watch STREAM [--seconds N] [--queue]\n"
		"                                  subscribe and print fps, latency and losses\n"
		"                                  every second (N = 0: until interrupted); a\n"
		"                                  results stream: each record as it comes\n"
		"  output add NAME STREAM URL [KEY=VALUE...] [--dir DIR]\n"
		"                                  send STREAM to URL through framebus-output\n"
		"                                  (KEY: encoder, bitrate, gop, fps, format, "
		"option.X,\n"
		"                                  output_option.X, stall_timeout, retry_max)\n"
		"                                  and print its first state\n"
		"  output remove NAME [--dir DIR]  end an output added so\n"
		"The socket is PATH, else $FRAMEBUS_SOCKET, else " FB_DEFAULT_SOCKET ".\n");
}

static fb_client *connect_or_die(void)
{
	fb_client *c;
	int r = fb_client_connect(socket_path, "framebusctl", &c);
	if (r < 0) {
		const char *path = socket_path                 ? socket_path
				   : getenv("FRAMEBUS_SOCKET") ? getenv("FRAMEBUS_SOCKET")
							       : FB_DEFAULT_SOCKET;
		fprintf(stderr, "framebusctl: cannot connect to framebusd at %s: %s\n", path,
			fb_strerror(r));
		exit(1);
	}
	return c;
}

/* Connect and subscribe to stream with one hold; NULL (having said why)
 * if either fails. */
static fb_client *subscribe_or_say_why(const char *cmd, const char *stream, uint32_t mode,
				       fb_subscriber **ret_sub)
{
	fb_client *c = connect_or_die();
	int r = fb_client_subscribe(c, stream, mode, 1, ret_sub);
	if (r < 0) {
		fprintf(stderr, "framebusctl: %s: %s: %s\n", cmd, stream,
			fb_client_last_error(c)[0] ? fb_client_last_error(c) : fb_strerror(r));
		fb_client_free(c);
		return NULL;
	}
	return c;
}

static void json_string_to(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(out, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(out, "\\u%04x", *s);
		else
			fputc(*s, out);
	}
	fputc('"', out);
}

static void json_string(const char *s)
{
	json_string_to(stdout, s);
}

/* Every stream with its subscriptions, as fb_client_inspect() gives them. */
struct snapshot {
	size_t n;
	struct fb_stream_info *streams;
	struct fb_subscription_info **subs;
	size_t *n_subs;
};

static void snapshot_free(struct snapshot *snap)
{
	for (size_t i = 0; i < snap->n; i++)
		free(snap->subs ? snap->subs[i] : NULL);
	free(snap->subs);
	free(snap->n_subs);
	free(snap->streams);
	*snap = (struct snapshot){0};
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct fb_stream_info *)a)->name,
		      ((const struct fb_stream_info *)b)->name);
}

/* Every stream, by name: a stream derived or processed from another
 * (cam0.gray, cam0~640x360.rgb24) comes right after it. */
static int snapshot_take(fb_client *c, struct snapshot *snap)
{
	struct fb_stream_info *list;
	size_t n;
	int r = fb_client_list_streams(c, &list, &n);
	if (r < 0)
		return r;
	qsort(list, n, sizeof(list[0]), by_name);
	*snap = (struct snapshot){.n = n,
				  .streams = list,
				  .subs = calloc(n ? n : 1, sizeof(*snap->subs)),
				  .n_subs = calloc(n ? n : 1, sizeof(*snap->n_subs))};
	if (!snap->subs || !snap->n_subs) {
		snapshot_free(snap);
		return -ENOMEM;
	}
	/* A stream that went since the list is left as listed. */
	for (size_t i = 0; i < n; i++)
		if (fb_client_inspect(c, list[i].name, &list[i], &snap->subs[i],
				      &snap->n_subs[i]) == -ECONNRESET) {
			snapshot_free(snap);
			return -ECONNRESET;
		}
	return 0;
}

static const char *mode_name(uint32_t mode)
{
	return mode == FB_MODE_QUEUE ? "queue" : "latest";
}

/* snap as JSON; with the limits in force, if limits is not NULL. */
static void print_json(const struct snapshot *snap, const struct fb_limits *limits)
{
	printf("{");
	if (limits)
		printf("\"limits\": {\"uid\": %u, \"exempt\": %s, \"max_clients\": %u, "
		       "\"max_subscriptions_per_client\": %u, \"max_streams_per_client\": %u, "
		       "\"max_ring_memory_per_client\": %llu, \"default_max_holds\": %u, "
		       "\"max_derived_per_client\": %u, \"max_derived_memory\": %llu, "
		       "\"max_connections_per_user\": %u, \"max_subscriptions_per_user\": %u, "
		       "\"max_streams_per_user\": %u, \"max_memory_per_user\": %llu, "
		       "\"connections\": %u, \"subscriptions\": %u, \"streams\": %u, "
		       "\"memory\": %llu},\n ",
		       limits->uid, limits->exempt ? "true" : "false", limits->max_clients,
		       limits->max_subscriptions_per_client, limits->max_streams_per_client,
		       (unsigned long long)limits->max_ring_memory_per_client,
		       limits->default_max_holds, limits->max_derived_per_client,
		       (unsigned long long)limits->max_derived_memory,
		       limits->max_connections_per_user, limits->max_subscriptions_per_user,
		       limits->max_streams_per_user,
		       (unsigned long long)limits->max_memory_per_user, limits->connections,
		       limits->subscriptions, limits->streams, (unsigned long long)limits->memory);
	printf("\"streams\": [");
	for (size_t i = 0; i < snap->n; i++) {
		const struct fb_stream_info *s = &snap->streams[i];
		printf("%s\n  {\"name\": ", i ? "," : "");
		json_string(s->name);
		printf(", \"source\": ");
		json_string(s->source);
		printf(", \"state\": \"%s\", \"width\": %u, \"height\": %u, \"format\": \"%s\", "
		       "\"slots\": %u, \"policy\": \"%s\", \"meta_max\": %u, \"fps\": %.2f, "
		       "\"fps_10s\": %.2f, "
		       "\"published\": %llu, \"dropped\": %llu, \"retries\": %u, "
		       "\"capture_latency_us\": %u, \"capture_age_us\": %u, \"stalls\": %u, "
		       "\"block_timeout_ms\": %u, \"holds_promised\": %u, ",
		       fb_stream_state_name(s->state), s->width, s->height,
		       s->format ? fb_format_name(s->format) : "", s->slots,
		       s->policy == FB_POLICY_BLOCK ? "block" : "drop", s->meta_max, s->fps,
		       (double)s->fps_10s, (unsigned long long)s->published,
		       (unsigned long long)s->dropped, s->retries, s->capture_latency_us,
		       s->capture_age_us, s->stalls, s->block_timeout_ms, s->holds_promised);
		if (s->flags & FB_STREAM_DERIVED)
			printf("\"parent_skipped_busy\": %llu, \"parent_skipped_rate\": %llu, ",
			       (unsigned long long)s->parent_skipped_busy,
			       (unsigned long long)s->parent_skipped_rate);
		printf("\"detail\": ");
		json_string(s->detail);
		printf(", \"subscribers\": [");
		for (size_t j = 0; j < snap->n_subs[i]; j++) {
			const struct fb_subscription_info *u = &snap->subs[i][j];
			printf("%s{\"id\": %u, \"client\": ", j ? ", " : "", u->id);
			json_string(u->client);
			if (u->flags & FB_SUBSCRIPTION_UID)
				printf(", \"uid\": %u", u->uid);
			printf(", \"stalled\": %s",
			       u->flags & FB_SUBSCRIPTION_STALLED ? "true" : "false");
			printf(
			    ", \"mode\": \"%s\", \"fps\": %.2f, \"fps_10s\": %.2f, \"frames\": "
			    "%llu, "
			    "\"held\": %u, \"lag\": %llu, \"missed\": %llu, \"wait_p50_us\": %u, "
			    "\"wait_p99_us\": %u, \"busy_p50_us\": %u, \"busy_p99_us\": %u}",
			    mode_name(u->mode), u->fps, u->fps_10s, (unsigned long long)u->frames,
			    u->held, (unsigned long long)u->lag, (unsigned long long)u->missed,
			    u->wait_p50_us, u->wait_p99_us, u->busy_p50_us, u->busy_p99_us);
		}
		printf("]}");
	}
	printf("%s]}\n", snap->n ? "\n" : "");
}

/* Bytes as the configuration writes them: 2G, 256M, 64K, or bytes. */
static void print_size(uint64_t bytes)
{
	static const char units[] = "KMG";
	int u = -1;
	while (u < 2 && bytes >= 1024 && bytes % 1024 == 0) {
		bytes /= 1024;
		u++;
	}
	printf("%llu%s", (unsigned long long)bytes, u < 0 ? " bytes" : (char[]){units[u], 0});
}

/* The limits in force, and this user's use of the per-user ones. */
static void print_limits(const struct fb_limits *l)
{
	printf("limits: per user (uid %u%s) %u of %u connections, %u of %u subscriptions, "
	       "%u of %u streams, ",
	       l->uid, l->exempt ? ", exempt: root or framebusd's user" : "", l->connections,
	       l->max_connections_per_user, l->subscriptions, l->max_subscriptions_per_user,
	       l->streams, l->max_streams_per_user);
	print_size(l->memory);
	printf(" of ");
	print_size(l->max_memory_per_user);
	printf(" of rings\n        per client %u subscriptions, %u streams, ",
	       l->max_subscriptions_per_client, l->max_streams_per_client);
	print_size(l->max_ring_memory_per_client);
	printf(" of rings, %u derived streams; %u clients; %u holds by default\n",
	       l->max_derived_per_client, l->max_clients, l->default_max_holds);
}

static int cmd_status(int argc, char **argv)
{
	bool json = argc > 1 && !strcmp(argv[1], "--json");
	struct snapshot snap;

	if (argc > (json ? 2 : 1)) {
		usage(stderr);
		return 2;
	}
	fb_client *c = connect_or_die();
	struct fb_limits limits;
	int r = fb_client_get_limits(c, &limits);
	if (r == 0)
		r = snapshot_take(c, &snap);
	if (r < 0) {
		fprintf(stderr, "framebusctl: status: %s\n", fb_strerror(r));
		fb_client_free(c);
		return 1;
	}
	if (json)
		print_json(&snap, &limits);
	else
		print_limits(&limits);
	for (size_t i = 0; !json && i < snap.n; i++) {
		const struct fb_stream_info *s = &snap.streams[i];
		printf("%s: %s", s->name, fb_stream_state_name(s->state));
		if (s->detail[0])
			printf(" (%s)", s->detail);
		printf("\n  source     %s\n", s->source);
		if (s->format == FB_FORMAT_RESULTS)
			printf("  records    results of up to %u bytes, %u slots, %s\n",
			       s->meta_max, s->slots,
			       s->policy == FB_POLICY_BLOCK ? "block" : "drop");
		else if (s->width)
			printf("  frames     %ux%u %s, %u slots, %s\n", s->width, s->height,
			       fb_format_name(s->format), s->slots,
			       s->policy == FB_POLICY_BLOCK ? "block" : "drop");
		printf("  rate       %.1f fps in (%.1f over 10 s), %llu published, %llu dropped\n",
		       s->fps, (double)s->fps_10s, (unsigned long long)s->published,
		       (unsigned long long)s->dropped);
		if (s->flags & FB_STREAM_DERIVED)
			printf(
			    "  skipped    %llu parent frames while busy, %llu by its fps limit\n",
			    (unsigned long long)s->parent_skipped_busy,
			    (unsigned long long)s->parent_skipped_rate);
		if (s->capture_latency_us)
			printf("  newest     captured %.1f ms before its publish, %.1f ms ago\n",
			       s->capture_latency_us / 1e3, s->capture_age_us / 1e3);
		if (s->retries)
			printf("  retries    %u\n", s->retries);
		if (s->policy == FB_POLICY_BLOCK)
			printf("  limits     block_timeout %.1f s, holds %u promised\n",
			       s->block_timeout_ms / 1e3, s->holds_promised);
		else if (s->slots)
			printf("  limits     holds %u promised (users but root and framebusd's "
			       "get %u in all)\n",
			       s->holds_promised, s->slots - 1);
		if (s->stalls)
			printf("  stalls     %u (queue subscribers that kept it waiting past "
			       "block_timeout)\n",
			       s->stalls);
		printf("  subscribers %zu\n", snap.n_subs[i]);
		for (size_t j = 0; j < snap.n_subs[i]; j++) {
			const struct fb_subscription_info *u = &snap.subs[i][j];
			char uid[24] = "";
			if (u->flags & FB_SUBSCRIPTION_UID)
				snprintf(uid, sizeof(uid), "uid %u", u->uid);
			printf("    #%u %-24s %-9s %-6s %5.1f fps, held %u, lag %llu, missed %llu, "
			       "wait p50 %.2f ms, busy p50 %.2f ms%s\n",
			       u->id, u->client, uid, mode_name(u->mode), u->fps, u->held,
			       (unsigned long long)u->lag, (unsigned long long)u->missed,
			       u->wait_p50_us / 1e3, u->busy_p50_us / 1e3,
			       u->flags & FB_SUBSCRIPTION_STALLED ? ", stalled" : "");
		}
	}
	if (!json && snap.n == 0)
		printf("no streams\n");
	snapshot_free(&snap);
	fb_client_free(c);
	return 0;
}

/* Encode frame as a PNG file with libavcodec. */
static int write_png(const struct fb_frame *f, const struct fb_layout *l, const char *path)
{
	const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
	AVCodecContext *enc = codec ? avcodec_alloc_context3(codec) : NULL;
	AVFrame *rgb = av_frame_alloc();
	AVPacket *pkt = av_packet_alloc();
	struct SwsContext *sws = NULL;
	FILE *out = NULL;
	int r = -ENOMEM;

	if (!enc || !rgb || !pkt)
		goto out;
	enc->width = (int)l->width;
	enc->height = (int)l->height;
	enc->pix_fmt = l->format == FB_FORMAT_GRAY8 ? AV_PIX_FMT_GRAY8 : AV_PIX_FMT_RGB24;
	enc->time_base = (AVRational){1, 25};
	r = avcodec_open2(enc, codec, NULL);
	if (r < 0)
		goto out;
	rgb->format = enc->pix_fmt;
	rgb->width = enc->width;
	rgb->height = enc->height;
	r = av_frame_get_buffer(rgb, 0);
	if (r < 0)
		goto out;
	sws = sws_getContext((int)l->width, (int)l->height, fb_av_pixel_format(l->format),
			     enc->width, enc->height, enc->pix_fmt, SWS_POINT, NULL, NULL, NULL);
	if (!sws) {
		r = -EINVAL;
		goto out;
	}
	int strides[4] = {0};
	for (int i = 0; i < 4; i++)
		strides[i] = (int)f->stride[i];
	sws_scale(sws, (const uint8_t *const *)f->data, strides, 0, (int)l->height, rgb->data,
		  rgb->linesize);
	r = avcodec_send_frame(enc, rgb);
	if (r >= 0)
		r = avcodec_send_frame(enc, NULL);
	if (r >= 0)
		r = avcodec_receive_packet(enc, pkt);
	if (r < 0)
		goto out;
	out = fopen(path, "we");
	if (!out || fwrite(pkt->data, 1, (size_t)pkt->size, out) != (size_t)pkt->size) {
		r = -errno;
		goto out;
	}
	r = fclose(out) == 0 ? 0 : -errno;
	out = NULL;
out:
	if (out)
		fclose(out);
	sws_freeContext(sws);
	av_packet_free(&pkt);
	av_frame_free(&rgb);
	avcodec_free_context(&enc);
	return r;
}

static int cmd_snapshot(int argc, char **argv)
{
	const struct fb_frame *f;
	fb_subscriber *sub;
	fb_client *c;
	int r;

	if (argc != 3) {
		usage(stderr);
		return 2;
	}
	c = connect_or_die();
	r = fb_client_subscribe(c, argv[1], FB_MODE_LATEST, 1, &sub);
	if (r < 0) {
		fprintf(stderr, "framebusctl: %s: %s\n", argv[1],
			fb_client_last_error(c)[0] ? fb_client_last_error(c) : fb_strerror(r));
		fb_client_free(c);
		return 1;
	}
	if (fb_subscriber_get_layout(sub)->format == FB_FORMAT_RESULTS) {
		fprintf(stderr,
			"framebusctl: %s is a results stream: it has no picture (watch prints its "
			"records)\n",
			argv[1]);
		r = -EINVAL;
	} else if ((r = fb_subscriber_acquire(sub, 5000, &f)) < 0) {
		fprintf(stderr, "framebusctl: %s: no frame: %s\n", argv[1], fb_strerror(r));
	} else {
		r = write_png(f, fb_subscriber_get_layout(sub), argv[2]);
		if (r < 0)
			fprintf(stderr, "framebusctl: cannot write %s: %s\n", argv[2],
				r < -4096 ? av_err2str(r) : fb_strerror(r));
		else
			printf("%s: frame %llu, %ux%u, saved to %s\n", argv[1],
			       (unsigned long long)f->seq, fb_subscriber_get_layout(sub)->width,
			       fb_subscriber_get_layout(sub)->height, argv[2]);
		fb_subscriber_release(sub, f);
	}
	fb_client_unsubscribe(c, sub);
	fb_client_free(c);
	return r < 0 ? 1 : 0;
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* A results stream's record as a line: which picture it is about, how old
 * that picture is, and the record, its bytes outside printable ASCII as \xNN. */
static void print_record(const char *stream, const struct fb_frame *f)
{
	const struct fb_trace *t = f->trace;
	uint64_t now = fb_now_ns();

	printf("%s #%llu", stream, (unsigned long long)f->seq);
	if (t->n_hops)
		printf(" from %s #%llu", t->hops[t->n_hops - 1].stream,
		       (unsigned long long)t->hops[t->n_hops - 1].seq);
	if (t->capture_ns && t->capture_ns <= now)
		printf(", captured %.1f ms ago", (double)(now - t->capture_ns) / 1e6);
	printf(": ");
	for (uint32_t i = 0; i < f->meta_size; i++) {
		uint8_t b = f->meta[i];
		if (b >= 0x20 && b < 0x7f && b != '\\')
			putchar(b);
		else
			printf("\\x%02x", b);
	}
	putchar('\n');
	fflush(stdout);
}

static int cmd_watch(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"seconds", required_argument, NULL, 'n'},
	    {"queue", no_argument, NULL, 'q'},
	    {0},
	};
	double seconds = 0;
	uint32_t mode = FB_MODE_LATEST;
	int ch;

	optind = 0; /* GNU getopt: start over, from argv[1] */
	while ((ch = getopt_long(argc, argv, "n:q", longopts, NULL)) != -1) {
		if (ch == 'n')
			seconds = strtod(optarg, NULL);
		else if (ch == 'q')
			mode = FB_MODE_QUEUE;
		else {
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[optind];
	fb_subscriber *sub;
	fb_client *c = subscribe_or_say_why("watch", name, mode, &sub);
	if (!c)
		return 1;
	int r = 0;
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	bool records = l->format == FB_FORMAT_RESULTS;
	if (records)
		printf("watching %s: results, %s mode\n", name,
		       mode == FB_MODE_QUEUE ? "queue" : "latest");
	else
		printf("watching %s: %ux%u %s, %s mode\n", name, l->width, l->height,
		       fb_format_name(l->format), mode == FB_MODE_QUEUE ? "queue" : "latest");
	fflush(stdout); /* subscribed: a reader on a pipe may go on */
	signal(SIGINT, on_interrupt);
	signal(SIGTERM, on_interrupt);

	uint64_t start = fb_now_ns(), tick = start, frames = 0, missed = 0, total = 0;
	uint64_t lat[4096];
	size_t n_lat = 0;
	while (!interrupted && (seconds <= 0 || fb_now_ns() - start < (uint64_t)(seconds * 1e9))) {
		const struct fb_frame *f;
		r = fb_subscriber_acquire(sub, 200, &f);
		if (r == 0) {
			uint64_t t = fb_now_ns();
			if (n_lat < sizeof(lat) / sizeof(lat[0]))
				lat[n_lat++] = t - f->monotonic_ns;
			frames++;
			total++;
			missed += f->missed;
			if (records)
				print_record(name, f);
			fb_subscriber_release(sub, f);
		} else if (r != -ETIMEDOUT && r != -EINTR) {
			fprintf(stderr, "framebusctl: %s: %s\n", name, fb_strerror(r));
			break;
		}
		if (fb_client_process(c) == -ECONNRESET) {
			fprintf(stderr, "framebusctl: the daemon went away\n");
			r = -ECONNRESET;
			break;
		}
		uint64_t now = fb_now_ns();
		if (!records && now - tick >= 1000000000u) {
			qsort(lat, n_lat, sizeof(lat[0]), cmp_u64);
			printf("%s: %5.1f fps  latency p50 %6.1f us  max %7.1f us  skipped %llu  "
			       "total %llu\n",
			       name, frames * 1e9 / (double)(now - tick),
			       n_lat ? lat[n_lat / 2] / 1000.0 : 0.0,
			       n_lat ? lat[n_lat - 1] / 1000.0 : 0.0, (unsigned long long)missed,
			       (unsigned long long)total);
			fflush(stdout);
			tick = now;
			frames = missed = 0;
			n_lat = 0;
		}
		r = 0;
	}
	fb_client_unsubscribe(c, sub);
	fb_client_free(c);
	return r < 0 ? 1 : 0;
}

/* Milliseconds with one decimal, or "-" for unknown (0). */
static const char *ms(char *buf, size_t size, uint32_t us)
{
	if (!us)
		return "-";
	snprintf(buf, size, "%.1f", us / 1e3);
	return buf;
}

/* One screen of top: every stream, and under each its subscribers. */
static void print_top(const struct snapshot *snap, FILE *out)
{
	char a[16], b[16], when[32];
	size_t subs = 0;
	time_t now = time(NULL);
	for (size_t i = 0; i < snap->n; i++)
		subs += snap->n_subs[i];
	strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
	fprintf(out, "framebus top  %s  %zu streams, %zu subscribers\n\n", when, snap->n, subs);
	fprintf(out, "%-22s %-9s %7s %7s %10s %8s %9s %8s\n", "STREAM", "STATE", "FPS", "10s",
		"PUBLISHED", "DROPPED", "CAPT>PUB", "AGE");
	for (size_t i = 0; i < snap->n; i++) {
		const struct fb_stream_info *s = &snap->streams[i];
		fprintf(out, "%-22.22s %-9s %7.1f %7.1f %10llu %8llu %9s %8s\n", s->name,
			fb_stream_state_name(s->state), s->fps, (double)s->fps_10s,
			(unsigned long long)s->published, (unsigned long long)s->dropped,
			ms(a, sizeof(a), s->capture_latency_us),
			ms(b, sizeof(b), s->capture_age_us));
		if (snap->n_subs[i])
			fprintf(out, "  %-24s %-6s %7s %7s %6s %7s %4s %13s %13s\n", "SUBSCRIBER",
				"MODE", "FPS", "10s", "LAG", "MISSED", "HELD", "WAIT p50/p99",
				"BUSY p50/p99");
		for (size_t j = 0; j < snap->n_subs[i]; j++) {
			const struct fb_subscription_info *u = &snap->subs[i][j];
			char w[32], bz[32];
			snprintf(w, sizeof(w), "%.1f/%.1f", u->wait_p50_us / 1e3,
				 u->wait_p99_us / 1e3);
			snprintf(bz, sizeof(bz), "%.1f/%.1f", u->busy_p50_us / 1e3,
				 u->busy_p99_us / 1e3);
			fprintf(out, "  %-24.24s %-6s %7.1f %7.1f %6llu %7llu %4u %13s %13s\n",
				u->client, mode_name(u->mode), u->fps, u->fps_10s,
				(unsigned long long)u->lag, (unsigned long long)u->missed, u->held,
				w, bz);
		}
	}
	if (!snap->n)
		fprintf(out, "no streams\n");
	fprintf(out, "\ntimes in ms: CAPT>PUB newest frame from capture to publish, AGE since "
		     "capture; WAIT publish to acquire, BUSY acquire to release (last 10 s)\n");
}

static int cmd_top(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"once", no_argument, NULL, 'o'},
	    {"json", no_argument, NULL, 'j'},
	    {"interval", required_argument, NULL, 'i'},
	    {0},
	};
	bool once = false, json = false;
	double interval = 1.0;
	int ch;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "oji:", longopts, NULL)) != -1) {
		if (ch == 'o')
			once = true;
		else if (ch == 'j')
			json = once = true;
		else if (ch == 'i' && (interval = strtod(optarg, NULL)) >= 0.1)
			continue;
		else {
			if (ch == 'i')
				fprintf(stderr, "framebusctl: top: --interval %s: at least 0.1 s\n",
					optarg);
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	fb_client *c = connect_or_die();
	/* Full screen on a terminal: its alternate screen, no echo, 'q' quits. */
	bool screen = !once && isatty(STDOUT_FILENO);
	struct termios saved;
	bool keys = screen && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
	if (keys) {
		struct termios raw = saved;
		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
	}
	if (screen)
		fputs("\033[?1049h\033[?25l", stdout);
	signal(SIGINT, on_interrupt);
	signal(SIGTERM, on_interrupt);
	int r = 0;
	while (!interrupted) {
		struct snapshot snap;
		r = snapshot_take(c, &snap);
		if (r < 0)
			break;
		if (json)
			print_json(&snap, NULL);
		else {
			if (screen)
				fputs("\033[H\033[2J", stdout);
			print_top(&snap, stdout);
		}
		fflush(stdout);
		snapshot_free(&snap);
		if (once)
			break;
		struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
		if (poll(&pfd, keys ? 1 : 0, (int)(interval * 1000)) == 1) {
			char key = 0;
			if (read(STDIN_FILENO, &key, 1) == 1 && (key == 'q' || key == 'Q'))
				break;
		}
	}
	if (screen)
		fputs("\033[?25h\033[?1049l", stdout);
	if (keys)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	fb_client_free(c);
	if (r < 0) {
		fprintf(stderr, "framebusctl: top: %s\n", fb_strerror(r));
		return 1;
	}
	return 0;
}

/* trace: the points of one frame's path, from its capture to this process:
 * capture, decode, each stream it passed, the stream traced, here. */
#define TRACE_POINTS (2 + FB_TRACE_HOPS + 2)

struct traced {
	uint64_t seq;
	char origin[FB_NAME_MAX + 1];
	uint64_t origin_seq;
	uint32_t n; /* points */
	char names[TRACE_POINTS][FB_NAME_MAX + 1];
	uint64_t ns[TRACE_POINTS]; /* CLOCK_MONOTONIC, 0: unknown */
};

static void trace_frame(const char *stream, const struct fb_frame *f, uint64_t here,
			struct traced *ret)
{
	const struct fb_trace *t = f->trace;
	uint32_t hops = t->n_hops < FB_TRACE_HOPS ? t->n_hops : FB_TRACE_HOPS;
	struct traced r = {.seq = f->seq, .origin_seq = hops ? t->hops[0].seq : f->seq};
	snprintf(r.origin, sizeof(r.origin), "%.*s", FB_NAME_MAX,
		 hops ? t->hops[0].stream : stream);
	const char *names[TRACE_POINTS] = {"capture", "decode"};
	uint64_t ns[TRACE_POINTS] = {t->capture_ns, t->decode_ns};
	uint32_t n = 2;
	for (uint32_t i = 0; i < hops; i++, n++) {
		names[n] = t->hops[i].stream;
		ns[n] = t->hops[i].publish_ns;
	}
	names[n] = stream;
	ns[n++] = f->monotonic_ns;
	names[n] = "here";
	ns[n++] = here;
	for (uint32_t i = 0; i < n; i++) {
		snprintf(r.names[i], sizeof(r.names[i]), "%.*s", FB_NAME_MAX, names[i]);
		r.ns[i] = ns[i];
	}
	r.n = n;
	*ret = r;
}

/* Whether two frames went the same way (same streams in the same order). */
static bool same_path(const struct traced *a, const struct traced *b)
{
	if (a->n != b->n)
		return false;
	for (uint32_t i = 0; i < a->n; i++)
		if (strcmp(a->names[i], b->names[i]))
			return false;
	return true;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Milliseconds from point i - 1 to point i of a frame, < 0: unknown. */
static double segment_ms(const struct traced *t, uint32_t i)
{
	return t->ns[i - 1] && t->ns[i] >= t->ns[i - 1] ? (t->ns[i] - t->ns[i - 1]) / 1e6 : -1;
}

static void print_trace_json(FILE *out, const char *stream, const struct traced *frames, size_t n,
			     const struct fb_subscription_info *subs, size_t n_subs)
{
	fprintf(out, "{\"stream\": ");
	json_string_to(out, stream);
	fprintf(out, ", \"frames\": [");
	for (size_t i = 0; i < n; i++) {
		fprintf(out, "%s\n  {\"seq\": %llu, \"origin\": [", i ? "," : "",
			(unsigned long long)frames[i].seq);
		json_string_to(out, frames[i].origin);
		fprintf(out, ", %llu], \"points\": [", (unsigned long long)frames[i].origin_seq);
		for (uint32_t p = 0; p < frames[i].n; p++) {
			fprintf(out, "%s[", p ? ", " : "");
			json_string_to(out, frames[i].names[p]);
			fprintf(out, ", %llu]", (unsigned long long)frames[i].ns[p]);
		}
		fprintf(out, "]}");
	}
	fprintf(out, "%s], \"consumers\": [", n ? "\n" : "");
	for (size_t j = 0; j < n_subs; j++) {
		fprintf(out, "%s{\"client\": ", j ? ", " : "");
		json_string_to(out, subs[j].client);
		fprintf(out,
			", \"mode\": \"%s\", \"wait_p50_us\": %u, \"wait_p99_us\": %u, "
			"\"busy_p50_us\": %u, \"busy_p99_us\": %u}",
			mode_name(subs[j].mode), subs[j].wait_p50_us, subs[j].wait_p99_us,
			subs[j].busy_p50_us, subs[j].busy_p99_us);
	}
	fprintf(out, "]}\n");
}

static void print_trace_table(const char *stream, const struct traced *frames, size_t n,
			      const struct fb_subscription_info *subs, size_t n_subs)
{
	const struct traced *first = &frames[0];
	size_t same = 0;
	printf("trace %s: %zu frames, from capture to here, in ms\n\n%-8s %-22s", stream, n, "SEQ",
	       "ORIGIN");
	for (uint32_t p = 1; p < first->n; p++) {
		char head[40];
		snprintf(head, sizeof(head), ">%.16s", first->names[p]);
		printf(" %12s", head);
	}
	printf(" %9s\n", "TOTAL");
	double *seg = calloc(n * TRACE_POINTS, sizeof(*seg));
	for (size_t i = 0; seg && i < n; i++) {
		const struct traced *t = &frames[i];
		if (!same_path(first, t)) {
			printf("%-8llu (another path: %u points)\n", (unsigned long long)t->seq,
			       t->n);
			continue;
		}
		char origin[40];
		snprintf(origin, sizeof(origin), "%.14s/%llu", t->origin,
			 (unsigned long long)t->origin_seq);
		printf("%-8llu %-22s", (unsigned long long)t->seq, origin);
		for (uint32_t p = 1; p < t->n; p++) {
			double ms = segment_ms(t, p);
			seg[(p - 1) * n + same] = ms;
			if (ms < 0)
				printf(" %12s", "-");
			else
				printf(" %12.3f", ms);
		}
		uint32_t from = t->ns[0] ? 0 : 1;
		printf(" %9.3f\n", (t->ns[t->n - 1] - t->ns[from]) / 1e6);
		same++;
	}
	for (int q = 0; seg && same && q < 2; q++) {
		printf("%-8s %-22s", q ? "p99" : "p50", "");
		for (uint32_t p = 1; p < first->n; p++) {
			double *col = &seg[(p - 1) * n];
			qsort(col, same, sizeof(*col), cmp_double);
			double v = col[q ? (same * 99) / 100 : same / 2];
			if (v < 0)
				printf(" %12s", "-");
			else
				printf(" %12.3f", v);
		}
		printf("\n");
	}
	free(seg);
	printf("\nconsumers of %s (last 10 s):\n", stream);
	for (size_t j = 0; j < n_subs; j++)
		printf("  %-26s %-6s wait p50 %.3f p99 %.3f, busy p50 %.3f p99 %.3f\n",
		       subs[j].client, mode_name(subs[j].mode), subs[j].wait_p50_us / 1e3,
		       subs[j].wait_p99_us / 1e3, subs[j].busy_p50_us / 1e3,
		       subs[j].busy_p99_us / 1e3);
}

/* The plot: framebus.plot (matplotlib, $FRAMEBUS_PYTHON or /usr/bin/python3)
 * draws the JSON trace, given on its standard input, into path. */
static int plot_trace(const char *path, const char *json, size_t size)
{
	const char *python = getenv("FRAMEBUS_PYTHON");
	if (!python || !*python)
		python = "/usr/bin/python3";
	int in[2];
	if (pipe2(in, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(in[0], STDIN_FILENO);
		execl(python, python, "-m", "framebus.plot", path, (char *)NULL);
		fprintf(stderr, "framebusctl: trace: cannot run %s: %s\n", python, strerror(errno));
		_exit(127);
	}
	close(in[0]);
	if (pid < 0) {
		close(in[1]);
		return -errno;
	}
	signal(SIGPIPE, SIG_IGN);
	bool sent = write(in[1], json, size) == (ssize_t)size;
	close(in[1]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return sent && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static int cmd_trace(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"frames", required_argument, NULL, 'n'},
	    {"json", no_argument, NULL, 'j'},
	    {"plot", required_argument, NULL, 'p'},
	    {0},
	};
	long frames = 20;
	bool json = false;
	const char *plot = NULL;
	int ch;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "n:jp:", longopts, NULL)) != -1) {
		if (ch == 'n' && (frames = strtol(optarg, NULL, 10)) >= 1 && frames <= 100000)
			continue;
		if (ch == 'j')
			json = true;
		else if (ch == 'p')
			plot = optarg;
		else {
			if (ch == 'n')
				fprintf(stderr, "framebusctl: trace: --frames %s: 1 to 100000\n",
					optarg);
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	const char *name = argv[optind];
	fb_subscriber *sub;
	fb_client *c = subscribe_or_say_why("trace", name, FB_MODE_QUEUE, &sub);
	if (!c)
		return 1;
	int r = 0;
	struct traced *t = calloc((size_t)frames, sizeof(*t));
	size_t n = 0;
	signal(SIGINT, on_interrupt);
	while (t && n < (size_t)frames && !interrupted) {
		const struct fb_frame *f;
		r = fb_subscriber_acquire(sub, 5000, &f);
		if (r == -EINTR)
			continue;
		if (r < 0)
			break;
		trace_frame(name, f, fb_now_ns(), &t[n++]);
		fb_subscriber_release(sub, f);
	}
	fb_client_unsubscribe(c, sub);
	struct fb_subscription_info *subs = NULL;
	size_t n_subs = 0;
	fb_client_inspect(c, name, NULL, &subs, &n_subs);
	fb_client_free(c);
	if (!n) {
		fprintf(stderr, "framebusctl: trace: %s: no frame: %s\n", name,
			r < 0 ? fb_strerror(r) : "interrupted");
		free(t);
		free(subs);
		return 1;
	}
	r = 0;
	if (json)
		print_trace_json(stdout, name, t, n, subs, n_subs);
	else
		print_trace_table(name, t, n, subs, n_subs);
	if (plot) {
		char *text = NULL;
		size_t size = 0;
		FILE *out = open_memstream(&text, &size);
		if (out) {
			print_trace_json(out, name, t, n, subs, n_subs);
			fclose(out);
			r = plot_trace(plot, text, size);
		}
		free(text);
		if (r < 0)
			fprintf(stderr, "framebusctl: trace: no plot written to %s\n", plot);
		else
			fprintf(stderr, "framebusctl: trace: plot written to %s\n", plot);
	}
	free(t);
	free(subs);
	return r < 0 ? 1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Outputs on demand: files in framebus-output's directory, which it watches */
/* ------------------------------------------------------------------------ */

#define OUTPUT_WAIT_MS 10000

/* An output's name: what framebus-output takes (its state stream is
 * output.NAME). */
static bool output_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > FB_NAME_MAX - 7)
		return false;
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-'))
			return false;
	return true;
}

static bool output_key_ok(const char *key)
{
	static const char *const keys[] = {"encoder", "bitrate",       "gop",      "fps",
					   "format",  "stall_timeout", "retry_max"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(key, keys[i]))
			return true;
	return (!strncmp(key, "option.", 7) && key[7]) ||
	       (!strncmp(key, "output_option.", 14) && key[14]);
}

/* Wait for output.NAME to be on the bus (present) or gone (!present); with
 * present, print its newest state record.  0, -ETIMEDOUT, or -EINVAL when
 * the output failed (the record says why). */
static int wait_output(const char *name, bool present)
{
	char stream[FB_NAME_MAX + 8];
	snprintf(stream, sizeof(stream), "output.%s", name);
	fb_client *c = connect_or_die();
	int r = -ETIMEDOUT;
	for (int waited = 0; waited < OUTPUT_WAIT_MS; waited += 100) {
		struct fb_stream_info info;
		bool there =
		    fb_client_get_stream(c, stream, &info) == 0 && info.state != FB_STREAM_ENDED;
		if (there != present) {
			usleep(100000);
			continue;
		}
		static const char failed[] = "\"state\":\"failed\"";
		fb_subscriber *sub;
		const struct fb_frame *f;
		if (present && fb_client_subscribe(c, stream, FB_MODE_LATEST, 1, &sub) == 0) {
			if (fb_subscriber_acquire(sub, 2000, &f) == 0) {
				printf("%.*s\n", (int)f->meta_size, (const char *)f->meta);
				if (memmem(f->meta, f->meta_size, failed, strlen(failed)))
					r = -EINVAL;
				fb_subscriber_release(sub, f);
			}
			fb_client_unsubscribe(c, sub);
		}
		if (r == -ETIMEDOUT)
			r = 0;
		break;
	}
	fb_client_free(c);
	return r;
}

static int cmd_output(int argc, char **argv)
{
	const char *dir = FBO_DEFAULT_DIR;
	char *args[64];
	int n = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir = argv[++i];
		else if (n < 64)
			args[n++] = argv[i];
	}
	bool add = n >= 4 && !strcmp(args[0], "add"), remove = n == 2 && !strcmp(args[0], "remove");
	if (!add && !remove) {
		usage(stderr);
		return 2;
	}
	const char *name = args[1];
	if (!output_name_ok(name)) {
		fprintf(
		    stderr,
		    "framebusctl: output: '%s' is not an output name (1-%d letters, digits, '.', "
		    "'_' or '-')\n",
		    name, FB_NAME_MAX - 7);
		return 2;
	}
	char path[4096], tmp[4096];
	snprintf(path, sizeof(path), "%s/%s.conf", dir, name);
	if (remove) {
		if (unlink(path) < 0) {
			fprintf(stderr, "framebusctl: output remove: %s: %s\n", path,
				strerror(errno));
			return 1;
		}
		if (wait_output(name, false) < 0) {
			fprintf(stderr,
				"framebusctl: output remove: %s removed, but output.%s is still "
				"on the bus (is framebus-output watching %s?)\n",
				path, name, dir);
			return 1;
		}
		printf("output %s removed\n", name);
		return 0;
	}
	for (int i = 4; i < n; i++) {
		char *eq = strchr(args[i], '=');
		if (eq)
			*eq = 0;
		bool ok = eq && output_key_ok(args[i]) && eq[1] && !strpbrk(eq + 1, "\n\r");
		if (eq)
			*eq = '=';
		if (!ok) {
			fprintf(stderr,
				"framebusctl: output add: '%s' is not KEY=VALUE with KEY one of "
				"encoder, bitrate, gop, fps, format, stall_timeout, retry_max, "
				"option.X, output_option.X\n",
				args[i]);
			return 2;
		}
	}
	if (strpbrk(args[2], "\n\r") || strpbrk(args[3], "\n\r")) {
		fprintf(stderr, "framebusctl: output add: a line break in the stream or URL\n");
		return 2;
	}
	if (access(path, F_OK) == 0) {
		fprintf(stderr, "framebusctl: output add: %s exists: output remove %s first\n",
			path, name);
		return 1;
	}
	/* Written whole under a name framebus-output skips, then renamed: it
	 * never reads half a file. */
	snprintf(tmp, sizeof(tmp), "%s/.%s.conf.tmp", dir, name);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		fprintf(stderr, "framebusctl: output add: %s: %s\n", tmp, strerror(errno));
		return 1;
	}
	fprintf(f, "# framebusctl output add\n[output %s]\nstream = %s\nurl = %s\n", name, args[2],
		args[3]);
	for (int i = 4; i < n; i++) {
		char *eq = strchr(args[i], '=');
		fprintf(f, "%.*s = %s\n", (int)(eq - args[i]), args[i], eq + 1);
	}
	if (fclose(f) != 0 || rename(tmp, path) < 0) {
		fprintf(stderr, "framebusctl: output add: %s: %s\n", path, strerror(errno));
		unlink(tmp);
		return 1;
	}
	int r = wait_output(name, true);
	if (r == -EINVAL)
		return 1; /* the record printed says why */
	if (r < 0) {
		fprintf(
		    stderr,
		    "framebusctl: output add: %s written, but no output.%s on the bus after %d s: "
		    "is framebus-output running and watching %s? Its log says why (journalctl -u "
		    "framebus-output)\n",
		    path, name, OUTPUT_WAIT_MS / 1000, dir);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "+s:h", longopts, NULL)) != -1) {
		if (ch == 's')
			socket_path = optarg;
		else if (ch == 'h') {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	argc -= optind;
	argv += optind;
	if (!strcmp(argv[0], "status"))
		return cmd_status(argc, argv);
	if (!strcmp(argv[0], "snapshot"))
		return cmd_snapshot(argc, argv);
	if (!strcmp(argv[0], "watch"))
		return cmd_watch(argc, argv);
	if (!strcmp(argv[0], "top"))
		return cmd_top(argc, argv);
	if (!strcmp(argv[0], "trace"))
		return cmd_trace(argc, argv);
	if (!strcmp(argv[0], "output"))
		return cmd_output(argc, argv);
	fprintf(stderr, "framebusctl: unknown command '%s'\n", argv[0]);
	usage(stderr);
	return 2;
}
