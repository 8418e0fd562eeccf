/* SPDX-License-Identifier: MIT */
/* framebus.Publisher and framebus.OutFrame: offering a stream on the bus. */
#include "fbpy.h" /* Python.h first, as the C-API asks */

#include <errno.h>

struct fbpy_outframe;

struct fbpy_publisher {
	PyObject_HEAD
	struct fbpy_child link;
	struct fbpy_bus *bus;
	fb_producer *producer; /* NULL once unpublished */
	PyObject *name;
	uint32_t format, width, height, slots, policy, meta_max;
	bool closed;
	bool busy;                     /* a thread is inside frame() */
	Py_ssize_t mapped;             /* frame objects that may still touch the ring */
	struct fbpy_outframe *current; /* borrowed: the frame being written */
	struct fbpy_view view;
};

struct fbpy_outframe {
	PyObject_HEAD
	struct fbpy_publisher *owner;
	struct fb_frame *frame; /* NULL once published or discarded */
	Py_ssize_t exports;
	bool counted; /* in its publisher's mapped count */
	uint64_t seq; /* once published */
	bool published;
};

static PyTypeObject *fbpy_publisher_type, *fbpy_outframe_type;

static void publisher_closing(struct fbpy_publisher *p);
static void outframe_done(struct fbpy_outframe *o);

static void publisher_maybe_free(struct fbpy_publisher *p)
{
	if (!p->producer || !p->closed || p->busy || p->mapped > 0)
		return;
	struct fbpy_bus *bus = p->bus;
	fbpy_bus_lock(bus);
	fb_client_unpublish(bus->client, p->producer);
	fbpy_bus_unlock(bus);
	p->producer = NULL;
	fbpy_bus_release(bus, &p->link);
}

static void publisher_close_child(struct fbpy_child *child)
{
	struct fbpy_publisher *p =
	    (struct fbpy_publisher *)((char *)child - offsetof(struct fbpy_publisher, link));
	publisher_closing(p);
}

/* The ring for params (format, width and height checked by the caller), as
 * a Publisher of name on bus. */
static PyObject *publisher_make(struct fbpy_bus *bus, const char *name, const char *policy_name,
				struct fb_ring_params params)
{
	struct fb_layout layout;
	fb_producer *producer;
	int r;

	if (params.slots < FB_MIN_SLOTS || params.slots > FB_MAX_SLOTS)
		return PyErr_Format(PyExc_ValueError, "slots must be %d..%d, not %u", FB_MIN_SLOTS,
				    FB_MAX_SLOTS, params.slots);
	if (params.meta_max > FB_MAX_META)
		return PyErr_Format(PyExc_ValueError, "meta_max must be 0..%d, not %u", FB_MAX_META,
				    params.meta_max);
	if (strcmp(policy_name, "drop") == 0)
		params.policy = FB_POLICY_DROP;
	else if (strcmp(policy_name, "block") == 0)
		params.policy = FB_POLICY_BLOCK;
	else
		return PyErr_Format(PyExc_ValueError, "policy must be 'drop' or 'block', not '%s'",
				    policy_name);
	fb_layout_compute(params.width, params.height, params.format, &layout);

	fbpy_bus_lock(bus);
	r = fb_client_publish(bus->client, name, &params, &producer);
	const char *why = r < 0 ? fb_client_last_error(bus->client) : "";
	fbpy_bus_unlock(bus);
	if (r < 0)
		return fbpy_raise(r, &(struct fbpy_failure){FBPY_PUBLISH, .name = name,
							     .path = bus->path, .why = why});

	struct fbpy_publisher *p = PyObject_New(struct fbpy_publisher, fbpy_publisher_type);
	if (!p) {
		fb_client_unpublish(bus->client, producer);
		return NULL;
	}
	p->bus = (struct fbpy_bus *)Py_NewRef(bus);
	p->producer = producer;
	p->format = params.format;
	p->width = params.width;
	p->height = params.height;
	p->slots = params.slots;
	p->policy = params.policy;
	p->meta_max = params.meta_max;
	p->closed = p->busy = false;
	p->mapped = 0;
	p->current = NULL;
	p->link.close = publisher_close_child;
	fbpy_bus_adopt(bus, &p->link);
	p->name = PyUnicode_FromString(name);
	if (!p->name || fbpy_view_init(&p->view, &layout) < 0) {
		Py_DECREF(p);
		return NULL;
	}
	return (PyObject *)p;
}

/* Bus.publish(), which fbpy_publisher_init_types() gives Bus. */
static PyObject *publisher_new(struct fbpy_bus *bus, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"name",  "width",  "height",   "format",
				 "slots", "policy", "meta_max", NULL};
	const char *name, *format_name = "bgr24", *policy_name = "drop";
	struct fb_ring_params params = {.slots = 4, .meta_max = 4096};
	struct fb_layout layout;
	int format;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "sII|sIsI:publish", kwlist, &name,
					 &params.width, &params.height, &format_name,
					 &params.slots, &policy_name, &params.meta_max))
		return NULL;
	if (fbpy_bus_check(bus) < 0)
		return NULL;
	if ((format = fb_format_from_name(format_name)) < 0)
		return PyErr_Format(PyExc_ValueError,
				    "unknown pixel format '%s' (framebus.formats() lists them)",
				    format_name);
	if (format == FB_FORMAT_RESULTS)
		return PyErr_Format(PyExc_ValueError,
				    "a results stream has no pixels: Bus.publish_results() makes one");
	if (fb_layout_compute(params.width, params.height, (uint32_t)format, &layout) < 0)
		return PyErr_Format(PyExc_ValueError,
				    "%ux%u is not a valid %s frame size (1..%d, even for "
				    "nv12 and yuv420p, an even width for yuyv422)",
				    params.width, params.height, format_name, FB_MAX_DIMENSION);
	params.format = (uint32_t)format;
	return publisher_make(bus, name, policy_name, params);
}

/* Bus.publish_results(). */
static PyObject *publisher_new_results(struct fbpy_bus *bus, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"name", "slots", "policy", "meta_max", NULL};
	const char *name, *policy_name = "drop";
	struct fb_ring_params params = {.format = FB_FORMAT_RESULTS, .slots = 16, .meta_max = 4096};

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|IsI:publish_results", kwlist, &name,
					 &params.slots, &policy_name, &params.meta_max))
		return NULL;
	if (fbpy_bus_check(bus) < 0)
		return NULL;
	if (params.meta_max == 0)
		return PyErr_Format(PyExc_ValueError,
				    "meta_max must be 1..%d: a record is carried there",
				    FB_MAX_META);
	return publisher_make(bus, name, policy_name, params);
}

static PyMethodDef publish_method = {
    "publish", (PyCFunction)(void (*)(void))publisher_new, METH_VARARGS | METH_KEYWORDS,
    "publish(name, width, height, format='bgr24', slots=4, policy='drop', meta_max=4096)"
    " -> Publisher\n--\n\n"
    "Offer a stream of your own on the bus.  policy 'drop' never waits (a frame\n"
    "finding every slot held raises FrameDropped); 'block' waits for queue\n"
    "subscribers, so none loses a frame."};

static PyMethodDef publish_results_method = {
    "publish_results", (PyCFunction)(void (*)(void))publisher_new_results,
    METH_VARARGS | METH_KEYWORDS,
    "publish_results(name, slots=16, policy='drop', meta_max=4096) -> Publisher\n--\n\n"
    "Offer a results stream: records (JSON or bytes, up to meta_max) with no\n"
    "pixels, each about a picture: pub.send(record, made_from=frame).\n"
    "Subscribers read frame.meta; policy as for publish()."};

static void publisher_dealloc(struct fbpy_publisher *p)
{
	p->closed = true;
	publisher_maybe_free(p);
	Py_XDECREF(p->name);
	Py_DECREF(p->bus);
	PyTypeObject *type = Py_TYPE(p);
	PyObject_Free(p);
	Py_DECREF(type);
}

static int publisher_check(struct fbpy_publisher *p)
{
	if (p->closed || p->bus->closed) {
		PyErr_Format(PyExc_ValueError, "the publisher of '%U' is closed", p->name);
		return -1;
	}
	return 0;
}

struct frame_attempt {
	struct fbpy_publisher *p;
	struct fb_frame *frame;
};

/* One try of frame() (an fbpy_attempt).  The producer reads the subscribers
 * framebusd sends it from its own channel: the client is not involved. */
static int frame_attempt(void *data, int slice_ms)
{
	struct frame_attempt *a = data;
	int r;

	Py_BEGIN_ALLOW_THREADS r = fb_producer_acquire(a->p->producer, slice_ms, &a->frame);
	Py_END_ALLOW_THREADS return r;
}

static PyObject *publisher_frame(struct fbpy_publisher *p, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"timeout", NULL};
	PyObject *timeout = Py_None;
	struct frame_attempt a = {p, NULL};
	int64_t timeout_ms;
	uint64_t deadline;
	int r;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:frame", kwlist, &timeout))
		return NULL;
	if ((timeout_ms = fbpy_timeout_ms(timeout)) < -1 || publisher_check(p) < 0)
		return NULL;
	if (p->busy)
		return PyErr_Format(PyExc_RuntimeError, "another thread is taking a frame of '%U'",
				    p->name);
	if (p->current)
		return PyErr_Format(PyExc_RuntimeError,
				    "the last frame of '%U' is neither published nor discarded",
				    p->name);
	/* Only a block-policy stream waits for a slot. */
	deadline = fbpy_deadline(p->policy == FB_POLICY_BLOCK ? timeout_ms : 0);
	/* After a daemon restart, publish the stream again: its subscribers
	 * come back to it. */
	fbpy_bus_keep_connected(p->bus);
	p->busy = true;
	r = fbpy_wait(deadline, frame_attempt, &a);
	p->busy = false;
	struct fb_frame *f = a.frame;
	if (r == 0 && p->closed) {
		fb_producer_discard(p->producer, f);
		r = -EBADF;
	}
	if (p->closed)
		publisher_maybe_free(p);
	if (PyErr_Occurred())
		return NULL;
	if (r < 0)
		return fbpy_raise(r, &(struct fbpy_failure){FBPY_FRAME,
							     .name = PyUnicode_AsUTF8(p->name)});

	struct fbpy_outframe *o = PyObject_New(struct fbpy_outframe, fbpy_outframe_type);
	if (!o) {
		fb_producer_discard(p->producer, f);
		return NULL;
	}
	o->owner = (struct fbpy_publisher *)Py_NewRef(p);
	o->frame = f;
	o->seq = 0;
	o->published = false;
	o->exports = 0;
	o->counted = true;
	f->pts = 0;
	f->flags = 0;
	f->source_seq = 0;
	f->meta_size = 0;
	p->mapped++;
	p->current = o;
	return (PyObject *)o;
}

static void publisher_closing(struct fbpy_publisher *p)
{
	p->closed = true;
	if (p->current) { /* a frame being written never reaches anyone now */
		fb_producer_discard(p->producer, p->current->frame);
		outframe_done(p->current);
	}
	publisher_maybe_free(p);
}

static PyObject *publisher_close(struct fbpy_publisher *p, PyObject *unused)
{
	if (!p->closed)
		publisher_closing(p);
	Py_RETURN_NONE;
}

static PyObject *publisher_exit(struct fbpy_publisher *p, PyObject *args)
{
	return publisher_close(p, NULL);
}

static PyObject *publisher_repr(struct fbpy_publisher *p)
{
	return PyUnicode_FromFormat("<framebus.Publisher '%U' %ux%u %s%s>", p->name,
				    (unsigned)p->width, (unsigned)p->height,
				    fb_format_name(p->format), p->closed ? " closed" : "");
}

static PyObject *pub_get_name(struct fbpy_publisher *p, void *unused)
{
	return Py_NewRef(p->name);
}

static PyObject *pub_get_format(struct fbpy_publisher *p, void *unused)
{
	return PyUnicode_FromString(fb_format_name(p->format));
}

static PyObject *pub_get_policy(struct fbpy_publisher *p, void *unused)
{
	return PyUnicode_FromString(p->policy == FB_POLICY_BLOCK ? "block" : "drop");
}

static PyObject *pub_get_width(struct fbpy_publisher *p, void *unused)
{
	return PyLong_FromUnsignedLong(p->width);
}

static PyObject *pub_get_height(struct fbpy_publisher *p, void *unused)
{
	return PyLong_FromUnsignedLong(p->height);
}

static PyObject *pub_get_slots(struct fbpy_publisher *p, void *unused)
{
	return PyLong_FromUnsignedLong(p->slots);
}

static PyObject *pub_get_meta_max(struct fbpy_publisher *p, void *unused)
{
	return PyLong_FromUnsignedLong(p->meta_max);
}

static PyObject *pub_get_shape(struct fbpy_publisher *p, void *unused)
{
	return fbpy_view_shape(&p->view);
}

static PyObject *pub_get_closed(struct fbpy_publisher *p, void *unused)
{
	return PyBool_FromLong(p->closed || p->bus->closed);
}

static PyObject *pub_get_stats(struct fbpy_publisher *p, void *unused)
{
	struct fb_ring_stats st = {0};
	if (p->producer)
		fb_producer_get_stats(p->producer, &st);
	return Py_BuildValue("{s:K,s:K,s:I,s:I}", "published", (unsigned long long)st.published,
			     "dropped", (unsigned long long)st.dropped, "subscribers",
			     st.subscribers, "held", st.held);
}

static PyObject *publisher_send(struct fbpy_publisher *p, PyObject *args, PyObject *kwds);

static PyMethodDef publisher_methods[] = {
    {"frame", (PyCFunction)(void (*)(void))publisher_frame, METH_VARARGS | METH_KEYWORDS,
     "frame(timeout=None) -> OutFrame\n--\n\n"
     "Take a slot to write the next frame into.  Use it in a with block: the\n"
     "frame is published when the block ends normally, discarded if it raises.\n"
     "A 'drop' stream never waits and raises FrameDropped when subscribers hold\n"
     "every slot; a 'block' stream waits up to timeout seconds (None: forever)\n"
     "for a queue subscriber to catch up, then raises TimeoutError."},
    {"send", (PyCFunction)(void (*)(void))publisher_send, METH_VARARGS | METH_KEYWORDS,
     "send(record, *, made_from=None, timeout=None) -> int\n--\n\n"
     "Publish one record (bytes-like or str, up to meta_max) on a results stream\n"
     "and return its seq.  made_from (a Frame still held) names the picture it\n"
     "is about.  Waits and raises as frame() does."},
    {"close", (PyCFunction)publisher_close, METH_NOARGS,
     "close()\n--\n\n"
     "Withdraw the stream: its subscribers read what is left, then see the end\n"
     "of the stream.  Frame objects still alive keep the ring mapped."},
    {"__enter__", fbpy_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)publisher_exit, METH_VARARGS, NULL},
    {NULL},
};

static PyGetSetDef publisher_getset[] = {
    {"name", (getter)pub_get_name, NULL, "The stream's name.", NULL},
    {"format", (getter)pub_get_format, NULL, "The pixel format name.", NULL},
    {"policy", (getter)pub_get_policy, NULL, "'drop' or 'block'.", NULL},
    {"width", (getter)pub_get_width, NULL, "Frame width in pixels.", NULL},
    {"height", (getter)pub_get_height, NULL, "Frame height in pixels.", NULL},
    {"slots", (getter)pub_get_slots, NULL, "Frame slots in the ring.", NULL},
    {"meta_max", (getter)pub_get_meta_max, NULL, "Bytes of side data a frame may carry.", NULL},
    {"shape", (getter)pub_get_shape, NULL, "The shape of OutFrame.array.", NULL},
    {"closed", (getter)pub_get_closed, NULL, "Whether it (or its bus) was closed.", NULL},
    {"stats", (getter)pub_get_stats, NULL,
     "{'published', 'dropped', 'subscribers', 'held'}: the ring's counters.", NULL},
    {NULL},
};

static PyType_Slot publisher_slots[] = {
    {Py_tp_dealloc, publisher_dealloc},
    {Py_tp_methods, publisher_methods},
    {Py_tp_getset, publisher_getset},
    {Py_tp_repr, publisher_repr},
    {Py_tp_doc, "A stream this process publishes; made by Bus.publish()."},
    {0, NULL},
};

static PyType_Spec publisher_spec = {
    .name = "framebus.Publisher",
    .basicsize = sizeof(struct fbpy_publisher),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = publisher_slots,
};

/* ------------------------------------------------------------------------ */

static int outframe_check(struct fbpy_outframe *o)
{
	if (!o->frame) {
		PyErr_Format(PyExc_ValueError, "frame of '%U' was already %s", o->owner->name,
			     o->published ? "published" : "discarded");
		return -1;
	}
	return 0;
}

/* Once neither the frame nor an array over it is left, the publisher no
 * longer needs to keep the ring mapped for this object. */
static void outframe_uncount(struct fbpy_outframe *o)
{
	if (!o->counted || o->frame || o->exports > 0)
		return;
	o->counted = false;
	o->owner->mapped--;
	publisher_maybe_free(o->owner);
}

static void outframe_done(struct fbpy_outframe *o)
{
	o->frame = NULL;
	if (o->owner->current == o)
		o->owner->current = NULL;
	outframe_uncount(o);
}

static PyObject *outframe_publish(struct fbpy_outframe *o, PyObject *unused)
{
	if (outframe_check(o) < 0)
		return NULL;
	int r = fb_producer_publish(o->owner->producer, o->frame);
	if (r < 0) {
		const char *name = PyUnicode_AsUTF8(o->owner->name);
		return fbpy_raise(r, &(struct fbpy_failure){FBPY_SEND, .name = name});
	}
	o->seq = o->frame->seq;
	o->published = true;
	outframe_done(o);
	Py_RETURN_NONE;
}

static PyObject *outframe_discard(struct fbpy_outframe *o, PyObject *unused)
{
	if (o->frame) {
		fb_producer_discard(o->owner->producer, o->frame);
		outframe_done(o);
	}
	Py_RETURN_NONE;
}

static PyObject *outframe_exit(struct fbpy_outframe *o, PyObject *args)
{
	PyObject *type = PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : Py_None;
	PyObject *r =
	    type == Py_None && o->frame ? outframe_publish(o, NULL) : outframe_discard(o, NULL);
	if (!r)
		return NULL;
	Py_DECREF(r);
	Py_RETURN_FALSE;
}

static void outframe_dealloc(struct fbpy_outframe *o)
{
	struct fbpy_publisher *p = o->owner;
	if (o->frame) /* never published: it does not reach anyone */
		fb_producer_discard(p->producer, o->frame);
	o->frame = NULL;
	o->exports = 0; /* each export held a reference: none is left */
	outframe_done(o);
	Py_DECREF(p);
	PyTypeObject *type = Py_TYPE(o);
	PyObject_Free(o);
	Py_DECREF(type);
}

static int outframe_getbuffer(struct fbpy_outframe *o, Py_buffer *view, int flags)
{
	const struct fbpy_view *v = &o->owner->view;

	if (!o->frame) {
		PyErr_Format(PyExc_BufferError,
			     "frame of '%U' was already %s: its slot belongs to the bus",
			     o->owner->name, o->published ? "published" : "discarded");
		return -1;
	}
	if (fbpy_view_fill(view, (PyObject *)o, o->frame->data[0], v, false, flags) < 0)
		return -1;
	o->exports++;
	return 0;
}

static void outframe_releasebuffer(struct fbpy_outframe *o, Py_buffer *view)
{
	o->exports--;
	outframe_uncount(o);
}

static PyObject *outframe_get_array(struct fbpy_outframe *o, void *unused)
{
	return fbpy_as_array((PyObject *)o);
}

static int set_u64(PyObject *value, uint64_t *ret)
{
	if (!value) {
		PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
		return -1;
	}
	unsigned long long v = PyLong_AsUnsignedLongLong(value);
	if (v == (unsigned long long)-1 && PyErr_Occurred())
		return -1;
	*ret = v;
	return 0;
}

static PyObject *outframe_get_source_seq(struct fbpy_outframe *o, void *unused)
{
	if (outframe_check(o) < 0)
		return NULL;
	return PyLong_FromUnsignedLongLong(o->frame->source_seq);
}

static int outframe_set_source_seq(struct fbpy_outframe *o, PyObject *value, void *unused)
{
	uint64_t v;
	if (outframe_check(o) < 0 || set_u64(value, &v) < 0)
		return -1;
	o->frame->source_seq = v;
	return 0;
}

static PyObject *outframe_made_from(struct fbpy_outframe *o, PyObject *frame)
{
	if (outframe_check(o) < 0)
		return NULL;
	const struct fb_frame *in = fbpy_frame_held(frame);
	if (!in)
		return NULL;
	fb_frame_made_from(o->frame, in);
	Py_RETURN_NONE;
}

static PyObject *outframe_get_capture_ns(struct fbpy_outframe *o, void *unused)
{
	if (outframe_check(o) < 0)
		return NULL;
	return PyLong_FromUnsignedLongLong(o->frame->trace->capture_ns);
}

static int outframe_set_capture_ns(struct fbpy_outframe *o, PyObject *value, void *unused)
{
	uint64_t v;
	if (outframe_check(o) < 0 || set_u64(value, &v) < 0)
		return -1;
	o->frame->trace->capture_ns = v;
	return 0;
}

static PyObject *outframe_get_capture_realtime_ns(struct fbpy_outframe *o, void *unused)
{
	if (outframe_check(o) < 0)
		return NULL;
	return PyLong_FromUnsignedLongLong(o->frame->trace->capture_realtime_ns);
}

static int outframe_set_capture_realtime_ns(struct fbpy_outframe *o, PyObject *value, void *unused)
{
	uint64_t v;
	if (outframe_check(o) < 0 || set_u64(value, &v) < 0)
		return -1;
	o->frame->trace->capture_realtime_ns = v;
	return 0;
}

static PyObject *outframe_get_pts(struct fbpy_outframe *o, void *unused)
{
	if (outframe_check(o) < 0)
		return NULL;
	return PyLong_FromLongLong(o->frame->pts);
}

static int outframe_set_pts(struct fbpy_outframe *o, PyObject *value, void *unused)
{
	if (outframe_check(o) < 0)
		return -1;
	long long v = value ? PyLong_AsLongLong(value) : -1;
	if (!value)
		PyErr_SetString(PyExc_AttributeError, "cannot delete pts");
	if (v == -1 && PyErr_Occurred())
		return -1;
	o->frame->pts = v;
	return 0;
}

static PyObject *outframe_get_flags(struct fbpy_outframe *o, void *unused)
{
	if (outframe_check(o) < 0)
		return NULL;
	return PyLong_FromUnsignedLong(o->frame->flags);
}

static int outframe_set_flags(struct fbpy_outframe *o, PyObject *value, void *unused)
{
	uint64_t v;
	if (outframe_check(o) < 0 || set_u64(value, &v) < 0)
		return -1;
	if (v & ~(uint64_t)(FB_FRAME_KEYFRAME | FB_FRAME_DISCONTINUITY)) {
		PyErr_SetString(PyExc_ValueError,
				"flags may be KEYFRAME and DISCONTINUITY (the end of the stream "
				"is Publisher.close())");
		return -1;
	}
	o->frame->flags = (uint32_t)v;
	return 0;
}

static PyObject *outframe_get_meta(struct fbpy_outframe *o, void *unused)
{
	if (outframe_check(o) < 0)
		return NULL;
	return PyBytes_FromStringAndSize((const char *)o->frame->meta, o->frame->meta_size);
}

static int outframe_set_meta(struct fbpy_outframe *o, PyObject *value, void *unused)
{
	Py_buffer b;

	if (outframe_check(o) < 0)
		return -1;
	if (!value || value == Py_None) {
		o->frame->meta_size = 0;
		return 0;
	}
	if (PyUnicode_Check(value)) {
		Py_ssize_t n;
		const char *s = PyUnicode_AsUTF8AndSize(value, &n);
		if (!s || PyBuffer_FillInfo(&b, NULL, (void *)s, n, 1, PyBUF_SIMPLE) < 0)
			return -1;
	} else if (PyObject_GetBuffer(value, &b, PyBUF_C_CONTIGUOUS) < 0) {
		PyErr_Format(PyExc_TypeError, "meta must be bytes-like or str, not %s",
			     Py_TYPE(value)->tp_name);
		return -1;
	}
	int r = 0;
	if (b.len > (Py_ssize_t)o->owner->meta_max) {
		PyErr_Format(PyExc_ValueError,
			     "meta of %zd bytes does not fit: '%U' carries at most %u (meta_max)",
			     b.len, o->owner->name, (unsigned)o->owner->meta_max);
		r = -1;
	} else {
		memcpy(o->frame->meta, b.buf, (size_t)b.len);
		o->frame->meta_size = (uint32_t)b.len;
	}
	PyBuffer_Release(&b);
	return r;
}

static PyObject *outframe_get_seq(struct fbpy_outframe *o, void *unused)
{
	if (!o->published)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(o->seq);
}

static PyObject *outframe_get_published(struct fbpy_outframe *o, void *unused)
{
	return PyBool_FromLong(o->published);
}

/* Publisher.send(): one record, for a results stream. */
static PyObject *publisher_send(struct fbpy_publisher *p, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"record", "made_from", "timeout", NULL};
	PyObject *record, *from = Py_None, *timeout = Py_None;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$OO:send", kwlist, &record, &from,
					 &timeout))
		return NULL;
	if (p->format != FB_FORMAT_RESULTS)
		return PyErr_Format(PyExc_TypeError,
				    "send() is for results streams; '%U' carries %s pictures: "
				    "fill a frame() instead",
				    p->name, fb_format_name(p->format));
	PyObject *frame_args = PyTuple_Pack(1, timeout);
	if (!frame_args)
		return NULL;
	struct fbpy_outframe *o = (struct fbpy_outframe *)publisher_frame(p, frame_args, NULL);
	Py_DECREF(frame_args);
	if (!o)
		return NULL;
	PyObject *done = NULL;
	if (outframe_set_meta(o, record, NULL) == 0 &&
	    (from == Py_None || (done = outframe_made_from(o, from)))) {
		Py_XDECREF(done);
		done = outframe_publish(o, NULL);
	}
	if (!done)
		Py_XDECREF(outframe_discard(o, NULL));
	PyObject *seq = done ? PyLong_FromUnsignedLongLong(o->seq) : NULL;
	Py_XDECREF(done);
	Py_DECREF(o);
	return seq;
}

static PyMethodDef outframe_methods[] = {
    {"publish", (PyCFunction)outframe_publish, METH_NOARGS,
     "publish()\n--\n\nPublish the frame: subscribers see it now.  (A with block does it.)"},
    {"made_from", (PyCFunction)outframe_made_from, METH_O,
     "made_from(frame)\n--\n\n"
     "Say this frame was made from frame (a Frame still held): it takes frame's\n"
     "capture time and trace, adds frame's stream to its hops, and sets\n"
     "source_seq.  Subscribers then see where its picture came from."},
    {"discard", (PyCFunction)outframe_discard, METH_NOARGS,
     "discard()\n--\n\nGive the slot back unpublished."},
    {"__enter__", fbpy_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)outframe_exit, METH_VARARGS, NULL},
    {"__array__", (PyCFunction)fbpy_array_method, METH_VARARGS, NULL},
    {"__dlpack__", (PyCFunction)(void (*)(void))fbpy_dlpack, METH_VARARGS | METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
     "The slot's pixels as a writable DLPack capsule, no copy: write the frame\n"
     "through torch.from_dlpack(out) before it is published.  Like out.array, the\n"
     "tensor keeps the ring mapped until it is freed, but once the frame is\n"
     "published the slot is the bus's: do not write through it any more."},
    {"__dlpack_device__", fbpy_dlpack_device, METH_NOARGS,
     "__dlpack_device__() -> (1, 0)\n--\n\nThe device of the pixels: host memory (kDLCPU, 0)."},
    {NULL},
};

static PyGetSetDef outframe_getset[] = {
    {"array", (getter)outframe_get_array, NULL,
     "A writable numpy view of the slot's pixels (no copy); write the frame here.", NULL},
    {"source_seq", (getter)outframe_get_source_seq, (setter)outframe_set_source_seq,
     "The seq of the frame this one was made from (0: none).", NULL},
    {"pts", (getter)outframe_get_pts, (setter)outframe_set_pts, "Presentation time.", NULL},
    {"capture_ns", (getter)outframe_get_capture_ns, (setter)outframe_set_capture_ns,
     "CLOCK_MONOTONIC when the picture was captured (0: unknown); made_from() sets it.", NULL},
    {"capture_realtime_ns", (getter)outframe_get_capture_realtime_ns,
     (setter)outframe_set_capture_realtime_ns, "The capture time on CLOCK_REALTIME (0: unknown).",
     NULL},
    {"flags", (getter)outframe_get_flags, (setter)outframe_set_flags, "KEYFRAME | DISCONTINUITY.",
     NULL},
    {"meta", (getter)outframe_get_meta, (setter)outframe_set_meta,
     "Side data to send with the frame: bytes-like or str (UTF-8), up to meta_max.", NULL},
    {"seq", (getter)outframe_get_seq, NULL, "The frame's seq once published, else None.", NULL},
    {"published", (getter)outframe_get_published, NULL, "Whether it was published.", NULL},
    {NULL},
};

static PyType_Slot outframe_slots[] = {
    {Py_tp_dealloc, outframe_dealloc},
    {Py_tp_methods, outframe_methods},
    {Py_tp_getset, outframe_getset},
    {Py_bf_getbuffer, outframe_getbuffer},
    {Py_bf_releasebuffer, outframe_releasebuffer},
    {Py_tp_doc, "A frame being written; made by Publisher.frame()."},
    {0, NULL},
};

static PyType_Spec outframe_spec = {
    .name = "framebus.OutFrame",
    .basicsize = sizeof(struct fbpy_outframe),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = outframe_slots,
};

int fbpy_publisher_init_types(PyObject *m)
{
	fbpy_publisher_type = (PyTypeObject *)PyType_FromSpec(&publisher_spec);
	fbpy_outframe_type = (PyTypeObject *)PyType_FromSpec(&outframe_spec);
	if (!fbpy_publisher_type || !fbpy_outframe_type)
		return -1;
	if (PyModule_AddObjectRef(m, "Publisher", (PyObject *)fbpy_publisher_type) < 0 ||
	    PyModule_AddObjectRef(m, "OutFrame", (PyObject *)fbpy_outframe_type) < 0 ||
	    fbpy_bus_add_method(&publish_method) < 0 ||
	    fbpy_bus_add_method(&publish_results_method) < 0)
		return -1;
	return 0;
}
