/* SPDX-License-Identifier: MIT */
/*
 * framebussink: publish a pipeline's frames as a stream on the bus.
 *
 * The ring is made when caps are first set (and made again when they
 * change); each buffer is copied into an acquired slot, row by row.  A buffer
 * that came from framebussrc keeps its identity: the stream's frame is
 * published as made from it, with its side data.
 */
#include <errno.h>
#include <string.h>

#include <gst/video/gstvideosink.h>

#include "gstframebus.h"

GST_DEBUG_CATEGORY_STATIC(fbgst_sink_debug);
#define GST_CAT_DEFAULT fbgst_sink_debug

/* How long a block stream's wait lasts before the thread looks at its
 * flushing flag. */
#define SLICE_MS 100

enum { PROP_0, PROP_SOCKET, PROP_STREAM, PROP_SLOTS, PROP_POLICY, PROP_META_MAX, PROP_DROPPED };

typedef struct {
	GstVideoSink parent;

	/* properties, under the object lock */
	gchar *socket;
	gchar *stream;
	guint slots;
	guint policy; /* enum fb_policy */
	guint meta_max;

	fb_client *client;
	fb_producer *producer;
	GstVideoInfo info;     /* the ring's geometry as GStreamer sees it */
	guint64 dropped;       /* frames a drop stream had no slot for */
	gboolean said_too_big; /* warned once of side data past meta-max */
	gint flushing;         /* atomic: unlock() was called */
} GstFramebusSink;

typedef struct {
	GstVideoSinkClass parent_class;
} GstFramebusSinkClass;

G_DEFINE_TYPE(GstFramebusSink, fbgst_sink, GST_TYPE_VIDEO_SINK)

static GType policy_get_type(void)
{
	static GType type;
	static const GEnumValue values[] = {
	    {FB_POLICY_DROP, "Never wait: drop a frame when every slot is held", "drop"},
	    {FB_POLICY_BLOCK, "Wait for queue subscribers: push back on the pipeline", "block"},
	    {0, NULL, NULL},
	};
	if (g_once_init_enter(&type))
		g_once_init_leave(&type, g_enum_register_static("GstFramebusSinkPolicy", values));
	return type;
}

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS,
			    GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(FBGST_VIDEO_FORMATS)));

static void fbgst_sink_set_property(GObject *object, guint id, const GValue *value,
				    GParamSpec *pspec)
{
	GstFramebusSink *s = (GstFramebusSink *)object;

	GST_OBJECT_LOCK(s);
	switch (id) {
	case PROP_SOCKET:
		g_free(s->socket);
		s->socket = g_value_dup_string(value);
		break;
	case PROP_STREAM:
		g_free(s->stream);
		s->stream = g_value_dup_string(value);
		break;
	case PROP_SLOTS:
		s->slots = g_value_get_uint(value);
		break;
	case PROP_POLICY:
		s->policy = (guint)g_value_get_enum(value);
		break;
	case PROP_META_MAX:
		s->meta_max = g_value_get_uint(value);
		break;
	default:
		G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
	}
	GST_OBJECT_UNLOCK(s);
}

static void fbgst_sink_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
	GstFramebusSink *s = (GstFramebusSink *)object;

	GST_OBJECT_LOCK(s);
	switch (id) {
	case PROP_SOCKET:
		g_value_set_string(value, s->socket);
		break;
	case PROP_STREAM:
		g_value_set_string(value, s->stream);
		break;
	case PROP_SLOTS:
		g_value_set_uint(value, s->slots);
		break;
	case PROP_POLICY:
		g_value_set_enum(value, (gint)s->policy);
		break;
	case PROP_META_MAX:
		g_value_set_uint(value, s->meta_max);
		break;
	case PROP_DROPPED:
		g_value_set_uint64(value, s->dropped);
		break;
	default:
		G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
	}
	GST_OBJECT_UNLOCK(s);
}

static gboolean fbgst_sink_start(GstBaseSink *base)
{
	GstFramebusSink *s = (GstFramebusSink *)base;

	if (!s->stream || !*s->stream) {
		GST_ELEMENT_ERROR(s, RESOURCE, SETTINGS,
				  ("No stream given: set the 'stream' property"), (NULL));
		return FALSE;
	}
	int r = fb_client_connect(s->socket, "framebussink", &s->client);
	if (r < 0) {
		GST_ELEMENT_ERROR(s, RESOURCE, OPEN_WRITE,
				  ("Cannot connect to framebusd at %s: %s",
				   s->socket ? s->socket : "the default socket", fb_strerror(r)),
				  (NULL));
		return FALSE;
	}
	s->dropped = 0;
	s->said_too_big = FALSE;
	return TRUE;
}

static gboolean fbgst_sink_stop(GstBaseSink *base)
{
	GstFramebusSink *s = (GstFramebusSink *)base;

	if (s->producer)
		fb_client_unpublish(s->client, s->producer);
	s->producer = NULL;
	fb_client_free(s->client);
	s->client = NULL;
	return TRUE;
}

/* Publish the stream as caps describe it (again, if they changed). */
static gboolean fbgst_sink_set_info(GstVideoSink *video, GstCaps *caps, const GstVideoInfo *info)
{
	GstFramebusSink *s = (GstFramebusSink *)video;
	struct fb_ring_params params = {
	    .width = (uint32_t)GST_VIDEO_INFO_WIDTH(info),
	    .height = (uint32_t)GST_VIDEO_INFO_HEIGHT(info),
	    .format = fbgst_ring_format(GST_VIDEO_INFO_FORMAT(info)),
	    .slots = s->slots,
	    .policy = s->policy,
	    .meta_max = s->meta_max,
	};

	if (s->producer) {
		if (gst_video_info_is_equal(info, &s->info))
			return TRUE;
		GST_INFO_OBJECT(s, "caps changed: publishing '%s' again as %ux%u %s", s->stream,
				params.width, params.height, fb_format_name(params.format));
		fb_client_unpublish(s->client, s->producer);
		s->producer = NULL;
	}
	int r = fb_client_publish(s->client, s->stream, &params, &s->producer);
	if (r < 0) {
		GST_ELEMENT_ERROR(
		    s, RESOURCE, OPEN_WRITE,
		    ("Cannot publish stream '%s' (%ux%u %s, %u slots): %s", s->stream, params.width,
		     params.height, fb_format_name(params.format), params.slots,
		     r == -EEXIST ? "the bus already has a stream of that name" : fb_strerror(r)),
		    ("%s", fb_client_last_error(s->client)));
		s->producer = NULL;
		return FALSE;
	}
	s->info = *info;
	return TRUE;
}

static gboolean fbgst_sink_unlock(GstBaseSink *base)
{
	g_atomic_int_set(&((GstFramebusSink *)base)->flushing, 1);
	return TRUE;
}

static gboolean fbgst_sink_unlock_stop(GstBaseSink *base)
{
	g_atomic_int_set(&((GstFramebusSink *)base)->flushing, 0);
	return TRUE;
}

/* A slot for the next frame: GST_FLOW_OK and the frame, GST_FLOW_OK and NULL
 * for a frame a drop stream has no room for, or why not. */
static GstFlowReturn take_slot(GstFramebusSink *s, struct fb_frame **ret_frame)
{
	*ret_frame = NULL;
	for (;;) {
		if (g_atomic_int_get(&s->flushing))
			return GST_FLOW_FLUSHING;
		int r = fb_producer_acquire(s->producer, SLICE_MS, ret_frame);
		if (r == 0)
			return GST_FLOW_OK;
		if (r == -ETIMEDOUT)
			continue;
		if (r == -ENOBUFS) {
			GST_OBJECT_LOCK(s);
			s->dropped++;
			GST_OBJECT_UNLOCK(s);
			GST_LOG_OBJECT(s, "every slot held: frame dropped");
			return GST_FLOW_OK;
		}
		GST_ELEMENT_ERROR(
		    s, RESOURCE, WRITE,
		    ("Cannot publish into stream '%s': %s", s->stream, fb_strerror(r)), (NULL));
		return GST_FLOW_ERROR;
	}
}

/* The identity and side data of buf, if it came from framebussrc. */
static void carry_meta(GstFramebusSink *s, GstBuffer *buf, struct fb_frame *frame)
{
	const GstStructure *meta = fbgst_meta_get(buf);
	if (!meta)
		return;
	guint64 seq;
	const GValue *trace = gst_structure_get_value(meta, "trace");
	if (gst_structure_get_uint64(meta, "seq", &seq) && trace &&
	    G_VALUE_HOLDS(trace, G_TYPE_BYTES)) {
		gsize n;
		const void *t = g_bytes_get_data(g_value_get_boxed(trace), &n);
		if (n == sizeof(*frame->trace)) {
			memcpy(frame->trace, t, n);
			frame->source_seq = seq;
		}
	}
	const GValue *side = gst_structure_get_value(meta, "meta");
	if (!side || !G_VALUE_HOLDS(side, G_TYPE_BYTES))
		return;
	gsize n;
	const void *bytes = g_bytes_get_data(g_value_get_boxed(side), &n);
	if (n > s->meta_max) {
		if (!s->said_too_big)
			GST_ELEMENT_WARNING(s, STREAM, ENCODE,
					    ("Side data of %zu bytes does not fit stream '%s' "
					     "(meta-max %u): left out",
					     (size_t)n, s->stream, s->meta_max),
					    (NULL));
		s->said_too_big = TRUE;
		return;
	}
	memcpy(frame->meta, bytes, n);
	frame->meta_size = (uint32_t)n;
}

static GstFlowReturn fbgst_sink_show_frame(GstVideoSink *video, GstBuffer *buf)
{
	GstFramebusSink *s = (GstFramebusSink *)video;
	struct fb_frame *frame;
	GstVideoFrame in;

	/* Takes what the daemon said: after it came back, this publishes the
	 * ring to it again (the same ring: subscribers resubscribe to it). */
	fb_client_process(s->client);

	GstFlowReturn ret = take_slot(s, &frame);
	if (ret != GST_FLOW_OK || !frame)
		return ret;
	if (!gst_video_frame_map(&in, &s->info, buf, GST_MAP_READ)) {
		fb_producer_discard(s->producer, frame);
		GST_ELEMENT_ERROR(s, STREAM, FAILED, ("Cannot read a buffer's pixels"), (NULL));
		return GST_FLOW_ERROR;
	}
	const GstVideoFormatInfo *finfo = in.info.finfo;
	guint width = (guint)GST_VIDEO_INFO_WIDTH(&s->info);
	for (guint p = 0; p < GST_VIDEO_FRAME_N_PLANES(&in); p++) {
		/* The plane's first component says how wide its rows are. */
		gint comp[GST_VIDEO_MAX_COMPONENTS];
		gst_video_format_info_component(finfo, p, comp);
		gsize row = (gsize)GST_VIDEO_FORMAT_INFO_SCALE_WIDTH(finfo, comp[0], width) *
			    (gsize)finfo->pixel_stride[comp[0]];
		guint rows = (guint)GST_VIDEO_FRAME_COMP_HEIGHT(&in, comp[0]);
		const guint8 *from = GST_VIDEO_FRAME_PLANE_DATA(&in, p);
		gint stride = GST_VIDEO_FRAME_PLANE_STRIDE(&in, p);
		for (guint y = 0; y < rows; y++)
			memcpy(frame->data[p] + (gsize)y * frame->stride[p],
			       from + (gsize)y * stride, row);
	}
	gst_video_frame_unmap(&in);

	frame->pts = GST_BUFFER_PTS_IS_VALID(buf) ? (int64_t)GST_BUFFER_PTS(buf) : 0;
	frame->trace->time_base_num = 1;
	frame->trace->time_base_den = GST_SECOND;
	carry_meta(s, buf, frame);
	int r = fb_producer_publish(s->producer, frame);
	if (r < 0) {
		GST_ELEMENT_ERROR(
		    s, RESOURCE, WRITE,
		    ("Cannot publish into stream '%s': %s", s->stream, fb_strerror(r)), (NULL));
		return GST_FLOW_ERROR;
	}
	return GST_FLOW_OK;
}

static void fbgst_sink_finalize(GObject *object)
{
	GstFramebusSink *s = (GstFramebusSink *)object;

	g_free(s->socket);
	g_free(s->stream);
	G_OBJECT_CLASS(fbgst_sink_parent_class)->finalize(object);
}

static void fbgst_sink_init(GstFramebusSink *s)
{
	s->slots = 8;
	s->policy = FB_POLICY_DROP;
	s->meta_max = 4096;
}

/* A frame is published once, when rendered, not at preroll too (a construct
 * property: set after construction). */
static void fbgst_sink_constructed(GObject *object)
{
	G_OBJECT_CLASS(fbgst_sink_parent_class)->constructed(object);
	g_object_set(object, "show-preroll-frame", FALSE, NULL);
}

static void fbgst_sink_class_init(GstFramebusSinkClass *klass)
{
	GObjectClass *object = G_OBJECT_CLASS(klass);
	GstElementClass *element = GST_ELEMENT_CLASS(klass);
	GstBaseSinkClass *base = GST_BASE_SINK_CLASS(klass);
	GstVideoSinkClass *video = GST_VIDEO_SINK_CLASS(klass);

	GST_DEBUG_CATEGORY_INIT(fbgst_sink_debug, "framebussink", 0, "framebus sink");
	object->set_property = fbgst_sink_set_property;
	object->get_property = fbgst_sink_get_property;
	object->finalize = fbgst_sink_finalize;
	object->constructed = fbgst_sink_constructed;

	const GParamFlags rw = G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY;
	g_object_class_install_property(
	    object, PROP_SOCKET,
	    g_param_spec_string(
		"socket", "Socket",
		"framebusd's socket (default: $FRAMEBUS_SOCKET, else " FB_DEFAULT_SOCKET ")", NULL,
		rw));
	g_object_class_install_property(
	    object, PROP_STREAM,
	    g_param_spec_string("stream", "Stream",
				"Name of the stream to publish (the bus must not have one "
				"of that name already)",
				NULL, rw));
	g_object_class_install_property(object, PROP_SLOTS,
					g_param_spec_uint("slots", "Slots",
							  "Frames the stream's ring holds",
							  FB_MIN_SLOTS, FB_MAX_SLOTS, 8, rw));
	g_object_class_install_property(
	    object, PROP_POLICY,
	    g_param_spec_enum("policy", "Policy",
			      "drop: never wait, drop a frame when every slot is held; block: "
			      "wait until queue subscribers read (pushes back on the pipeline)",
			      policy_get_type(), FB_POLICY_DROP, rw));
	g_object_class_install_property(
	    object, PROP_META_MAX,
	    g_param_spec_uint("meta-max", "Meta max",
			      "Bytes of side data each frame may carry (a framebussrc "
			      "buffer's goes on)",
			      0, FB_MAX_META, 4096, rw));
	g_object_class_install_property(
	    object, PROP_DROPPED,
	    g_param_spec_uint64("dropped", "Dropped", "Frames a drop stream had no free slot for",
				0, G_MAXUINT64, 0, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS));

	gst_element_class_add_static_pad_template(element, &sink_template);
	gst_element_class_set_static_metadata(
	    element, "framebus sink", "Sink/Video",
	    "Publish frames as a framebus stream: subscribers on the host read them with "
	    "zero copies",
	    "framebus");

	base->start = fbgst_sink_start;
	base->stop = fbgst_sink_stop;
	base->unlock = fbgst_sink_unlock;
	base->unlock_stop = fbgst_sink_unlock_stop;
	video->set_info = fbgst_sink_set_info;
	video->show_frame = fbgst_sink_show_frame;
	gst_type_mark_as_plugin_api(policy_get_type(), 0);
}
