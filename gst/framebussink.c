/* SPDX-License-Identifier: MIT */
/*
 * framebussink: publish a pipeline's frames as a stream on the bus.
 *
 * The ring is made when caps are first set (and made again when they
 * change).  Upstream that takes the pool the sink proposes (GstVideoMeta
 * with the ring's strides) writes its pictures straight into ring slots, and
 * rendering one publishes it: zero copies.  Any other buffer is copied into
 * a slot, row by row.  A buffer that came from framebussrc keeps its
 * identity: the stream's frame is published as made from it, with its side
 * data.
 *
 * A ring has one slot out at a time (fb_producer_acquire()), so the pool
 * lends one buffer at a time, and whoever wants the next slot (upstream's
 * thread through the pool, or the sink's own to copy) waits until the one
 * out is published or given back: producer_lock and slot_free.
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

enum {
	PROP_0,
	PROP_SOCKET,
	PROP_STREAM,
	PROP_SLOTS,
	PROP_POLICY,
	PROP_META_MAX,
	PROP_DROPPED,
	PROP_COPIED,
};

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
	GMutex producer_lock;  /* over every call on producer, and out */
	GCond slot_free;       /* out went back */
	struct fb_frame *out;  /* the slot acquired and not yet published */
	GstBufferPool *pool;   /* proposed upstream, lending slots */
	gboolean same_layout;  /* the ring's layout is GStreamer's default one */
	GstVideoInfo info;     /* the ring's geometry as GStreamer sees it */
	guint64 dropped;       /* frames a drop stream had no slot for */
	guint64 copied;        /* frames not written into a slot upstream */
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

/* The pool framebussink proposes: each buffer is a slot of the ring. */
typedef struct {
	GstBufferPool parent;
	GstFramebusSink *sink; /* not a reference: the sink outlives its pools' use */
} GstFramebusPool;

typedef struct {
	GstBufferPoolClass parent_class;
} GstFramebusPoolClass;

GType fbgst_pool_get_type(void);
G_DEFINE_TYPE(GstFramebusPool, fbgst_pool, GST_TYPE_BUFFER_POOL)

/* The slot a pool buffer lends (qdata on the buffer). */
static GQuark slot_quark;

static GstFlowReturn take_slot(GstFramebusSink *s, struct fb_frame **ret_frame);
static void give_back(GstFramebusSink *s, struct fb_frame *frame);

static const gchar **fbgst_pool_get_options(GstBufferPool *pool)
{
	static const gchar *options[] = {GST_BUFFER_POOL_OPTION_VIDEO_META, NULL};
	return options;
}

/* Upstream that cannot read GstVideoMeta would write GStreamer's own strides
 * into slots laid out otherwise: such a configuration is refused, and
 * upstream uses a pool of its own (its buffers are copied). */
static gboolean fbgst_pool_set_config(GstBufferPool *pool, GstStructure *config)
{
	GstFramebusSink *s = ((GstFramebusPool *)pool)->sink;
	if (!s->same_layout &&
	    !gst_buffer_pool_config_has_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META))
		return FALSE;
	return GST_BUFFER_POOL_CLASS(fbgst_pool_parent_class)->set_config(pool, config);
}

static GstFlowReturn fbgst_pool_acquire_buffer(GstBufferPool *pool, GstBuffer **ret_buf,
					       GstBufferPoolAcquireParams *params)
{
	GstFramebusSink *s = ((GstFramebusPool *)pool)->sink;
	struct fb_frame *frame;

	GstFlowReturn ret = take_slot(s, &frame);
	if (ret != GST_FLOW_OK)
		return ret;
	const struct fb_layout *l = fb_producer_get_layout(s->producer);
	GstBuffer *buf = gst_buffer_new();
	gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
	gint strides[GST_VIDEO_MAX_PLANES] = {0};
	if (frame) {
		uint8_t *base = frame->data[0] - l->offset[0];
		gst_buffer_append_memory(buf, gst_memory_new_wrapped(0, base, l->frame_size, 0,
								     l->frame_size, NULL, NULL));
		gst_mini_object_set_qdata(GST_MINI_OBJECT(buf), slot_quark, frame, NULL);
		for (guint p = 0; p < l->n_planes; p++) {
			offsets[p] = l->offset[p];
			strides[p] = (gint)l->stride[p];
		}
	} else {
		/* A drop stream with every slot held: upstream writes this
		 * frame into memory of its own, and it is dropped. */
		gst_buffer_append_memory(
		    buf, gst_allocator_alloc(NULL, GST_VIDEO_INFO_SIZE(&s->info), NULL));
		for (guint p = 0; p < GST_VIDEO_INFO_N_PLANES(&s->info); p++) {
			offsets[p] = GST_VIDEO_INFO_PLANE_OFFSET(&s->info, p);
			strides[p] = GST_VIDEO_INFO_PLANE_STRIDE(&s->info, p);
		}
	}
	gst_buffer_add_video_meta_full(
	    buf, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_INFO_FORMAT(&s->info),
	    (guint)GST_VIDEO_INFO_WIDTH(&s->info), (guint)GST_VIDEO_INFO_HEIGHT(&s->info),
	    GST_VIDEO_INFO_N_PLANES(&s->info), offsets, strides);
	*ret_buf = buf;
	return GST_FLOW_OK;
}

/* A buffer came back: its slot, unless rendered (published), goes back to
 * the ring unpublished; the buffer itself is not kept. */
static void fbgst_pool_release_buffer(GstBufferPool *pool, GstBuffer *buf)
{
	GstFramebusSink *s = ((GstFramebusPool *)pool)->sink;
	struct fb_frame *frame = gst_mini_object_steal_qdata(GST_MINI_OBJECT(buf), slot_quark);
	if (frame)
		give_back(s, frame);
	gst_buffer_unref(buf);
}

static void fbgst_pool_init(GstFramebusPool *pool)
{
}

static void fbgst_pool_class_init(GstFramebusPoolClass *klass)
{
	GstBufferPoolClass *pool = GST_BUFFER_POOL_CLASS(klass);

	pool->get_options = fbgst_pool_get_options;
	pool->set_config = fbgst_pool_set_config;
	pool->acquire_buffer = fbgst_pool_acquire_buffer;
	pool->release_buffer = fbgst_pool_release_buffer;
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
	case PROP_COPIED:
		g_value_set_uint64(value, s->copied);
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
	s->copied = 0;
	s->said_too_big = FALSE;
	return TRUE;
}

/* No more slots lent: the pool's buffers still out give theirs back when
 * they come back (or were published). */
static void drop_pool(GstFramebusSink *s)
{
	if (!s->pool)
		return;
	gst_buffer_pool_set_active(s->pool, FALSE);
	gst_object_unref(s->pool);
	s->pool = NULL;
}

static gboolean fbgst_sink_stop(GstBaseSink *base)
{
	GstFramebusSink *s = (GstFramebusSink *)base;

	drop_pool(s);
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
		drop_pool(s);
		g_mutex_lock(&s->producer_lock);
		if (s->out)
			fb_producer_discard(s->producer, s->out);
		s->out = NULL;
		fb_client_unpublish(s->client, s->producer);
		s->producer = NULL;
		g_mutex_unlock(&s->producer_lock);
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
	const struct fb_layout *l = fb_producer_get_layout(s->producer);
	s->same_layout = GST_VIDEO_INFO_SIZE(info) == l->frame_size;
	for (guint p = 0; p < l->n_planes; p++)
		s->same_layout = s->same_layout &&
				 GST_VIDEO_INFO_PLANE_STRIDE(info, p) == (gint)l->stride[p] &&
				 GST_VIDEO_INFO_PLANE_OFFSET(info, p) == l->offset[p];
	return TRUE;
}

/* Offer upstream the ring's slots to write into. */
static gboolean fbgst_sink_propose_allocation(GstBaseSink *base, GstQuery *query)
{
	GstFramebusSink *s = (GstFramebusSink *)base;
	GstCaps *caps;
	gboolean need_pool;

	gst_query_parse_allocation(query, &caps, &need_pool);
	gst_query_add_allocation_meta(query, GST_VIDEO_META_API_TYPE, NULL);
	GstVideoInfo info;
	if (!s->producer || !caps || !gst_video_info_from_caps(&info, caps) ||
	    !gst_video_info_is_equal(&info, &s->info))
		return TRUE;
	if (!s->pool) {
		s->pool = g_object_new(fbgst_pool_get_type(), NULL);
		((GstFramebusPool *)s->pool)->sink = s;
		GstStructure *config = gst_buffer_pool_get_config(s->pool);
		gst_buffer_pool_config_set_params(
		    config, caps, (guint)fb_producer_get_layout(s->producer)->frame_size, 0, 1);
		gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
		gst_buffer_pool_set_config(s->pool, config);
	}
	/* One buffer at a time: a ring lends one slot at a time. */
	gst_query_add_allocation_pool(query, s->pool,
				      (guint)fb_producer_get_layout(s->producer)->frame_size, 0, 1);
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

/* A slot for the next frame, once the one out (if any) came back: GST_FLOW_OK
 * and the frame, GST_FLOW_OK and NULL for a frame a drop stream has no room
 * for, or why not. */
static GstFlowReturn take_slot(GstFramebusSink *s, struct fb_frame **ret_frame)
{
	GstFlowReturn ret = GST_FLOW_OK;
	int r = -ETIMEDOUT;

	*ret_frame = NULL;
	g_mutex_lock(&s->producer_lock);
	while (r == -ETIMEDOUT) {
		if (g_atomic_int_get(&s->flushing) || !s->producer) {
			ret = GST_FLOW_FLUSHING;
			break;
		}
		if (s->out) {
			g_cond_wait_until(&s->slot_free, &s->producer_lock,
					  g_get_monotonic_time() + SLICE_MS * 1000);
			continue;
		}
		r = fb_producer_acquire(s->producer, SLICE_MS, ret_frame);
		if (r == 0) {
			s->out = *ret_frame;
		} else if (r == -ENOBUFS) {
			GST_OBJECT_LOCK(s);
			s->dropped++;
			GST_OBJECT_UNLOCK(s);
			GST_LOG_OBJECT(s, "every slot held: frame dropped");
		} else if (r != -ETIMEDOUT) {
			GST_ELEMENT_ERROR(
			    s, RESOURCE, WRITE,
			    ("Cannot publish into stream '%s': %s", s->stream, fb_strerror(r)),
			    (NULL));
			ret = GST_FLOW_ERROR;
		}
	}
	g_mutex_unlock(&s->producer_lock);
	return ret;
}

/* Publish frame, the slot out (publish) or give it back unpublished. */
static int put_slot(GstFramebusSink *s, struct fb_frame *frame, gboolean publish)
{
	int r = -ESTALE;

	g_mutex_lock(&s->producer_lock);
	if (s->out == frame) { /* else its ring was made again since */
		r = publish ? fb_producer_publish(s->producer, frame)
			    : fb_producer_discard(s->producer, frame);
		s->out = NULL;
		g_cond_broadcast(&s->slot_free);
	}
	g_mutex_unlock(&s->producer_lock);
	return r;
}

static void give_back(GstFramebusSink *s, struct fb_frame *frame)
{
	put_slot(s, frame, FALSE);
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

/* Stamp frame, the slot out holding buf's pixels, and publish it. */
static GstFlowReturn publish(GstFramebusSink *s, GstBuffer *buf, struct fb_frame *frame)
{
	frame->pts = GST_BUFFER_PTS_IS_VALID(buf) ? (int64_t)GST_BUFFER_PTS(buf) : 0;
	frame->trace->time_base_num = 1;
	frame->trace->time_base_den = GST_SECOND;
	carry_meta(s, buf, frame);
	int r = put_slot(s, frame, TRUE);
	if (r == -ESTALE) /* a slot of the ring before the caps changed */
		return GST_FLOW_OK;
	if (r < 0) {
		GST_ELEMENT_ERROR(
		    s, RESOURCE, WRITE,
		    ("Cannot publish into stream '%s': %s", s->stream, fb_strerror(r)), (NULL));
		return GST_FLOW_ERROR;
	}
	return GST_FLOW_OK;
}

static GstFlowReturn fbgst_sink_show_frame(GstVideoSink *video, GstBuffer *buf)
{
	GstFramebusSink *s = (GstFramebusSink *)video;
	struct fb_frame *frame;
	GstVideoFrame in;

	/* Takes what the daemon said: after it came back, this publishes the
	 * ring to it again (the same ring: subscribers resubscribe to it). */
	fb_client_process(s->client);

	/* Upstream wrote into a slot of ours: publish it as it is.  The buffer
	 * keeps no claim on it (nor gives it back when it comes back). */
	frame = gst_mini_object_steal_qdata(GST_MINI_OBJECT(buf), slot_quark);
	if (frame)
		return publish(s, buf, frame);

	GstFlowReturn ret = take_slot(s, &frame);
	if (ret != GST_FLOW_OK || !frame)
		return ret;
	if (!gst_video_frame_map(&in, &s->info, buf, GST_MAP_READ)) {
		give_back(s, frame);
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
	GST_OBJECT_LOCK(s);
	s->copied++;
	GST_OBJECT_UNLOCK(s);
	return publish(s, buf, frame);
}

static void fbgst_sink_finalize(GObject *object)
{
	GstFramebusSink *s = (GstFramebusSink *)object;

	g_free(s->socket);
	g_free(s->stream);
	g_mutex_clear(&s->producer_lock);
	g_cond_clear(&s->slot_free);
	G_OBJECT_CLASS(fbgst_sink_parent_class)->finalize(object);
}

static void fbgst_sink_init(GstFramebusSink *s)
{
	s->slots = 8;
	s->policy = FB_POLICY_DROP;
	s->meta_max = 4096;
	g_mutex_init(&s->producer_lock);
	g_cond_init(&s->slot_free);
}

/* A frame is published once, when rendered, not at preroll too (a construct
 * property: set after construction). */
static void fbgst_sink_constructed(GObject *object)
{
	G_OBJECT_CLASS(fbgst_sink_parent_class)->constructed(object);
	g_object_set(object, "show-preroll-frame", FALSE, NULL);
	/* The last buffer may be a slot published since, which the ring owns. */
	g_object_set(object, "enable-last-sample", FALSE, NULL);
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
	g_object_class_install_property(
	    object, PROP_COPIED,
	    g_param_spec_uint64("copied", "Copied",
				"Frames copied into a slot because upstream wrote them elsewhere "
				"(it did not take the sink's pool: no GstVideoMeta, or a copy on "
				"the way); 0 when every frame was written in place",
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
	base->propose_allocation = fbgst_sink_propose_allocation;
	slot_quark = g_quark_from_static_string("framebus-slot");
	video->set_info = fbgst_sink_set_info;
	video->show_frame = fbgst_sink_show_frame;
	gst_type_mark_as_plugin_api(policy_get_type(), 0);
}
