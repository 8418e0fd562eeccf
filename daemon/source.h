/* SPDX-License-Identifier: MIT */
/* A video input as a pull decoder: open it, take its pictures one by one,
 * close it.  FFmpeg demuxes and decodes; this knows nothing of streams or
 * rings. */
#ifndef FBD_SOURCE_H
#define FBD_SOURCE_H

#include <libavutil/frame.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "identity.h"
#include "framebus/framebus.h"

struct fbd_source;

/* One decoded picture, valid until the next fbd_source_next() call. */
struct fbd_picture {
	const AVFrame *frame;
	int64_t pts;    /* in the input's time base, AV_NOPTS_VALUE if it has none */
	int64_t pts_ns; /* the same in nanoseconds, INT64_MIN if it has none */
	/* Its trace (struct fb_trace): when its packet came out of the
	 * demuxer (CLOCK_MONOTONIC, CLOCK_REALTIME), when the decoder gave it,
	 * the time base of pts. */
	uint64_t capture_ns;
	uint64_t capture_realtime_ns;
	uint64_t decode_ns;
	int time_base_num, time_base_den;
	/* A derived stream's picture: the parent's frame it is made from
	 * (its trace goes on), or NULL. */
	const struct fb_frame *parent;
	/* A picture from another host's framebus-output: the frame it was
	 * there (its SEI, docs/tracing.md); its capture times above are then
	 * that frame's, on this host's clocks. */
	bool has_origin;
	struct fbd_identity origin;
};

/* Open config's input and its video decoder.  Every blocking call gives up
 * once *stop is true, and on an input that sent nothing for stall_timeout;
 * while FFmpeg waits in one, *alive_ns (fb_now_ns()) says the caller's
 * thread is not stuck.  told: what the log last said of why FFmpeg reads an
 * rtsp:// URL rather than framebusd's RTSP client ("rtsp_client = ffmpeg",
 * "its video is JPEG, ..."), kept by the caller across opens ("" at first):
 * the log says it again only when it changes, not at every reopen.  Returns
 * 0, or -errno with the reason in why:
 * -ENOTSUP when this FFmpeg cannot decode its video, -EACCES when the
 * camera refuses the URL's credentials (both stay so until the input
 * changes). */
int fbd_source_open(const struct fbd_stream_config *config, const atomic_bool *stop,
		    _Atomic uint64_t *alive_ns, char *told, size_t told_size,
		    struct fbd_source **ret_source, char *why, size_t size);

/* The next picture.  Returns 0 and the picture, 1 at the end of the input,
 * or -errno with the reason in why: -ETIMEDOUT if the input stalled,
 * -ENODATA if it ended before its first picture. */
int fbd_source_next(struct fbd_source *source, struct fbd_picture *ret_picture, char *why,
		    size_t size);

/* Close the input.  Accepts NULL. */
void fbd_source_close(struct fbd_source *source);

#endif
