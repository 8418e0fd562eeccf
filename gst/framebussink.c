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
 * Each publication (struct fbgst_pub: a client and its ring) is shared by
 * the sink, its pool and every buffer over one of its slots: the ring stays
 * mapped, and published, until the last of them lets go, in whatever thread
 * that is.  A ring has one slot out at a time (fb_producer_acquire()), so
 * the pool lends one buffer at a time, and whoever wants the next slot
 * (upstream's thread through the pool, or the sink's own to copy) waits
 * until the one out is published or given back.
 */
#include <errno.h>
#include <poll.h>
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

/* One publication of the stream. */
struct fbgst_pub {
	gint refs;
	GMutex lock;       /* over every call on client and producer, and out */
	GCond slot_free;   /* out went back, or the publication was retired */
	fb_client *client; /* its own connection: it may outlive the sink */
	fb_producer *producer;
	struct fb_frame *out; /* the slot lent and not yet published */
	gboolean retired;     /* the sink let go of it: lend nothing more */
	gint flushing;        /* atomic: the sink was told to unlock */
	GstVideoInfo info;    /* the ring's geometry as GStreamer sees it */
	gboolean same_layout; /* the ring's layout is GStreamer's default one */
	gint dropped;         /* atomic: frames a drop stream had no slot for */
};

/* A slot lent to one of the pool's buffers (qdata on the buffer); frame NULL:
 * the buffer is memory of its own, for a frame already counted as dropped. */
struct lease {
	struct fbgst_pub *pub;
	struct fb_frame *frame;
};

typedef struct {
	GstVideoSink parent;

	/* properties, under the object lock */
	gchar *socket;
	gchar *stream;
	guint slots;
	guint policy; /* enum fb_policy */
	guint meta_max;

	fb_client *connected;  /* start()'s connection, for the first publication */
	struct fbgst_pub *pub; /* the current publication */
	GstBufferPool *pool;   /* proposed upstream, lending its slots */
	guint64 dropped;       /* under the object lock: by publications retired */
	guint64 copied;        /* under the object lock: frames not written in place */
	gboolean said_too_big; /* warned once of side data past meta-max */
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

static struct fbgst_pub *pub_ref(struct fbgst_pub *pub)
{
	g_atomic_int_inc(&pub->refs);
	return pub;
}

/* The last one out withdraws the stream and unmaps its ring. */
static void pub_unref(gpointer data)
{
	struct fbgst_pub *pub = data;
	if (!pub || !g_atomic_int_dec_and_test(&pub->refs))
		return;
	fb_client_unpublish(pub->client, pub->producer);
	fb_client_free(pub->client);
	g_mutex_clear(&pub->lock);
	g_cond_clear(&pub->slot_free);
	g_free(pub);
}

/* The sink lets go of pub: the slot out (if any) goes back to the ring, the
 * buffer lent over it publishes nothing, and nobody waits for a slot any
 * more. */
static void pub_retire(struct fbgst_pub *pub)
{
	g_mutex_lock(&pub->lock);
	pub->retired = TRUE;
	if (pub->out)
		fb_producer_discard(pub->producer, pub->out);
	pub->out = NULL;
	/* Nothing may call back into a sink that may be gone. */
	fb_client_set_connection_callback(pub->client, NULL, NULL);
	g_cond_broadcast(&pub->slot_free);
	g_mutex_unlock(&pub->lock);
}

/* A slot for the next frame of pub, once the one out (if any) came back:
 * GST_FLOW_OK and the frame, GST_FLOW_OK and NULL for a frame a drop stream
 * has no room for (counted), GST_FLOW_FLUSHING when pub was retired or the
 * sink (or pool, if not NULL) is flushing, GST_FLOW_ERROR for a ring that
 * failed (*ret_error says how). */
static GstFlowReturn take_slot(struct fbgst_pub *pub, GstBufferPool *pool,
			       struct fb_frame **ret_frame, int *ret_error)
{
	GstFlowReturn ret = GST_FLOW_OK;
	int r = -ETIMEDOUT;

	*ret_frame = NULL;
	g_mutex_lock(&pub->lock);
	while (r == -ETIMEDOUT) {
		if (pub->retired || g_atomic_int_get(&pub->flushing) ||
		    (pool && GST_BUFFER_POOL_IS_FLUSHING(pool))) {
			ret = GST_FLOW_FLUSHING;
			break;
		}
		if (pub->out) {
			g_cond_wait_until(&pub->slot_free, &pub->lock,
					  g_get_monotonic_time() + SLICE_MS * 1000);
			continue;
		}
		r = fb_producer_acquire(pub->producer, SLICE_MS, ret_frame);
		if (r == 0) {
			pub->out = *ret_frame;
		} else if (r == -ENOBUFS) {
			g_atomic_int_inc(&pub->dropped);
		} else if (r != -ETIMEDOUT) {
			*ret_error = r;
			ret = GST_FLOW_ERROR;
		}
	}
	g_mutex_unlock(&pub->lock);
	return ret;
}

/* Publish frame, the slot out of pub (publish), or give it back unpublished.
 * -ESTALE: it is out no more (pub was retired since). */
static int put_slot(struct fbgst_pub *pub, struct fb_frame *frame, gboolean publish)
{
	int r = -ESTALE;

	g_mutex_lock(&pub->lock);
	if (pub->out == frame) {
		r = publish ? fb_producer_publish(pub->producer, frame)
			    : fb_producer_discard(pub->producer, frame);
		pub->out = NULL;
		g_cond_broadcast(&pub->slot_free);
	}
	g_mutex_unlock(&pub->lock);
	return r;
}

/* The pool framebussink proposes: each buffer is a slot of pub's ring. */
typedef struct {
	GstBufferPool parent;
	struct fbgst_pub *pub; /* a reference */
} GstFramebusPool;

typedef struct {
	GstBufferPoolClass parent_class;
} GstFramebusPoolClass;

GType fbgst_pool_get_type(void);
G_DEFINE_TYPE(GstFramebusPool, fbgst_pool, GST_TYPE_BUFFER_POOL)

static GQuark lease_quark;

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
	struct fbgst_pub *pub = ((GstFramebusPool *)pool)->pub;
	if (!pub->same_layout &&
	    !gst_buffer_pool_config_has_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META))
		return FALSE;
	return GST_BUFFER_POOL_CLASS(fbgst_pool_parent_class)->set_config(pool, config);
}

static GstFlowReturn fbgst_pool_acquire_buffer(GstBufferPool *pool, GstBuffer **ret_buf,
					       GstBufferPoolAcquireParams *params)
{
	struct fbgst_pub *pub = ((GstFramebusPool *)pool)->pub;
	struct fb_frame *frame;
	int error = 0;

	GstFlowReturn ret = take_slot(pub, pool, &frame, &error);
	if (ret != GST_FLOW_OK)
		return ret;
	const struct fb_layout *l = fb_producer_get_layout(pub->producer);
	GstBuffer *buf = gst_buffer_new();
	gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
	gint strides[GST_VIDEO_MAX_PLANES] = {0};
	struct lease *lease = g_new(struct lease, 1);
	lease->pub = pub;
	lease->frame = frame;
	if (frame) {
		/* The memory keeps the ring mapped as long as it lives. */
		uint8_t *base = frame->data[0] - l->offset[0];
		gst_buffer_append_memory(buf, gst_memory_new_wrapped(0, base, l->frame_size, 0,
								     l->frame_size, pub_ref(pub),
								     pub_unref));
		for (guint p = 0; p < l->n_planes; p++) {
			offsets[p] = l->offset[p];
			strides[p] = (gint)l->stride[p];
		}
	} else {
		/* A drop stream with every slot held: upstream writes this
		 * frame into memory of its own, and it is dropped. */
		gst_buffer_append_memory(
		    buf, gst_allocator_alloc(NULL, GST_VIDEO_INFO_SIZE(&pub->info), NULL));
		for (guint p = 0; p < GST_VIDEO_INFO_N_PLANES(&pub->info); p++) {
			offsets[p] = GST_VIDEO_INFO_PLANE_OFFSET(&pub->info, p);
			strides[p] = GST_VIDEO_INFO_PLANE_STRIDE(&pub->info, p);
		}
	}
	gst_mini_object_set_qdata(GST_MINI_OBJECT(buf), lease_quark, lease, g_free);
	gst_buffer_add_video_meta_full(
	    buf, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_INFO_FORMAT(&pub->info),
	    (guint)GST_VIDEO_INFO_WIDTH(&pub->info), (guint)GST_VIDEO_INFO_HEIGHT(&pub->info),
	    GST_VIDEO_INFO_N_PLANES(&pub->info), offsets, strides);
	*ret_buf = buf;
	return GST_FLOW_OK;
}

/* A buffer came back: its slot, unless rendered (published), goes back to
 * the ring unpublished; the buffer itself is not kept. */
static void fbgst_pool_release_buffer(GstBufferPool *pool, GstBuffer *buf)
{
	struct lease *lease = gst_mini_object_steal_qdata(GST_MINI_OBJECT(buf), lease_quark);
	if (lease && lease->frame)
		put_slot(lease->pub, lease->frame, FALSE);
	g_free(lease);
	gst_buffer_unref(buf);
}

/* Whoever waits for a slot through the pool looks at its flushing flag. */
static void fbgst_pool_flush_start(GstBufferPool *pool)
{
	struct fbgst_pub *pub = ((GstFramebusPool *)pool)->pub;
	g_mutex_lock(&pub->lock);
	g_cond_broadcast(&pub->slot_free);
	g_mutex_unlock(&pub->lock);
}

static void fbgst_pool_finalize(GObject *object)
{
	pub_unref(((GstFramebusPool *)object)->pub);
	G_OBJECT_CLASS(fbgst_pool_parent_class)->finalize(object);
}

static void fbgst_pool_init(GstFramebusPool *pool)
{
}

static void fbgst_pool_class_init(GstFramebusPoolClass *klass)
{
	GstBufferPoolClass *pool = GST_BUFFER_POOL_CLASS(klass);

	G_OBJECT_CLASS(klass)->finalize = fbgst_pool_finalize;
	pool->get_options = fbgst_pool_get_options;
	pool->set_config = fbgst_pool_set_config;
	pool->acquire_buffer = fbgst_pool_acquire_buffer;
	pool->release_buffer = fbgst_pool_release_buffer;
	pool->flush_start = fbgst_pool_flush_start;
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
		g_value_set_uint64(
		    value, s->dropped + (s->pub ? (guint64)g_atomic_int_get(&s->pub->dropped) : 0));
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

	if (!fbgst_connect(GST_ELEMENT(s), s->socket, s->stream, "framebussink", TRUE,
			   &s->connected))
		return FALSE;
	s->dropped = 0;
	s->copied = 0;
	s->said_too_big = FALSE;
	return TRUE;
}

/* Let go of the current publication and its pool: buffers still out keep
 * its ring until they go. */
static void let_go(GstFramebusSink *s)
{
	if (s->pool) {
		gst_buffer_pool_set_active(s->pool, FALSE);
		gst_object_unref(s->pool);
		s->pool = NULL;
	}
	if (!s->pub)
		return;
	pub_retire(s->pub);
	GST_OBJECT_LOCK(s);
	s->dropped += (guint64)g_atomic_int_get(&s->pub->dropped);
	struct fbgst_pub *pub = s->pub;
	s->pub = NULL;
	GST_OBJECT_UNLOCK(s);
	pub_unref(pub);
}

static gboolean fbgst_sink_stop(GstBaseSink *base)
{
	GstFramebusSink *s = (GstFramebusSink *)base;

	let_go(s);
	fb_client_free(s->connected);
	s->connected = NULL;
	return TRUE;
}

/* framebusd went away or came back (the client published the ring again). */
static void on_connection(void *userdata, bool connected, const char *detail)
{
	GstFramebusSink *s = userdata;
	if (connected)
		GST_ELEMENT_WARNING(s, RESOURCE, WRITE,
				    ("framebusd is back: stream '%s' published again", s->stream),
				    ("%s", detail));
	else
		GST_ELEMENT_WARNING(s, RESOURCE, WRITE,
				    ("Lost framebusd: stream '%s' is published again when it is "
				     "back",
				     s->stream),
				    ("%s", detail));
}

/* Publish the stream as caps describe it; again if its size or format
 * changed. */
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

	if (s->pub) {
		const GstVideoInfo *now = &s->pub->info;
		if (GST_VIDEO_INFO_FORMAT(now) == GST_VIDEO_INFO_FORMAT(info) &&
		    GST_VIDEO_INFO_WIDTH(now) == GST_VIDEO_INFO_WIDTH(info) &&
		    GST_VIDEO_INFO_HEIGHT(now) == GST_VIDEO_INFO_HEIGHT(info))
			return TRUE; /* a new rate or colorimetry: the same ring */
		GST_INFO_OBJECT(s, "caps changed: publishing '%s' again as %ux%u %s", s->stream,
				params.width, params.height, fb_format_name(params.format));
		let_go(s);
	}
	fb_client *client = s->connected;
	int r = 0;
	s->connected = NULL;
	if (!client)
		r = fb_client_connect(s->socket, "framebussink", &client);
	fb_producer *producer = NULL;
	if (r == 0)
		r = fb_client_publish(client, s->stream, &params, &producer);
	if (r < 0) {
		GST_ELEMENT_ERROR(s, RESOURCE, OPEN_WRITE,
				  ("Cannot publish stream '%s' (%ux%u %s, %u slots): %s", s->stream,
				   params.width, params.height, fb_format_name(params.format),
				   params.slots,
				   r == -EEXIST ? "the bus already has a stream of that name "
						  "(or buffers of its previous ring are still held)"
						: fb_strerror(r)),
				  ("%s", client ? fb_client_last_error(client) : ""));
		fb_client_free(client);
		return FALSE;
	}
	struct fbgst_pub *pub = g_new0(struct fbgst_pub, 1);
	pub->refs = 1;
	g_mutex_init(&pub->lock);
	g_cond_init(&pub->slot_free);
	pub->client = client;
	pub->producer = producer;
	pub->info = *info;
	const struct fb_layout *l = fb_producer_get_layout(producer);
	pub->same_layout = GST_VIDEO_INFO_SIZE(info) == l->frame_size;
	for (guint p = 0; p < l->n_planes; p++)
		pub->same_layout = pub->same_layout &&
				   GST_VIDEO_INFO_PLANE_STRIDE(info, p) == (gint)l->stride[p] &&
				   GST_VIDEO_INFO_PLANE_OFFSET(info, p) == l->offset[p];
	fb_client_set_connection_callback(client, on_connection, s);
	GST_OBJECT_LOCK(s);
	s->pub = pub;
	GST_OBJECT_UNLOCK(s);
	return TRUE;
}

/* Offer upstream the ring's slots to write into. */
static gboolean fbgst_sink_propose_allocation(GstBaseSink *base, GstQuery *query)
{
	GstFramebusSink *s = (GstFramebusSink *)base;
	GstCaps *caps;
	gboolean need_pool;
	GstVideoInfo info;

	gst_query_parse_allocation(query, &caps, &need_pool);
	gst_query_add_allocation_meta(query, GST_VIDEO_META_API_TYPE, NULL);
	if (!s->pub || !caps || !gst_video_info_from_caps(&info, caps) ||
	    GST_VIDEO_INFO_FORMAT(&info) != GST_VIDEO_INFO_FORMAT(&s->pub->info) ||
	    GST_VIDEO_INFO_WIDTH(&info) != GST_VIDEO_INFO_WIDTH(&s->pub->info) ||
	    GST_VIDEO_INFO_HEIGHT(&info) != GST_VIDEO_INFO_HEIGHT(&s->pub->info))
		return TRUE;
	guint size = (guint)fb_producer_get_layout(s->pub->producer)->frame_size;
	if (!s->pool) {
		s->pool = g_object_new(fbgst_pool_get_type(), NULL);
		((GstFramebusPool *)s->pool)->pub = pub_ref(s->pub);
		GstStructure *config = gst_buffer_pool_get_config(s->pool);
		gst_buffer_pool_config_set_params(config, caps, size, 0, 1);
		gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
		gst_buffer_pool_set_config(s->pool, config);
	}
	/* One buffer at a time: a ring lends one slot at a time. */
	gst_query_add_allocation_pool(query, s->pool, size, 0, 1);
	return TRUE;
}

static gboolean fbgst_sink_unlock(GstBaseSink *base)
{
	GstFramebusSink *s = (GstFramebusSink *)base;
	GST_OBJECT_LOCK(s);
	if (s->pub)
		g_atomic_int_set(&s->pub->flushing, 1);
	GST_OBJECT_UNLOCK(s);
	return TRUE;
}

static gboolean fbgst_sink_unlock_stop(GstBaseSink *base)
{
	GstFramebusSink *s = (GstFramebusSink *)base;
	GST_OBJECT_LOCK(s);
	if (s->pub)
		g_atomic_int_set(&s->pub->flushing, 0);
	GST_OBJECT_UNLOCK(s);
	return TRUE;
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

static GstFlowReturn failed(GstFramebusSink *s, int error)
{
	GST_ELEMENT_ERROR(s, RESOURCE, WRITE,
			  ("Cannot publish into stream '%s': %s", s->stream, fb_strerror(error)),
			  (NULL));
	return GST_FLOW_ERROR;
}

/* Stamp frame, the slot out of pub holding buf's pixels, and publish it. */
static GstFlowReturn publish(GstFramebusSink *s, struct fbgst_pub *pub, GstBuffer *buf,
			     struct fb_frame *frame)
{
	g_mutex_lock(&pub->lock);
	gboolean ours = pub->out == frame;
	g_mutex_unlock(&pub->lock);
	if (!ours) /* given back when its publication was retired */
		return GST_FLOW_OK;
	frame->pts = GST_BUFFER_PTS_IS_VALID(buf) ? (int64_t)GST_BUFFER_PTS(buf) : 0;
	frame->trace->time_base_num = 1;
	frame->trace->time_base_den = GST_SECOND;
	carry_meta(s, buf, frame);
	int r = put_slot(pub, frame, TRUE);
	return r < 0 && r != -ESTALE ? failed(s, r) : GST_FLOW_OK;
}

/* What framebusd said, if anything: after it came back, the client publishes
 * the ring to it again (the same ring: subscribers resubscribe to it). */
static void listen_to_daemon(struct fbgst_pub *pub)
{
	struct pollfd p = {.fd = fb_client_get_fd(pub->client), .events = POLLIN};
	if (poll(&p, 1, 0) <= 0)
		return;
	g_mutex_lock(&pub->lock);
	fb_client_process(pub->client);
	g_mutex_unlock(&pub->lock);
}

static GstFlowReturn fbgst_sink_show_frame(GstVideoSink *video, GstBuffer *buf)
{
	GstFramebusSink *s = (GstFramebusSink *)video;
	struct fbgst_pub *pub = s->pub;
	struct fb_frame *frame;
	GstVideoFrame in;
	int error = 0;

	if (!pub)
		return GST_FLOW_NOT_NEGOTIATED;
	listen_to_daemon(pub);

	/* Upstream wrote into a slot of ours: publish it as it is.  The buffer
	 * keeps no claim on the slot (nor gives it back when it comes back). */
	struct lease *lease = gst_mini_object_steal_qdata(GST_MINI_OBJECT(buf), lease_quark);
	if (lease) {
		frame = lease->frame;
		struct fbgst_pub *from = lease->pub;
		g_free(lease);
		if (!frame || from != pub) /* dropped, or a retired ring's */
			return GST_FLOW_OK;
		return publish(s, pub, buf, frame);
	}

	GstFlowReturn ret = take_slot(pub, NULL, &frame, &error);
	if (ret == GST_FLOW_ERROR)
		return failed(s, error);
	if (ret != GST_FLOW_OK || !frame)
		return ret;
	if (!gst_video_frame_map(&in, &pub->info, buf, GST_MAP_READ)) {
		put_slot(pub, frame, FALSE);
		GST_ELEMENT_ERROR(s, STREAM, FAILED, ("Cannot read a buffer's pixels"), (NULL));
		return GST_FLOW_ERROR;
	}
	const GstVideoFormatInfo *finfo = in.info.finfo;
	guint width = (guint)GST_VIDEO_INFO_WIDTH(&pub->info);
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
	return publish(s, pub, buf, frame);
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
	/* The last buffer may be a slot published since, which the ring owns. */
	g_object_set(object, "enable-last-sample", FALSE, NULL);
	/* With sync off (what a bus pipeline usually wants) QoS would tell
	 * upstream every frame is late and decoders would drop frames. */
	gst_base_sink_set_qos_enabled(GST_BASE_SINK(object), FALSE);
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
	lease_quark = g_quark_from_static_string("framebus-lease");
	video->set_info = fbgst_sink_set_info;
	video->show_frame = fbgst_sink_show_frame;
	gst_type_mark_as_plugin_api(policy_get_type(), 0);
}
