/* SPDX-License-Identifier: MIT */
/* framebusd.conf: an INI file, parsed with libinih.  config/framebusd.conf
 * documents every key. */
#ifndef FBD_CONFIG_H
#define FBD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "framebus/framebus.h"

#define FBD_MAX_STREAMS 64
#define FBD_MAX_OPTIONS 16
#define FBD_MAX_ACCESS_RULES 64
#define FBD_MAX_ACCESS_PATTERNS 16
#define FBD_MAX_ACCESS_IDS 32
/* A client's stream has no section: its block_timeout is this. */
#define FBD_DEFAULT_BLOCK_TIMEOUT_NS 2000000000ull

/* What an input that ends does to its stream. */
enum fbd_on_end {
	FBD_ON_END_AUTO = 0, /* retry for cameras and network inputs, end for files and lavfi */
	FBD_ON_END_RETRY,    /* open it again, as after a failure: a camera that rebooted */
	FBD_ON_END_END,      /* the stream ends */
};

/* What a block stream does with a queue subscriber that kept it waiting
 * longer than block_timeout. */
enum fbd_on_stall {
	FBD_ON_STALL_LATEST = 0, /* stop waiting for it: it reads on, missing what it lost */
	FBD_ON_STALL_DROP,       /* end its subscription (-ECANCELED) */
};

/* libswscale's method, where a stream's frames change size. */
enum fbd_scale {
	FBD_SCALE_BILINEAR = 0,
	FBD_SCALE_FAST_BILINEAR,
	FBD_SCALE_AREA,
	FBD_SCALE_BICUBIC,
};

enum fbd_pacing {
	FBD_PACING_AUTO = 0, /* native for files and lavfi, fast for live inputs */
	FBD_PACING_NATIVE,   /* sleep to each frame's timestamp */
	FBD_PACING_FAST,     /* as fast as the decoder (and a block ring) allow */
};

/* Who reads an rtsp:// input. */
enum fbd_rtsp_client {
	FBD_RTSP_CLIENT_BUILTIN = 0, /* framebusd's own (H.264, H.265 over TCP), else FFmpeg */
	FBD_RTSP_CLIENT_FFMPEG,      /* FFmpeg's rtsp demuxer */
};

struct fbd_stream_config {
	char name[FB_NAME_MAX + 1];
	char *url;              /* NULL for a derived stream */
	char *from;             /* a derived stream's parent: its frames, scaled; else NULL */
	char *input_format;     /* FFmpeg demuxer name, e.g. lavfi, v4l2; NULL: probe */
	uint32_t width, height; /* 0: the source's own */
	uint32_t format;
	uint32_t slots;
	uint32_t policy;
	uint32_t meta_max;
	uint32_t pacing;
	uint32_t fps_milli; /* a derived stream's rate limit, x1000; 0: its parent's rate */
	/* A derived stream's part of its parent's picture: x, y, width, height;
	 * width 0: the whole picture. */
	uint32_t crop[4];
	uint32_t on_end;      /* enum fbd_on_end */
	uint32_t scale;       /* enum fbd_scale */
	uint32_t rtsp_client; /* enum fbd_rtsp_client */
	bool loop;
	uint32_t decoder_threads; /* 0: FFmpeg's choice */
	/* libswscale's threads where its frames are scaled or converted: 1,
	 * the stream's own thread; 0: libswscale's choice (one a core). */
	uint32_t scale_threads;
	uint64_t retry_min_ns;
	uint64_t retry_max_ns;
	uint64_t stall_timeout_ns;
	uint64_t block_timeout_ns; /* policy block: how long one queue subscriber may stall it */
	uint32_t on_stall;         /* enum fbd_on_stall */
	uint64_t hold_timeout_ns;  /* a subscriber holding one frame longer is dropped; 0: never */
	uint32_t n_options;
	char *option_keys[FBD_MAX_OPTIONS];
	char *option_values[FBD_MAX_OPTIONS];
};

/* Who an [access] rule lets do one thing: users and groups, resolved to ids
 * at load.  given false: the key is absent. */
struct fbd_access_ids {
	bool given;
	uint32_t n_uids, n_gids;
	uint32_t uids[FBD_MAX_ACCESS_IDS];
	uint32_t gids[FBD_MAX_ACCESS_IDS];
};

/* [access NAME]: the streams it covers (fnmatch patterns), who may subscribe
 * to them (absent: anyone) and who may publish a name they match (absent:
 * nobody).  access.c applies them. */
struct fbd_access_rule {
	char name[FB_NAME_MAX + 1];
	uint32_t n_patterns;
	char patterns[FBD_MAX_ACCESS_PATTERNS][FB_NAME_MAX + 1];
	struct fbd_access_ids subscribe, publish;
};

struct fbd_config {
	char *socket_path;
	char *socket_group; /* NULL: the daemon's own group */
	uint32_t socket_mode;
	int log_level; /* syslog priority: LOG_ERR .. LOG_DEBUG */
	uint32_t max_clients;
	uint32_t max_subscriptions_per_client;
	uint32_t default_max_holds;
	uint32_t max_streams_per_client;     /* streams a client may publish */
	uint64_t max_ring_memory_per_client; /* bytes of rings it may publish */
	uint32_t max_derived_per_client;     /* streams it may have made on request */
	uint64_t max_derived_memory;         /* bytes of all rings made on request */
	uint32_t scale_threads;              /* the streams' default scale_threads */
	/* The default hold_timeout of stream sections without one, of streams
	 * made on request and of clients' streams (which have no section); 0:
	 * off. */
	uint64_t hold_timeout_ns;
	/* The same, per user (uid) over all its connections; root and the
	 * daemon's own user are exempt. */
	uint32_t max_connections_per_user;
	uint32_t max_subscriptions_per_user;
	uint32_t max_streams_per_user;
	uint64_t max_memory_per_user;
	/* Where /metrics is served (Prometheus), as written; NULL: nowhere.
	 * metrics_addr is it parsed. */
	char *metrics;
	struct sockaddr_storage metrics_addr;
	uint32_t n_streams;
	struct fbd_stream_config streams[FBD_MAX_STREAMS];
	/* In file order: the first whose patterns match a name decides. */
	uint32_t n_access;
	struct fbd_access_rule access[FBD_MAX_ACCESS_RULES];
};

/* Load path into a new config.  On error returns -errno and writes a message
 * naming the file, line and key to error (size bytes). */
int fbd_config_load(const char *path, struct fbd_config **ret_config, char *error, size_t size);

/* The configuration used when there is no file at all: one test-pattern
 * stream, cam0. */
int fbd_config_default(struct fbd_config **ret_config);

void fbd_config_free(struct fbd_config *config);

/* Whether two stream sections would run the same stream. */
/* A stream section's defaults (format bgr24, 8 slots, drop, ...). */
void fbd_stream_config_defaults(struct fbd_stream_config *s);
bool fbd_stream_config_equal(const struct fbd_stream_config *a, const struct fbd_stream_config *b);

/* Whether the stream's input is live (a camera, a network stream, a
 * device), not a file or a test pattern: it is not paced, it is opened again
 * when it ends, and it is decoded without frame threads (source.c). */
bool fbd_stream_config_live(const struct fbd_stream_config *cfg);

/* url as logs and status show it: without the password of a
 * SCHEME://USER:PASSWORD@HOST... ("rtsp://viewer@cam/..."). */
void fbd_url_shown(const char *url, char *out, size_t size);

/* The scale key's spelling of an enum fbd_scale ("bilinear", ...). */
const char *fbd_scale_name(uint32_t scale);

/* Deep copy of one stream section (NULL on allocation failure). */
struct fbd_stream_config *fbd_stream_config_dup(const struct fbd_stream_config *c);
void fbd_stream_config_free(struct fbd_stream_config *c);

#endif
