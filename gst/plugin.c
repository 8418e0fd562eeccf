/* SPDX-License-Identifier: MIT */
/* The framebus GStreamer plugin: framebussrc, framebussink, and what they
 * share. */
#include "gstframebus.h"

/* Ring formats and GStreamer's, one row each way. */
static const struct {
	uint32_t ring;
	GstVideoFormat gst;
} formats[] = {
    {FB_FORMAT_GRAY8, GST_VIDEO_FORMAT_GRAY8},  {FB_FORMAT_GRAY16, GST_VIDEO_FORMAT_GRAY16_LE},
    {FB_FORMAT_BGR24, GST_VIDEO_FORMAT_BGR},    {FB_FORMAT_RGB24, GST_VIDEO_FORMAT_RGB},
    {FB_FORMAT_BGRA, GST_VIDEO_FORMAT_BGRA},    {FB_FORMAT_RGBA, GST_VIDEO_FORMAT_RGBA},
    {FB_FORMAT_NV12, GST_VIDEO_FORMAT_NV12},    {FB_FORMAT_YUV420P, GST_VIDEO_FORMAT_I420},
    {FB_FORMAT_YUYV422, GST_VIDEO_FORMAT_YUY2},
};

GstVideoFormat fbgst_video_format(uint32_t format)
{
	for (size_t i = 0; i < G_N_ELEMENTS(formats); i++)
		if (formats[i].ring == format)
			return formats[i].gst;
	return GST_VIDEO_FORMAT_UNKNOWN;
}

uint32_t fbgst_ring_format(GstVideoFormat format)
{
	for (size_t i = 0; i < G_N_ELEMENTS(formats); i++)
		if (formats[i].gst == format)
			return formats[i].ring;
	return 0;
}

void fbgst_meta_add(GstBuffer *buf, const char *stream, const struct fb_frame *frame)
{
	GstCustomMeta *meta = gst_buffer_add_custom_meta(buf, FBGST_META_NAME);
	if (!meta)
		return;
	GstStructure *s = gst_custom_meta_get_structure(meta);
	gst_structure_set(s, "stream", G_TYPE_STRING, stream, "seq", G_TYPE_UINT64, frame->seq,
			  "source-seq", G_TYPE_UINT64, frame->source_seq, NULL);
	if (frame->meta_size) {
		GBytes *b = g_bytes_new(frame->meta, frame->meta_size);
		gst_structure_set(s, "meta", G_TYPE_BYTES, b, NULL);
		g_bytes_unref(b);
	}
	/* What fb_frame_made_from() would give a frame made from this one: a
	 * sink that publishes the buffer needs no frame of the ring to say so. */
	struct fb_trace trace;
	struct fb_frame made = {.trace = &trace};
	if (fb_frame_made_from(&made, frame) == 0) {
		GBytes *t = g_bytes_new(&trace, sizeof(trace));
		gst_structure_set(s, "trace", G_TYPE_BYTES, t, NULL);
		g_bytes_unref(t);
	}
}

const GstStructure *fbgst_meta_get(GstBuffer *buf)
{
	GstCustomMeta *meta = gst_buffer_get_custom_meta(buf, FBGST_META_NAME);
	return meta ? gst_custom_meta_get_structure(meta) : NULL;
}

gboolean fbgst_connect(GstElement *element, const char *socket, const char *stream,
		       const char *name, gboolean write, fb_client **ret_client)
{
	if (!stream || !*stream) {
		GST_ELEMENT_ERROR(element, RESOURCE, SETTINGS,
				  ("No stream given: set the 'stream' property"), (NULL));
		return FALSE;
	}
	int r = fb_client_connect(socket, name, ret_client);
	if (r >= 0)
		return TRUE;
	/* (GST_ELEMENT_ERROR takes its error code as a name.) */
	gchar *why = g_strdup_printf("Cannot connect to framebusd at %s: %s",
				     socket ? socket : "the default socket", fb_strerror(r));
	if (write)
		GST_ELEMENT_ERROR(element, RESOURCE, OPEN_WRITE, ("%s", why), (NULL));
	else
		GST_ELEMENT_ERROR(element, RESOURCE, OPEN_READ, ("%s", why), (NULL));
	g_free(why);
	return FALSE;
}

static gboolean plugin_init(GstPlugin *plugin)
{
	static const gchar *tags[] = {NULL};
	gst_meta_register_custom(FBGST_META_NAME, tags, NULL, NULL, NULL);
	return gst_element_register(plugin, "framebussrc", GST_RANK_NONE, fbgst_src_get_type()) &&
	       gst_element_register(plugin, "framebussink", GST_RANK_NONE, fbgst_sink_get_type());
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, framebus,
		  "Frames to and from a framebus shared-memory bus (framebusd)", plugin_init,
		  PACKAGE_VERSION, "MIT", "framebus", PACKAGE_ORIGIN)
