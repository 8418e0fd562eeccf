/* SPDX-License-Identifier: MIT */
/* The GStreamer plugin's shared parts (plugin.c): pixel formats both ways,
 * the custom meta that carries a frame's identity through a pipeline, and
 * connecting to framebusd.
 * docs/gstreamer.md says what the elements do. */
#ifndef FBGST_H
#define FBGST_H

#include <gst/gst.h>
#include <gst/video/video.h>

#include "framebus/framebus.h"

G_BEGIN_DECLS

/* Every format both elements carry, as caps ("{ GRAY8, BGR, ... }"). */
#define FBGST_VIDEO_FORMATS "{ GRAY8, GRAY16_LE, BGR, RGB, BGRA, RGBA, NV12, I420, YUY2 }"

/* The GStreamer format of a ring's format; GST_VIDEO_FORMAT_UNKNOWN for
 * none (results streams). */
GstVideoFormat fbgst_video_format(uint32_t format);
/* The ring format of a GStreamer format; 0 for one the bus does not carry. */
uint32_t fbgst_ring_format(GstVideoFormat format);

/*
 * "FramebusFrameMeta", a GstCustomMeta on each buffer framebussrc pushes:
 * a structure with
 *   stream      (string)  the ring it came from
 *   seq         (guint64) its seq there (also the buffer's offset)
 *   source-seq  (guint64) the frame it was made from, or 0
 *   meta        (GBytes)  the frame's side data, when it has any
 *   trace       (GBytes)  the struct fb_trace of a frame made from it: its
 *                         own, and it as the last hop (docs/tracing.md)
 * framebussink publishes a buffer that has it as made from that frame: the
 * side data goes on, and the trace gains a hop.
 */
#define FBGST_META_NAME "FramebusFrameMeta"

/* Add the meta describing frame, from stream, to buf. */
void fbgst_meta_add(GstBuffer *buf, const char *stream, const struct fb_frame *frame);
/* buf's meta structure, or NULL. */
const GstStructure *fbgst_meta_get(GstBuffer *buf);

/* Connect element, whose stream property is stream, to framebusd at socket
 * (NULL: the default) as a client called name.  FALSE, with an element
 * error posted, when no stream is set or framebusd cannot be reached (an
 * OPEN_WRITE error for a sink, write, OPEN_READ for a source). */
gboolean fbgst_connect(GstElement *element, const char *socket, const char *stream,
		       const char *name, gboolean write, fb_client **ret_client);

GType fbgst_src_get_type(void);
GType fbgst_sink_get_type(void);

G_END_DECLS

#endif
