/* SPDX-License-Identifier: MIT */
/*
 * framebussrc: a live source of a stream's frames, with zero copies.
 *
 * Each buffer's memory is the slot itself (read-only, wrapped): the frame is
 * held while any buffer over it lives and released when the last goes, in
 * whatever thread that happens.  A subscription whose buffers are still out
 * when the daemon goes away stays mapped until they come back (struct
 * fbgst_ring), so a daemon restart costs downstream nothing but the gap.
 */
#include <errno.h>
#include <string.h>

#include <gst/base/gstpushsrc.h>

#include "gstframebus.h"

GST_DEBUG_CATEGORY_STATIC(fbgst_src_debug);
#define GST_CAT_DEFAULT fbgst_src_debug

/* How long one wait lasts before the thread looks at its flushing flag: what
 * a state change may wait for the source. */
#define SLICE_MS 100

/* The latency the source reports: the oldest of the last LATENCY_WINDOW
 * frames it pushed fresh (within FRESH_NS of their publish: not a backlog,
 * nor the newest frame already waiting when it subscribed), capture to push,
 * plus a margin; never above a second.  It grows at once and shrinks when a
 * window's oldest is under half of it. */
#define LATENCY_MARGIN_NS (2 * GST_MSECOND)
#define LATENCY_MAX_NS GST_SECOND
#define LATENCY_WINDOW 64
#define FRESH_NS (5 * GST_MSECOND)

/* The client, shared by the element and every subscription it made: the last
 * buffer of an old subscription may be freed in any thread after the element
 * stopped, and it unsubscribes through the client. */
struct fbgst_conn {
	gint refs;
	GMutex lock; /* over every call on client */
	fb_client *client;
};

/* One subscription: the element holds a reference while it reads it, each
 * buffer over one of its frames another. */
struct fbgst_ring {
	gint refs;
	struct fbgst_conn *conn;
	fb_subscriber *sub;
	GMutex lock; /* with released: a buffer went back (a hold is free) */
	GCond released;
	guint64 n_released; /* under lock: frames given back so far */
};

/* One frame lent to a buffer. */
struct lease {
	struct fbgst_ring *ring;
	const struct fb_frame *frame;
};

enum { PROP_0, PROP_SOCKET, PROP_STREAM, PROP_MODE, PROP_MAX_HOLDS };

typedef struct {
	GstPushSrc parent;

	/* properties, under the object lock */
	gchar *socket;
	gchar *stream;
	guint mode; /* enum fb_mode */
	guint max_holds;

	struct fbgst_conn *conn;
	struct fbgst_ring *ring;
	GstVideoInfo info;       /* the current ring's, as GStreamer sees it */
	gboolean video_meta;     /* downstream reads strides and offsets from GstVideoMeta */
	gboolean same_layout;    /* the ring's layout is GStreamer's default one */
	GstClockTime latency;    /* reported (under the object lock) */
	GstClockTime window_max; /* the oldest fresh frame of this window */
	guint window_n;          /* fresh frames in this window */
	gboolean said_copy;      /* warned that downstream cannot read the layout */
	gboolean said_holds;     /* said that downstream keeps max-holds frames */
	gint flushing;           /* atomic: unlock() was called */
} GstFramebusSrc;

typedef struct {
	GstPushSrcClass parent_class;
} GstFramebusSrcClass;

G_DEFINE_TYPE(GstFramebusSrc, fbgst_src, GST_TYPE_PUSH_SRC)

static GType mode_get_type(void)
{
	static GType type;
	static const GEnumValue values[] = {
	    {FB_MODE_LATEST, "The newest frame not seen yet (skip when behind)", "latest"},
	    {FB_MODE_QUEUE, "Every frame in order (a block stream waits for us)", "queue"},
	    {0, NULL, NULL},
	};
	if (g_once_init_enter(&type))
		g_once_init_leave(&type, g_enum_register_static("GstFramebusSrcMode", values));
	return type;
}

static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_VIDEO_CAPS_MAKE(FBGST_VIDEO_FORMATS)));

static void conn_unref(struct fbgst_conn *conn)
{
	if (!conn || !g_atomic_int_dec_and_test(&conn->refs))
		return;
	fb_client_free(conn->client);
	g_mutex_clear(&conn->lock);
	g_free(conn);
}

static struct fbgst_ring *ring_ref(struct fbgst_ring *ring)
{
	g_atomic_int_inc(&ring->refs);
	return ring;
}

static void ring_unref(struct fbgst_ring *ring)
{
	if (!ring || !g_atomic_int_dec_and_test(&ring->refs))
		return;
	g_mutex_lock(&ring->conn->lock);
	fb_client_unsubscribe(ring->conn->client, ring->sub);
	g_mutex_unlock(&ring->conn->lock);
	conn_unref(ring->conn);
	g_mutex_clear(&ring->lock);
	g_cond_clear(&ring->released);
	g_free(ring);
}

static struct fbgst_ring *ring_new(struct fbgst_conn *conn, fb_subscriber *sub)
{
	struct fbgst_ring *ring = g_new0(struct fbgst_ring, 1);
	ring->refs = 1;
	g_atomic_int_inc(&conn->refs);
	ring->conn = conn;
	ring->sub = sub;
	g_mutex_init(&ring->lock);
	g_cond_init(&ring->released);
	return ring;
}

/* The last buffer over a frame went away. */
static void lease_end(gpointer data)
{
	struct lease *lease = data;
	struct fbgst_ring *ring = lease->ring;

	fb_subscriber_release(ring->sub, lease->frame);
	g_mutex_lock(&ring->lock);
	ring->n_released++;
	g_cond_signal(&ring->released);
	g_mutex_unlock(&ring->lock);
	g_free(lease);
	ring_unref(ring);
}

static void fbgst_src_set_property(GObject *object, guint id, const GValue *value,
				   GParamSpec *pspec)
{
	GstFramebusSrc *s = (GstFramebusSrc *)object;

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
	case PROP_MODE:
		s->mode = (guint)g_value_get_enum(value);
		break;
	case PROP_MAX_HOLDS:
		s->max_holds = g_value_get_uint(value);
		break;
	default:
		G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
	}
	GST_OBJECT_UNLOCK(s);
}

static void fbgst_src_get_property(GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
	GstFramebusSrc *s = (GstFramebusSrc *)object;

	GST_OBJECT_LOCK(s);
	switch (id) {
	case PROP_SOCKET:
		g_value_set_string(value, s->socket);
		break;
	case PROP_STREAM:
		g_value_set_string(value, s->stream);
		break;
	case PROP_MODE:
		g_value_set_enum(value, (gint)s->mode);
		break;
	case PROP_MAX_HOLDS:
		g_value_set_uint(value, s->max_holds);
		break;
	default:
		G_OBJECT_WARN_INVALID_PROPERTY_ID(object, id, pspec);
	}
	GST_OBJECT_UNLOCK(s);
}

/* Take sub's geometry as the source's; FALSE (an element error posted) for
 * a ring GStreamer has no format for. */
static gboolean take_layout(GstFramebusSrc *s, fb_subscriber *sub)
{
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	GstVideoFormat format = fbgst_video_format(l->format);

	if (format == GST_VIDEO_FORMAT_UNKNOWN) {
		GST_ELEMENT_ERROR(s, STREAM, WRONG_TYPE,
				  ("Stream '%s' is a %s stream: framebussrc carries pictures only",
				   s->stream,
				   fb_format_name(l->format) ? fb_format_name(l->format) : "?"),
				  (NULL));
		return FALSE;
	}
	GstVideoInfo info;
	gst_video_info_set_format(&info, format, l->width, l->height);
	/* A stream's rate is its source's business (variable for a camera). */
	GST_VIDEO_INFO_FPS_N(&info) = 0;
	GST_VIDEO_INFO_FPS_D(&info) = 1;
	gboolean same = GST_VIDEO_INFO_SIZE(&info) == l->frame_size;
	for (guint p = 0; p < l->n_planes; p++)
		same = same && GST_VIDEO_INFO_PLANE_STRIDE(&info, p) == (gint)l->stride[p] &&
		       GST_VIDEO_INFO_PLANE_OFFSET(&info, p) == l->offset[p];
	GST_OBJECT_LOCK(s);
	s->info = info;
	s->same_layout = same;
	GST_OBJECT_UNLOCK(s);
	return TRUE;
}

static gboolean fbgst_src_stop(GstBaseSrc *base);

static gboolean fbgst_src_start(GstBaseSrc *base)
{
	GstFramebusSrc *s = (GstFramebusSrc *)base;
	fb_client *client;
	fb_subscriber *sub;
	int r;

	if (!fbgst_connect(GST_ELEMENT(s), s->socket, s->stream, "framebussrc", FALSE, &client))
		return FALSE;
	r = fb_client_subscribe(client, s->stream, s->mode, s->max_holds, &sub);
	if (r < 0) {
		GST_ELEMENT_ERROR(
		    s, RESOURCE, NOT_FOUND,
		    ("Cannot subscribe to stream '%s': %s", s->stream,
		     r == -ENOENT ? "framebusd has no stream of that name" : fb_strerror(r)),
		    ("%s", fb_client_last_error(client)));
		fb_client_free(client);
		return FALSE;
	}
	s->conn = g_new0(struct fbgst_conn, 1);
	s->conn->refs = 1;
	g_mutex_init(&s->conn->lock);
	s->conn->client = client;
	s->ring = ring_new(s->conn, sub);
	s->latency = 0;
	s->window_max = 0;
	s->window_n = 0;
	s->said_copy = FALSE;
	s->said_holds = FALSE;
	if (take_layout(s, sub))
		return TRUE;
	/* basesrc calls no stop() after a failed start(). */
	fbgst_src_stop(base);
	return FALSE;
}

static gboolean fbgst_src_stop(GstBaseSrc *base)
{
	GstFramebusSrc *s = (GstFramebusSrc *)base;

	ring_unref(s->ring);
	s->ring = NULL;
	conn_unref(s->conn);
	s->conn = NULL;
	return TRUE;
}

static GstCaps *fbgst_src_get_caps(GstBaseSrc *base, GstCaps *filter)
{
	GstFramebusSrc *s = (GstFramebusSrc *)base;
	GstCaps *caps;

	GST_OBJECT_LOCK(s);
	caps = s->ring ? gst_video_info_to_caps(&s->info)
		       : gst_pad_get_pad_template_caps(GST_BASE_SRC_PAD(base));
	GST_OBJECT_UNLOCK(s);
	if (filter) {
		GstCaps *both = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);
		gst_caps_unref(caps);
		caps = both;
	}
	return caps;
}

static gboolean fbgst_src_decide_allocation(GstBaseSrc *base, GstQuery *query)
{
	GstFramebusSrc *s = (GstFramebusSrc *)base;

	s->video_meta = gst_query_find_allocation_meta(query, GST_VIDEO_META_API_TYPE, NULL);
	if (!s->video_meta && !s->same_layout && !s->said_copy) {
		s->said_copy = TRUE;
		GST_ELEMENT_WARNING(s, STREAM, FORMAT,
				    ("Downstream cannot read padded rows (no GstVideoMeta): "
				     "every frame of '%s' is copied",
				     s->stream),
				    (NULL));
	}
	return GST_BASE_SRC_CLASS(fbgst_src_parent_class)->decide_allocation(base, query);
}

static gboolean fbgst_src_query(GstBaseSrc *base, GstQuery *query)
{
	GstFramebusSrc *s = (GstFramebusSrc *)base;

	if (GST_QUERY_TYPE(query) != GST_QUERY_LATENCY)
		return GST_BASE_SRC_CLASS(fbgst_src_parent_class)->query(base, query);
	GST_OBJECT_LOCK(s);
	GstClockTime latency = s->latency;
	GST_OBJECT_UNLOCK(s);
	/* No upper bound: the source buffers nothing itself, and whatever the
	 * pipeline's latency it hands the frame the ring has for it. */
	gst_query_set_latency(query, TRUE, latency, GST_CLOCK_TIME_NONE);
	GST_DEBUG_OBJECT(s, "latency %" GST_TIME_FORMAT, GST_TIME_ARGS(latency));
	return TRUE;
}

static gboolean fbgst_src_unlock(GstBaseSrc *base)
{
	GstFramebusSrc *s = (GstFramebusSrc *)base;

	g_atomic_int_set(&s->flushing, 1);
	return TRUE;
}

static gboolean fbgst_src_unlock_stop(GstBaseSrc *base)
{
	GstFramebusSrc *s = (GstFramebusSrc *)base;

	g_atomic_int_set(&s->flushing, 0);
	return TRUE;
}

/* The current subscription ended because framebusd went away (or its
 * publisher came back to a new one): subscribe again as soon as the stream is
 * back, as it is now (new caps if its geometry changed).  GST_FLOW_OK with a
 * new ring, GST_FLOW_EOS if the stream ended, GST_FLOW_FLUSHING if told to
 * stop first, GST_FLOW_ERROR (posted) otherwise. */
static GstFlowReturn follow(GstFramebusSrc *s)
{
	fb_subscriber *sub = NULL;
	int r;

	GST_INFO_OBJECT(s, "stream '%s' went away with its daemon; waiting for it", s->stream);
	for (;;) {
		if (g_atomic_int_get(&s->flushing))
			return GST_FLOW_FLUSHING;
		g_mutex_lock(&s->conn->lock);
		r = fb_client_resubscribe(s->conn->client, s->ring->sub, &sub);
		if (r == -ESTALE)
			r = fb_client_subscribe(s->conn->client, s->stream, s->mode, s->max_holds,
						&sub);
		g_mutex_unlock(&s->conn->lock);
		if (r == -EAGAIN || r == -ENOENT || r == -ECONNRESET || r == -ECONNREFUSED) {
			g_usleep(SLICE_MS * 1000);
			continue;
		}
		break;
	}
	if (r == -EPIPE)
		return GST_FLOW_EOS;
	if (r < 0) {
		GST_ELEMENT_ERROR(
		    s, RESOURCE, READ,
		    ("Cannot subscribe to stream '%s' again: %s", s->stream, fb_strerror(r)),
		    (NULL));
		return GST_FLOW_ERROR;
	}
	GstVideoInfo before = s->info;
	struct fbgst_ring *old = s->ring;
	GST_OBJECT_LOCK(s);
	s->ring = ring_new(s->conn, sub);
	GST_OBJECT_UNLOCK(s);
	ring_unref(old);
	if (!take_layout(s, sub))
		return GST_FLOW_ERROR;
	if (!gst_video_info_is_equal(&before, &s->info)) {
		GST_INFO_OBJECT(s, "stream '%s' came back as %dx%d %s", s->stream,
				GST_VIDEO_INFO_WIDTH(&s->info), GST_VIDEO_INFO_HEIGHT(&s->info),
				gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&s->info)));
		if (!gst_base_src_negotiate(GST_BASE_SRC(s)))
			return GST_FLOW_NOT_NEGOTIATED;
	}
	GST_INFO_OBJECT(s, "subscribed to '%s' again", s->stream);
	return GST_FLOW_OK;
}

/* The next frame, held: GST_FLOW_OK, or why there is none. */
static GstFlowReturn next_frame(GstFramebusSrc *s, const struct fb_frame **ret_frame)
{
	for (;;) {
		if (g_atomic_int_get(&s->flushing))
			return GST_FLOW_FLUSHING;
		struct fbgst_ring *ring = s->ring;
		g_mutex_lock(&ring->lock);
		guint64 released = ring->n_released;
		g_mutex_unlock(&ring->lock);
		int r = fb_subscriber_acquire(ring->sub, SLICE_MS, ret_frame);
		if (r == 0)
			return GST_FLOW_OK;
		if (r == -ETIMEDOUT || r == -EINTR)
			continue;
		if (r == -EDQUOT) {
			/* Downstream holds max-holds frames: wait until it gives one
			 * back. */
			gint64 until = g_get_monotonic_time() + SLICE_MS * 1000;
			g_mutex_lock(&ring->lock);
			while (ring->n_released == released &&
			       g_cond_wait_until(&ring->released, &ring->lock, until))
				;
			g_mutex_unlock(&ring->lock);
			continue;
		}
		if (r == -EPIPE)
			return GST_FLOW_EOS;
		if (r == -EOWNERDEAD || r == -ECANCELED) {
			GstFlowReturn ret = follow(s);
			if (ret != GST_FLOW_OK)
				return ret;
			continue;
		}
		GST_ELEMENT_ERROR(s, RESOURCE, READ,
				  ("Cannot read stream '%s': %s", s->stream, fb_strerror(r)),
				  (NULL));
		return GST_FLOW_ERROR;
	}
}

/* frame's capture time (else its publish time) as running time, and its age
 * at now (fb_now_ns()); GST_CLOCK_TIME_NONE without a clock. */
static GstClockTime running_time(GstFramebusSrc *s, const struct fb_frame *frame, uint64_t now,
				 uint64_t *ret_age)
{
	uint64_t captured =
	    frame->trace->capture_ns ? frame->trace->capture_ns : frame->monotonic_ns;
	*ret_age = now > captured ? now - captured : 0;

	GstClock *clock = gst_element_get_clock(GST_ELEMENT(s));
	if (!clock)
		return GST_CLOCK_TIME_NONE;
	GstClockTime clock_now = gst_clock_get_time(clock);
	gst_object_unref(clock);
	GstClockTime base = gst_element_get_base_time(GST_ELEMENT(s));
	if (clock_now < base + *ret_age)
		return 0;
	return clock_now - base - *ret_age;
}

/* A buffer of frame's pixels: the slot itself, lent until the buffer goes
 * (*ret_lent), or a copy in GStreamer's default layout.  A copy for a
 * downstream that cannot read the ring's layout, and for the frame that
 * would take the subscription's last hold: a downstream that keeps frames
 * (an encoder's lookahead, a queue) would otherwise stop the source for good
 * once it holds max-holds of them. */
static GstBuffer *wrap(GstFramebusSrc *s, const struct fb_frame *frame, gboolean *ret_lent)
{
	fb_subscriber *sub = s->ring->sub;
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	uint8_t *base = frame->data[0] - l->offset[0];
	gboolean last_hold = fb_subscriber_get_held(sub) >= fb_subscriber_get_max_holds(sub);
	GstBuffer *buf;

	if (last_hold && !s->said_holds) {
		s->said_holds = TRUE;
		GST_ELEMENT_INFO(
		    s, RESOURCE, BUSY,
		    ("Downstream keeps %u frames of '%s' (max-holds): frames are copied "
		     "while it does",
		     fb_subscriber_get_max_holds(sub) - 1, s->stream),
		    (NULL));
	}
	*ret_lent = !last_hold && (s->video_meta || s->same_layout);
	if (!*ret_lent) {
		GstVideoFrame out;
		buf = gst_buffer_new_allocate(NULL, GST_VIDEO_INFO_SIZE(&s->info), NULL);
		gst_video_frame_map(&out, &s->info, buf, GST_MAP_WRITE);
		for (guint p = 0; p < l->n_planes; p++) {
			guint rows = l->plane_height[p];
			gint stride = GST_VIDEO_FRAME_PLANE_STRIDE(&out, p);
			guint8 *to = GST_VIDEO_FRAME_PLANE_DATA(&out, p);
			for (guint y = 0; y < rows; y++)
				memcpy(to + (gsize)y * stride,
				       frame->data[p] + (gsize)y * frame->stride[p],
				       MIN((guint)stride, frame->stride[p]));
		}
		gst_video_frame_unmap(&out);
		return buf;
	}
	struct lease *lease = g_new(struct lease, 1);
	lease->ring = ring_ref(s->ring);
	lease->frame = frame;
	buf = gst_buffer_new();
	gst_buffer_append_memory(buf, gst_memory_new_wrapped(GST_MEMORY_FLAG_READONLY, base,
							     l->frame_size, 0, l->frame_size, lease,
							     lease_end));
	/* The memory is the slot's and stays so: no pool hands it out again. */
	GST_BUFFER_FLAG_UNSET(buf, GST_BUFFER_FLAG_TAG_MEMORY);
	gsize offsets[GST_VIDEO_MAX_PLANES] = {0};
	gint strides[GST_VIDEO_MAX_PLANES] = {0};
	for (guint p = 0; p < l->n_planes; p++) {
		offsets[p] = l->offset[p];
		strides[p] = (gint)l->stride[p];
	}
	gst_buffer_add_video_meta_full(buf, GST_VIDEO_FRAME_FLAG_NONE,
				       GST_VIDEO_INFO_FORMAT(&s->info), l->width, l->height,
				       l->n_planes, offsets, strides);
	return buf;
}

/* Say a latency that covers frame, pushed at now, age after its capture. */
static void account_latency(GstFramebusSrc *s, const struct fb_frame *frame, uint64_t now,
			    uint64_t age)
{
	if (gst_base_src_get_do_timestamp(GST_BASE_SRC(s)) || now - frame->monotonic_ns > FRESH_NS)
		return;
	s->window_max = MAX(s->window_max, age);
	GstClockTime want = MIN(s->window_max + LATENCY_MARGIN_NS, LATENCY_MAX_NS);
	gboolean change = want > s->latency;
	if (++s->window_n == LATENCY_WINDOW) {
		change = change || want < s->latency / 2;
		s->window_max = 0;
		s->window_n = 0;
	}
	if (!change)
		return;
	GST_OBJECT_LOCK(s);
	s->latency = want;
	GST_OBJECT_UNLOCK(s);
	GST_INFO_OBJECT(s, "latency now %" GST_TIME_FORMAT, GST_TIME_ARGS(want));
	gst_element_post_message(GST_ELEMENT(s), gst_message_new_latency(GST_OBJECT(s)));
}

static GstFlowReturn fbgst_src_create(GstPushSrc *push, GstBuffer **ret_buf)
{
	GstFramebusSrc *s = (GstFramebusSrc *)push;
	const struct fb_frame *frame;
	uint64_t age;

	GstFlowReturn ret = next_frame(s, &frame);
	if (ret != GST_FLOW_OK)
		return ret;

	uint64_t now = fb_now_ns();
	GstClockTime pts = running_time(s, frame, now, &age);
	gboolean lent;
	GstBuffer *buf = wrap(s, frame, &lent);
	if (!gst_base_src_get_do_timestamp(GST_BASE_SRC(s)))
		GST_BUFFER_PTS(buf) = pts;
	GST_BUFFER_OFFSET(buf) = frame->seq;
	GST_BUFFER_OFFSET_END(buf) = frame->seq + 1;
	if (frame->missed || (frame->flags & FB_FRAME_DISCONTINUITY))
		GST_BUFFER_FLAG_SET(buf, GST_BUFFER_FLAG_DISCONT);

	static GstCaps *unix_time;
	if (g_once_init_enter(&unix_time))
		g_once_init_leave(&unix_time, gst_caps_new_empty_simple("timestamp/x-unix"));
	uint64_t realtime = frame->trace->capture_realtime_ns ? frame->trace->capture_realtime_ns
							      : frame->realtime_ns;
	gst_buffer_add_reference_timestamp_meta(buf, unix_time, realtime, GST_CLOCK_TIME_NONE);
	fbgst_meta_add(buf, s->stream, frame);
	account_latency(s, frame, now, age);
	/* A copy's frame goes back once everything was read from its slot. */
	if (!lent)
		fb_subscriber_release(s->ring->sub, frame);
	*ret_buf = buf;
	return GST_FLOW_OK;
}

static void fbgst_src_finalize(GObject *object)
{
	GstFramebusSrc *s = (GstFramebusSrc *)object;

	g_free(s->socket);
	g_free(s->stream);
	G_OBJECT_CLASS(fbgst_src_parent_class)->finalize(object);
}

static void fbgst_src_init(GstFramebusSrc *s)
{
	s->mode = FB_MODE_LATEST;
	gst_base_src_set_live(GST_BASE_SRC(s), TRUE);
	gst_base_src_set_format(GST_BASE_SRC(s), GST_FORMAT_TIME);
}

static void fbgst_src_class_init(GstFramebusSrcClass *klass)
{
	GObjectClass *object = G_OBJECT_CLASS(klass);
	GstElementClass *element = GST_ELEMENT_CLASS(klass);
	GstBaseSrcClass *base = GST_BASE_SRC_CLASS(klass);

	GST_DEBUG_CATEGORY_INIT(fbgst_src_debug, "framebussrc", 0, "framebus source");
	object->set_property = fbgst_src_set_property;
	object->get_property = fbgst_src_get_property;
	object->finalize = fbgst_src_finalize;

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
				"The stream to read, as `framebusctl status` names it", NULL, rw));
	g_object_class_install_property(
	    object, PROP_MODE,
	    g_param_spec_enum("mode", "Mode",
			      "latest: the newest frame each time (a slow pipeline skips "
			      "frames); queue: every frame in order",
			      mode_get_type(), FB_MODE_LATEST, rw));
	g_object_class_install_property(
	    object, PROP_MAX_HOLDS,
	    g_param_spec_uint("max-holds", "Max holds",
			      "Frames downstream may hold at once before the source waits "
			      "(0: the daemon's default)",
			      0, 64, 0, rw));

	gst_element_class_add_static_pad_template(element, &src_template);
	gst_element_class_set_static_metadata(
	    element, "framebus source", "Source/Video",
	    "Frames of a framebus stream, zero-copy: each buffer is a read-only view of "
	    "its ring slot, timestamped with the frame's capture time",
	    "framebus");

	base->start = fbgst_src_start;
	base->stop = fbgst_src_stop;
	base->get_caps = fbgst_src_get_caps;
	base->decide_allocation = fbgst_src_decide_allocation;
	base->query = fbgst_src_query;
	base->unlock = fbgst_src_unlock;
	base->unlock_stop = fbgst_src_unlock_stop;
	GST_PUSH_SRC_CLASS(klass)->create = fbgst_src_create;
	gst_type_mark_as_plugin_api(mode_get_type(), 0);
}
