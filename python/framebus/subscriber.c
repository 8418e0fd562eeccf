/* SPDX-License-Identifier: MIT */
/* framebus.Subscriber and framebus.Frame: reading a stream with zero copies. */
#include "fbpy.h" /* Python.h first, as the C-API asks */

#include <errno.h>
#include <time.h>

struct fbpy_frame;

/* One slot of a ring, as the binding sees it. */
struct fbpy_slot {
	const struct fb_frame *held; /* the frame held there, or NULL */
	uint64_t generation;         /* counts the times a frame was taken there */
	bool release_wanted;         /* its Frame was released or is gone */
	Py_ssize_t exports;          /* buffer exports of the slot's pixels */
	/* A numpy array over the slot made ahead, while the slot is free, and
	 * handed out with the next frame taken there: making it after the
	 * wake-up costs ~20 us with cold caches (docs/performance.md). */
	PyObject *spare;
	struct fbpy_slot_view *spare_view; /* borrowed: the spare's exporter */
};

/* One subscription's ring: the subscriber's current one, or one it left
 * when framebusd restarted while frames of it were held (retired).  A
 * retired ring stays mapped until its last frame is given back; its frames
 * no longer count against the new subscription's holds.  The struct itself
 * goes with its last reference (the subscriber's while current, each Frame's,
 * each handed-out array's), so a released frame can still read its slot. */
struct fbpy_ring {
	fb_subscriber *sub; /* NULL once unsubscribed or unmapped */
	uint32_t n_slots;
	Py_ssize_t live; /* slots held */
	Py_ssize_t refs;
	struct fbpy_slot slots[FB_MAX_SLOTS];
};

struct fbpy_subscriber {
	PyObject_HEAD
	struct fbpy_child link;
	struct fbpy_bus *bus;
	struct fbpy_ring *ring; /* the current ring; NULL once unsubscribed */
	PyObject *stream;
	uint32_t mode;
	uint32_t max_holds; /* as asked (0: the daemon's default) */
	uint32_t format;
	uint32_t width, height;
	bool lost;            /* its frames stopped: fb_client_resubscribe() */
	bool resumed;         /* subscribed again: the next frame is a discontinuity */
	bool closed;
	bool busy;            /* a thread is inside acquire */
	struct fbpy_frame *iter_frame; /* borrowed: the frame for-iteration handed out */
	struct fbpy_view view;
};

/* The exporter of a spare array: one slot's pixels.  It keeps its
 * subscriber and ring alive only once its array was handed out (before
 * that the ring owns the array, and a reference back would be a cycle). */
struct fbpy_slot_view {
	PyObject_HEAD
	struct fbpy_subscriber *owner;
	struct fbpy_ring *ring;
	uint32_t slot;
	bool owns_ref;
};

struct fbpy_frame {
	PyObject_HEAD
	struct fbpy_subscriber *owner;
	struct fbpy_ring *ring;
	uint32_t slot;
	uint64_t generation; /* its slot's generation when it was taken */
	bool holding;        /* not yet released */
	PyObject *array; /* the slot's array, until frame.array hands it out */
	PyObject *meta;
	struct fb_frame info; /* a copy, readable after the release */
	struct fb_trace trace; /* its trace's copy; info.trace points here */
};

static PyTypeObject *fbpy_subscriber_type, *fbpy_frame_type, *fbpy_slot_view_type;

/* A ring for sub, with the subscriber's reference; NULL with MemoryError. */
static struct fbpy_ring *ring_new(fb_subscriber *sub)
{
	struct fbpy_ring *ring = PyMem_Calloc(1, sizeof(*ring));

	if (!ring)
		return (struct fbpy_ring *)PyErr_NoMemory();
	ring->sub = sub;
	ring->n_slots = fb_subscriber_get_slots(sub);
	ring->refs = 1;
	return ring;
}

static struct fbpy_ring *ring_ref(struct fbpy_ring *ring)
{
	ring->refs++;
	return ring;
}

/* Its memory is gone by then: unsubscribed, or unmapped once retired. */
static void ring_unref(struct fbpy_ring *ring)
{
	if (--ring->refs == 0)
		PyMem_Free(ring);
}

/* Drop the arrays made ahead: nobody else has them. */
static void drop_spares(struct fbpy_ring *ring)
{
	for (uint32_t i = 0; i < ring->n_slots; i++) {
		ring->slots[i].spare_view = NULL;
		Py_CLEAR(ring->slots[i].spare);
	}
}

/* A retired ring is unmapped once none of its frames is held.  The
 * framebusd that made the subscription is gone: there is nothing to
 * unsubscribe from. */
static void retired_ring_maybe_unmap(struct fbpy_ring *ring)
{
	if (ring->live > 0)
		return;
	fb_subscriber_free(ring->sub);
	ring->sub = NULL;
}

static void subscriber_maybe_free(struct fbpy_subscriber *s)
{
	struct fbpy_ring *ring = s->ring;

	if (!ring || !s->closed || s->busy || ring->live > 0)
		return;
	s->ring = NULL; /* before the lock, which may let another thread in here */
	drop_spares(ring); /* before the memory they point into goes */
	struct fbpy_bus *bus = s->bus;
	fbpy_bus_lock(bus);
	if (bus->client)
		fb_client_unsubscribe(bus->client, ring->sub);
	else
		fb_subscriber_free(ring->sub);
	fbpy_bus_unlock(bus);
	ring->sub = NULL;
	ring_unref(ring);
	fbpy_bus_release(bus, &s->link);
}

static void subscriber_close_child(struct fbpy_child *child)
{
	struct fbpy_subscriber *s =
	    (struct fbpy_subscriber *)((char *)child - offsetof(struct fbpy_subscriber, link));
	s->closed = true;
	subscriber_maybe_free(s);
}

/* Give slot i of s's ring back once its frame was released and nothing
 * exports it. */
static void slot_maybe_give_back(struct fbpy_subscriber *s, struct fbpy_ring *ring, uint32_t i)
{
	struct fbpy_slot *slot = &ring->slots[i];

	if (!slot->held || !slot->release_wanted || slot->exports > 0)
		return;
	fb_subscriber_release(ring->sub, slot->held);
	slot->held = NULL;
	ring->live--;
	if (ring == s->ring)
		subscriber_maybe_free(s);
	else
		retired_ring_maybe_unmap(ring);
}

/* The frame is done with its slot; its metadata stays readable. */
static void frame_request_release(struct fbpy_frame *f)
{
	struct fbpy_slot *slot = &f->ring->slots[f->slot];

	if (!f->holding)
		return;
	if (!f->meta && f->info.meta_size) {
		f->meta =
		    PyBytes_FromStringAndSize((const char *)slot->held->meta, f->info.meta_size);
		if (!f->meta)
			PyErr_Clear(); /* meta then reads as a MemoryError */
	}
	f->holding = false;
	slot->release_wanted = true;
	Py_CLEAR(f->array); /* an array never handed out: its export goes too */
	slot_maybe_give_back(f->owner, f->ring, f->slot);
}

/* Bus.subscribe(), which fbpy_subscriber_init_types() gives Bus. */
/* A derived stream's spec from subscribe()'s keywords (None: the parent's);
 * returns 1 if any was given, 0 if none, -1 with an exception. */
static int derived_spec(PyObject *width, PyObject *height, PyObject *format, PyObject *fps,
			PyObject *crop, struct fb_derived *ret)
{
	struct fb_derived spec = {0};
	if ((width == Py_None) != (height == Py_None)) {
		PyErr_SetString(PyExc_ValueError, "width and height go together");
		return -1;
	}
	if (width != Py_None) {
		long w = PyLong_AsLong(width), h = w == -1 && PyErr_Occurred() ? -1
									 : PyLong_AsLong(height);
		if (PyErr_Occurred())
			return -1;
		if (w < 1 || h < 1 || w > FB_MAX_DIMENSION || h > FB_MAX_DIMENSION) {
			PyErr_Format(PyExc_ValueError, "width and height must be 1 to %d, not %ldx%ld",
				     FB_MAX_DIMENSION, w, h);
			return -1;
		}
		spec.width = (uint32_t)w;
		spec.height = (uint32_t)h;
	}
	if (format != Py_None) {
		const char *name = PyUnicode_Check(format) ? PyUnicode_AsUTF8(format) : NULL;
		int f = name ? fb_format_from_name(name) : -EINVAL;
		if (f < 0 || f == FB_FORMAT_RESULTS) {
			if (!PyErr_Occurred())
				PyErr_Format(PyExc_ValueError,
					     "format %R is not a pixel format (framebus.formats() lists "
					     "them)",
					     format);
			return -1;
		}
		spec.format = (uint32_t)f;
	}
	if (fps != Py_None) {
		double v = PyFloat_AsDouble(fps);
		if (v == -1.0 && PyErr_Occurred())
			return -1;
		if (!(v >= 0.1 && v <= 1000)) {
			PyErr_Format(PyExc_ValueError, "fps must be 0.1 to 1000, not %R", fps);
			return -1;
		}
		spec.fps_milli = (uint32_t)(v * 1000 + 0.5);
	}
	if (crop != Py_None && (!PyTuple_Check(crop) || PyTuple_GET_SIZE(crop) != 4)) {
		PyErr_Format(PyExc_ValueError, "crop must be (x, y, width, height), not %R", crop);
		return -1;
	}
	if (crop != Py_None && !PyArg_ParseTuple(crop, "IIII", &spec.crop[0], &spec.crop[1],
						 &spec.crop[2], &spec.crop[3]))
		return -1;
	*ret = spec;
	return width != Py_None || format != Py_None || fps != Py_None || crop != Py_None;
}

static PyObject *subscriber_new(struct fbpy_bus *bus, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"stream", "mode",  "max_holds", "width", "height",
				 "format", "fps",   "crop",      NULL};
	const char *stream, *mode_name = "latest";
	unsigned int max_holds = 0;
	PyObject *width = Py_None, *height = Py_None, *format = Py_None, *fps = Py_None,
		 *crop = Py_None;
	struct fb_derived spec;
	uint32_t mode;
	fb_subscriber *sub;
	int r;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|sI$OOOOO:subscribe", kwlist, &stream,
					 &mode_name, &max_holds, &width, &height, &format, &fps,
					 &crop))
		return NULL;
	if (fbpy_bus_check(bus) < 0)
		return NULL;
	int derived = derived_spec(width, height, format, fps, crop, &spec);
	if (derived < 0)
		return NULL;
	if (strcmp(mode_name, "latest") == 0)
		mode = FB_MODE_LATEST;
	else if (strcmp(mode_name, "queue") == 0)
		mode = FB_MODE_QUEUE;
	else
		return PyErr_Format(PyExc_ValueError, "mode must be 'latest' or 'queue', not '%s'",
				    mode_name);
	fbpy_bus_lock(bus);
	r = derived ? fb_client_subscribe_derived(bus->client, stream, &spec, mode, max_holds, &sub)
		    : fb_client_subscribe(bus->client, stream, mode, max_holds, &sub);
	const char *why = r < 0 ? fb_client_last_error(bus->client) : "";
	fbpy_bus_unlock(bus);
	if (r < 0)
		return fbpy_raise(r, &(struct fbpy_failure){FBPY_SUBSCRIBE, .name = stream,
							     .path = bus->path, .why = why});

	struct fbpy_ring *ring = ring_new(sub);
	struct fbpy_subscriber *s =
	    ring ? PyObject_New(struct fbpy_subscriber, fbpy_subscriber_type) : NULL;
	if (!s) {
		fb_client_unsubscribe(bus->client, sub);
		if (ring)
			ring_unref(ring);
		return NULL;
	}
	const struct fb_layout *l = fb_subscriber_get_layout(sub);
	s->bus = (struct fbpy_bus *)Py_NewRef(bus);
	s->ring = ring;
	s->mode = mode;
	s->max_holds = max_holds;
	s->lost = s->resumed = false;
	s->format = l->format;
	s->width = l->width;
	s->height = l->height;
	s->closed = s->busy = false;
	s->iter_frame = NULL;
	s->link.close = subscriber_close_child;
	fbpy_bus_adopt(bus, &s->link);
	/* A derived stream's name is the one framebusd gave it. */
	s->stream = PyUnicode_FromString(derived ? fb_subscriber_get_name(sub) : stream);
	if (!s->stream || fbpy_view_init(&s->view, l) < 0) {
		Py_DECREF(s);
		return NULL;
	}
	return (PyObject *)s;
}

static PyMethodDef subscribe_method = {
    "subscribe", (PyCFunction)(void (*)(void))subscriber_new, METH_VARARGS | METH_KEYWORDS,
    "subscribe(stream, mode='latest', max_holds=0, *, width=None, height=None,\n"
    "          format=None, fps=None, crop=None) -> Subscriber\n--\n\n"
    "Subscribe to a stream.  mode 'latest' gives the newest frame not yet seen;\n"
    "'queue' gives every frame in order (a subscriber that falls a ring behind\n"
    "skips ahead; Frame.missed says how many it lost).  max_holds limits the\n"
    "frames held at once (0: the daemon's default).\n\n"
    "With any of width and height, format, fps (at most so many frames a\n"
    "second) or crop ((x, y, width, height) of the picture), framebusd makes\n"
    "a stream derived from stream that way (or shares the one it made for\n"
    "another client) and removes it when its last subscriber goes; None\n"
    "keeps the parent's.  Subscriber.stream is its name, e.g.\n"
    "'cam0~640x360.rgb24@5'."};

static void subscriber_dealloc(struct fbpy_subscriber *s)
{
	s->closed = true;
	subscriber_maybe_free(s); /* no frame is left: each holds a reference */
	Py_XDECREF(s->stream);
	Py_DECREF(s->bus);
	PyTypeObject *type = Py_TYPE(s);
	PyObject_Free(s);
	Py_DECREF(type);
}

static int subscriber_check(struct fbpy_subscriber *s)
{
	if (s->closed || s->bus->closed) {
		PyErr_Format(PyExc_ValueError, "the subscription to '%U' is closed", s->stream);
		return -1;
	}
	return 0;
}

/* Make arrays ahead for the free slots that have none (before a wait, so
 * that the frame taken after it comes with its array ready).  A failure
 * only means frame.array makes its array itself later, but an interrupt
 * (Ctrl-C, SystemExit from a signal handler, during numpy's first import)
 * must not be swallowed: returns -1 with it set. */
static int make_spares(struct fbpy_subscriber *s)
{
	struct fbpy_ring *ring = s->ring;

	for (uint32_t i = 0; i < ring->n_slots; i++) {
		struct fbpy_slot *slot = &ring->slots[i];
		if (slot->held || slot->spare)
			continue;
		struct fbpy_slot_view *v = PyObject_New(struct fbpy_slot_view, fbpy_slot_view_type);
		if (!v)
			break;
		v->owner = s;
		v->ring = ring;
		v->slot = i;
		v->owns_ref = false;
		slot->spare = fbpy_as_array((PyObject *)v);
		Py_DECREF(v); /* the array's memoryview keeps it */
		if (!slot->spare) {
			if (!PyErr_ExceptionMatches(PyExc_Exception))
				return -1;
			PyErr_Clear(); /* frame.array then makes its array itself */
			break;
		}
		slot->spare_view = v;
	}
	return 0;
}

static PyObject *frame_new(struct fbpy_subscriber *s, const struct fb_frame *f)
{
	struct fbpy_frame *o = PyObject_New(struct fbpy_frame, fbpy_frame_type);
	struct fbpy_ring *ring = s->ring;
	struct fbpy_slot *slot = &ring->slots[f->slot];

	if (!o) {
		fb_subscriber_release(ring->sub, f);
		return NULL;
	}
	o->owner = (struct fbpy_subscriber *)Py_NewRef(s);
	o->ring = ring_ref(ring);
	o->slot = f->slot;
	o->generation = ++slot->generation;
	o->holding = true;
	o->meta = NULL;
	o->info = *f;
	/* What the trace holds, not its whole room: most frames have no hops. */
	uint32_t hops = f->trace->n_hops < FB_TRACE_HOPS ? f->trace->n_hops : FB_TRACE_HOPS;
	memcpy(&o->trace, f->trace, offsetof(struct fb_trace, hops) + hops * sizeof(struct fb_hop));
	o->trace.n_hops = hops;
	o->info.trace = &o->trace;
	if (s->resumed) /* the first frame after a daemon restart */
		o->info.flags |= FB_FRAME_DISCONTINUITY;
	s->resumed = false;
	o->array = slot->spare; /* handed over: it now keeps the subscriber and ring */
	if (slot->spare_view) {
		slot->spare_view->owner = (struct fbpy_subscriber *)Py_NewRef(s);
		ring_ref(ring);
		slot->spare_view->owns_ref = true;
	}
	slot->spare = NULL;
	slot->spare_view = NULL;
	slot->held = f;
	slot->release_wanted = false;
	ring->live++;
	return (PyObject *)o;
}

/* After the subscription's frames stopped: if framebusd went away, subscribe
 * again to the same stream and go on with a new ring.  The old ring is
 * retired: frames of it still held stay readable, and it is unmapped when
 * the last of them goes.  Returns 0 once done, -EAGAIN while the daemon (or
 * the stream) is not back yet, -ECANCELED if the stream came back with
 * another geometry or framebusd ended the subscription, or the error
 * subscribing failed with (-ENOMEM with MemoryError set). */
static int resume(struct fbpy_subscriber *s)
{
	struct fbpy_bus *bus = s->bus;
	struct fbpy_ring *old = s->ring;
	fb_subscriber *sub;

	fbpy_bus_lock(bus);
	int r = fb_client_resubscribe(bus->client, old->sub, &sub);
	fbpy_bus_unlock(bus);
	if (r < 0) {
		s->lost = r == -EAGAIN;
		return r == -ESTALE ? -ECANCELED : r;
	}
	struct fbpy_ring *ring = ring_new(sub);
	if (!ring) {
		fbpy_bus_lock(bus);
		fb_client_unsubscribe(bus->client, sub);
		fbpy_bus_unlock(bus);
		return -ENOMEM;
	}
	drop_spares(old); /* before the memory they point into goes */
	s->ring = ring;
	retired_ring_maybe_unmap(old);
	ring_unref(old);
	s->lost = false;
	s->resumed = true;
	return make_spares(s) < 0 ? -EINTR : 0;
}

struct take_attempt {
	struct fbpy_subscriber *s;
	const struct fb_frame *frame;
};

/* One try of take() (an fbpy_attempt).  A subscription whose daemon
 * restarted subscribes again here. */
static int take_attempt(void *data, int slice_ms)
{
	struct take_attempt *t = data;
	struct fbpy_subscriber *s = t->s;
	int r;

	if (s->lost) {
		r = resume(s);
		if (r == 0)
			return -EINTR; /* on to the new ring at once */
		if (r != -EAGAIN || slice_ms == 0)
			return r;
		struct timespec pause = {.tv_nsec = slice_ms * 1000000L};
		Py_BEGIN_ALLOW_THREADS nanosleep(&pause, NULL);
		Py_END_ALLOW_THREADS return -ETIMEDOUT;
	}
	fb_subscriber *sub = s->ring->sub; /* s->busy keeps it */
	Py_BEGIN_ALLOW_THREADS r = fb_subscriber_acquire(sub, slice_ms, &t->frame);
	Py_END_ALLOW_THREADS
	/* Ended with framebusd, maybe: fb_client_resubscribe() tells, in
	 * resume().  (The bus stays connected while this subscriber lives,
	 * fbpy.h.) */
	if (r == -EOWNERDEAD || r == -ECANCELED) {
		s->lost = true;
		return -EINTR;
	}
	return r;
}

/* Take a frame: timeout_ms -1 waits forever, 0 not at all.  Returns NULL with
 * an exception, or Py_None (new reference) when empty_ok and nothing came.
 * A subscription whose daemon restarted subscribes again by itself. */
static PyObject *take(struct fbpy_subscriber *s, int64_t timeout_ms, bool empty_ok)
{
	struct take_attempt t = {s, NULL};
	uint64_t deadline = fbpy_deadline(timeout_ms);

	if (subscriber_check(s) < 0)
		return NULL;
	if (s->busy)
		return PyErr_Format(PyExc_RuntimeError,
				    "another thread is acquiring from the subscription to '%U'",
				    s->stream);
	if (make_spares(s) < 0)
		return NULL;
	s->busy = true;
	int r = fbpy_wait(deadline, take_attempt, &t);
	s->busy = false;
	if (r == 0 && s->closed) { /* closed by another thread meanwhile */
		fb_subscriber_release(s->ring->sub, t.frame);
		r = -EBADF;
	}
	if (r == 0)
		return frame_new(s, t.frame);
	if (s->closed)
		subscriber_maybe_free(s);
	if (PyErr_Occurred())
		return NULL;
	if ((r == -EAGAIN || r == -ETIMEDOUT) && empty_ok)
		Py_RETURN_NONE;
	fb_subscriber *sub = s->ring ? s->ring->sub : NULL; /* NULL once closed */
	return fbpy_raise(r, &(struct fbpy_failure){FBPY_TAKE, .name = PyUnicode_AsUTF8(s->stream),
						     .path = s->bus->path,
						     .held = fb_subscriber_get_held(sub)});
}

static PyObject *subscriber_acquire(struct fbpy_subscriber *s, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"timeout", NULL};
	PyObject *timeout = Py_None;
	int64_t ms;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:acquire", kwlist, &timeout))
		return NULL;
	if ((ms = fbpy_timeout_ms(timeout)) < -1)
		return NULL;
	return take(s, ms, false);
}

static PyObject *subscriber_try_acquire(struct fbpy_subscriber *s, PyObject *unused)
{
	return take(s, 0, true);
}

static PyObject *subscriber_iter(PyObject *self)
{
	return Py_NewRef(self);
}

static PyObject *subscriber_next(struct fbpy_subscriber *s)
{
	if (s->iter_frame) {
		frame_request_release(s->iter_frame);
		s->iter_frame = NULL;
	}
	PyObject *f = take(s, -1, false);
	if (!f && PyErr_ExceptionMatches(fbpy_stream_ended)) {
		PyErr_Clear(); /* the end of the stream ends the loop */
		return NULL;
	}
	s->iter_frame = (struct fbpy_frame *)f;
	return f;
}

static PyObject *subscriber_close(struct fbpy_subscriber *s, PyObject *unused)
{
	if (s->closed)
		Py_RETURN_NONE;
	s->closed = true;
	subscriber_maybe_free(s);
	Py_RETURN_NONE;
}

static PyObject *subscriber_fileno(struct fbpy_subscriber *s, PyObject *unused)
{
	if (subscriber_check(s) < 0)
		return NULL;
	return PyLong_FromLong(fb_subscriber_get_fd(s->ring->sub));
}

static PyObject *subscriber_exit(struct fbpy_subscriber *s, PyObject *args)
{
	return subscriber_close(s, NULL);
}

static PyObject *subscriber_repr(struct fbpy_subscriber *s)
{
	return PyUnicode_FromFormat("<framebus.Subscriber '%U' %s %ux%u %s%s>", s->stream,
				    s->mode == FB_MODE_QUEUE ? "queue" : "latest",
				    (unsigned)s->width, (unsigned)s->height,
				    fb_format_name(s->format), s->closed ? " closed" : "");
}

static PyObject *sub_get_stream(struct fbpy_subscriber *s, void *unused)
{
	return Py_NewRef(s->stream);
}

static PyObject *sub_get_mode(struct fbpy_subscriber *s, void *unused)
{
	return PyUnicode_FromString(s->mode == FB_MODE_QUEUE ? "queue" : "latest");
}

static PyObject *sub_get_format(struct fbpy_subscriber *s, void *unused)
{
	return PyUnicode_FromString(fb_format_name(s->format));
}

static PyObject *sub_get_width(struct fbpy_subscriber *s, void *unused)
{
	return PyLong_FromUnsignedLong(s->width);
}

static PyObject *sub_get_height(struct fbpy_subscriber *s, void *unused)
{
	return PyLong_FromUnsignedLong(s->height);
}

static PyObject *sub_get_shape(struct fbpy_subscriber *s, void *unused)
{
	return fbpy_view_shape(&s->view);
}

static PyObject *sub_get_held(struct fbpy_subscriber *s, void *unused)
{
	return PyLong_FromUnsignedLong(s->ring ? fb_subscriber_get_held(s->ring->sub) : 0);
}

static PyObject *sub_get_closed(struct fbpy_subscriber *s, void *unused)
{
	return PyBool_FromLong(s->closed || s->bus->closed);
}

static PyObject *sub_get_reconnecting(struct fbpy_subscriber *s, void *unused)
{
	return PyBool_FromLong(s->lost);
}

static PyObject *sub_get_bus(struct fbpy_subscriber *s, void *unused)
{
	return Py_NewRef((PyObject *)s->bus);
}

static PyMethodDef subscriber_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))subscriber_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(timeout=None) -> Frame\n--\n\n"
     "Take the next frame (the newest unseen one in 'latest' mode, the next in\n"
     "order in 'queue' mode), waiting up to timeout seconds (None: forever).\n"
     "Raises TimeoutError, StreamEnded, StreamRemoved, HoldLimitError, or\n"
     "ConnectionError when framebusd went away.  Ctrl-C interrupts the wait."},
    {"try_acquire", (PyCFunction)subscriber_try_acquire, METH_NOARGS,
     "try_acquire() -> Frame | None\n--\n\n"
     "Take the next frame if one is there, else None, never waiting.  For event\n"
     "loops: when fileno() is readable, call it until it returns None."},
    {"fileno", (PyCFunction)subscriber_fileno, METH_NOARGS,
     "fileno() -> int\n--\n\nA descriptor that is readable when a frame may be waiting."},
    {"close", (PyCFunction)subscriber_close, METH_NOARGS,
     "close()\n--\n\n"
     "End the subscription.  Frames still alive stay valid; their slots go back\n"
     "once they (and arrays made from them) are gone."},
    {"__enter__", fbpy_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)subscriber_exit, METH_VARARGS, NULL},
    {NULL},
};

static PyGetSetDef subscriber_getset[] = {
    {"stream", (getter)sub_get_stream, NULL, "The stream's name.", NULL},
    {"mode", (getter)sub_get_mode, NULL, "'latest' or 'queue'.", NULL},
    {"format", (getter)sub_get_format, NULL, "The pixel format name.", NULL},
    {"width", (getter)sub_get_width, NULL, "Frame width in pixels.", NULL},
    {"height", (getter)sub_get_height, NULL, "Frame height in pixels.", NULL},
    {"shape", (getter)sub_get_shape, NULL, "The shape of Frame.array.", NULL},
    {"held", (getter)sub_get_held, NULL, "Frames held right now.", NULL},
    {"closed", (getter)sub_get_closed, NULL, "Whether it (or its bus) was closed.", NULL},
    {"bus", (getter)sub_get_bus, NULL, "The Bus it came from.", NULL},
    {"reconnecting", (getter)sub_get_reconnecting, NULL,
     "True while framebusd is away: acquiring tries to subscribe again (every 250 ms).", NULL},
    {NULL},
};

static PyType_Slot subscriber_slots[] = {
    {Py_tp_dealloc, subscriber_dealloc},
    {Py_tp_methods, subscriber_methods},
    {Py_tp_getset, subscriber_getset},
    {Py_tp_iter, subscriber_iter},
    {Py_tp_iternext, subscriber_next},
    {Py_tp_repr, subscriber_repr},
    {Py_tp_doc, "A subscription to a stream; made by Bus.subscribe().\n\n"
		"Iterating gives frames until the stream ends; each frame is released\n"
		"when the next is taken."},
    {0, NULL},
};

static PyType_Spec subscriber_spec = {
    .name = "framebus.Subscriber",
    .basicsize = sizeof(struct fbpy_subscriber),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = subscriber_slots,
};

/* ------------------------------------------------------------------------ */

static void frame_dealloc(struct fbpy_frame *f)
{
	struct fbpy_subscriber *s = f->owner;
	if (s->iter_frame == f)
		s->iter_frame = NULL;
	frame_request_release(f);
	Py_XDECREF(f->meta);
	ring_unref(f->ring);
	Py_DECREF(s);
	PyTypeObject *type = Py_TYPE(f);
	PyObject_Free(f);
	Py_DECREF(type);
}

static int refuse_writable(int flags)
{
	if (!(flags & PyBUF_WRITABLE))
		return 0;
	PyErr_SetString(PyExc_BufferError, "frames from a subscription are read-only: copy the "
					   "array to change it, or publish a stream of your own");
	return -1;
}

static int frame_getbuffer(struct fbpy_frame *f, Py_buffer *view, int flags)
{
	struct fbpy_subscriber *s = f->owner;
	struct fbpy_slot *slot = &f->ring->slots[f->slot];

	if (!f->holding) {
		PyErr_Format(PyExc_BufferError,
			     "frame %llu of '%U' was released: its slot may hold a newer frame",
			     (unsigned long long)f->info.seq, s->stream);
		return -1;
	}
	if (refuse_writable(flags) < 0 ||
	    fbpy_view_fill(view, (PyObject *)f, slot->held->data[0], &s->view, true, flags) < 0)
		return -1;
	slot->exports++;
	return 0;
}

static void frame_releasebuffer(struct fbpy_frame *f, Py_buffer *view)
{
	f->ring->slots[f->slot].exports--;
	slot_maybe_give_back(f->owner, f->ring, f->slot);
}

static PyObject *frame_release(struct fbpy_frame *f, PyObject *unused)
{
	frame_request_release(f);
	Py_RETURN_NONE;
}

static PyObject *frame_exit(struct fbpy_frame *f, PyObject *args)
{
	frame_request_release(f);
	Py_RETURN_FALSE;
}

static PyObject *frame_get_array(struct fbpy_frame *f, void *unused)
{
	if (f->array) { /* the one made ahead: the caller's now */
		PyObject *array = f->array;
		f->array = NULL;
		return array;
	}
	return fbpy_as_array((PyObject *)f);
}

static PyObject *frame_get_meta(struct fbpy_frame *f, void *unused)
{
	if (f->meta)
		return Py_NewRef(f->meta);
	if (f->info.meta_size == 0)
		return PyBytes_FromStringAndSize(NULL, 0);
	if (!f->holding)
		return PyErr_NoMemory(); /* the copy at release failed */
	f->meta = PyBytes_FromStringAndSize((const char *)f->ring->slots[f->slot].held->meta,
					    f->info.meta_size);
	return f->meta ? Py_NewRef(f->meta) : NULL;
}

#define FRAME_U64(field)                                                                           \
	static PyObject *frame_get_##field(struct fbpy_frame *f, void *unused)                     \
	{                                                                                          \
		return PyLong_FromUnsignedLongLong(f->info.field);                                 \
	}
FRAME_U64(seq)
FRAME_U64(source_seq)
FRAME_U64(monotonic_ns)
FRAME_U64(realtime_ns)
FRAME_U64(missed)

/* A time of the trace: None when unknown (0). */
static PyObject *trace_time(uint64_t ns)
{
	if (!ns)
		Py_RETURN_NONE;
	return PyLong_FromUnsignedLongLong(ns);
}

static PyObject *frame_get_capture_ns(struct fbpy_frame *f, void *unused)
{
	return trace_time(f->trace.capture_ns);
}

static PyObject *frame_get_capture_realtime_ns(struct fbpy_frame *f, void *unused)
{
	return trace_time(f->trace.capture_realtime_ns);
}

static PyObject *frame_get_decode_ns(struct fbpy_frame *f, void *unused)
{
	return trace_time(f->trace.decode_ns);
}

static PyObject *frame_get_time_base(struct fbpy_frame *f, void *unused)
{
	if (f->trace.time_base_num <= 0 || f->trace.time_base_den <= 0)
		Py_RETURN_NONE;
	return Py_BuildValue("(ii)", f->trace.time_base_num, f->trace.time_base_den);
}

/* Hop i of the trace as (stream, seq, publish_ns); the producer's bytes, so
 * the name is taken up to its first NUL and decoded leniently. */
static PyObject *hop_tuple(const struct fb_hop *h)
{
	return Py_BuildValue("(NKK)",
			     PyUnicode_DecodeUTF8(h->stream,
						  (Py_ssize_t)strnlen(h->stream, sizeof(h->stream)),
						  "replace"),
			     (unsigned long long)h->seq, (unsigned long long)h->publish_ns);
}

static uint32_t n_hops(const struct fbpy_frame *f)
{
	return f->trace.n_hops < FB_TRACE_HOPS ? f->trace.n_hops : FB_TRACE_HOPS;
}

static PyObject *frame_get_hops(struct fbpy_frame *f, void *unused)
{
	PyObject *list = PyList_New(n_hops(f));
	for (uint32_t i = 0; list && i < n_hops(f); i++) {
		PyObject *hop = hop_tuple(&f->trace.hops[i]);
		if (!hop) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, i, hop);
	}
	return list;
}

static PyObject *frame_get_origin(struct fbpy_frame *f, void *unused)
{
	if (!n_hops(f))
		return Py_BuildValue("(OK)", f->owner->stream, (unsigned long long)f->info.seq);
	PyObject *hop = hop_tuple(&f->trace.hops[0]);
	PyObject *origin = hop ? PyTuple_GetSlice(hop, 0, 2) : NULL;
	Py_XDECREF(hop);
	return origin;
}

const struct fb_frame *fbpy_frame_held(PyObject *obj)
{
	if (!PyObject_TypeCheck(obj, fbpy_frame_type)) {
		PyErr_Format(PyExc_TypeError, "expected a framebus.Frame, not %s",
			     Py_TYPE(obj)->tp_name);
		return NULL;
	}
	struct fbpy_frame *f = (struct fbpy_frame *)obj;
	const struct fbpy_slot *slot = &f->ring->slots[f->slot];
	if (!f->holding || !slot->held || slot->generation != f->generation) {
		PyErr_SetString(PyExc_ValueError,
				"the frame was released: say what a frame was made from before "
				"releasing the frame it was made from");
		return NULL;
	}
	return slot->held;
}

static PyObject *frame_get_pts(struct fbpy_frame *f, void *unused)
{
	return PyLong_FromLongLong(f->info.pts);
}

static PyObject *frame_get_timestamp(struct fbpy_frame *f, void *unused)
{
	return PyFloat_FromDouble((double)f->info.realtime_ns / 1e9);
}

static PyObject *frame_get_flags(struct fbpy_frame *f, void *unused)
{
	return PyLong_FromUnsignedLong(f->info.flags);
}

static PyObject *frame_get_keyframe(struct fbpy_frame *f, void *unused)
{
	return PyBool_FromLong(f->info.flags & FB_FRAME_KEYFRAME);
}

static PyObject *frame_get_discontinuity(struct fbpy_frame *f, void *unused)
{
	return PyBool_FromLong(f->info.flags & FB_FRAME_DISCONTINUITY);
}

static PyObject *frame_get_released(struct fbpy_frame *f, void *unused)
{
	const struct fbpy_slot *slot = &f->ring->slots[f->slot];
	return PyBool_FromLong(!slot->held || slot->generation != f->generation);
}

static PyObject *frame_get_subscriber(struct fbpy_frame *f, void *unused)
{
	return Py_NewRef((PyObject *)f->owner);
}

static PyObject *frame_repr(struct fbpy_frame *f)
{
	return PyUnicode_FromFormat("<framebus.Frame '%U' seq=%llu%s>", f->owner->stream,
				    (unsigned long long)f->info.seq, f->holding ? "" : " released");
}

static PyMethodDef frame_methods[] = {
    {"release", (PyCFunction)frame_release, METH_NOARGS,
     "release()\n--\n\n"
     "Done with this frame: its slot goes back to the ring as soon as no array\n"
     "made from it is left (at once if there is none).  Metadata stays readable."},
    {"__enter__", fbpy_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)frame_exit, METH_VARARGS, NULL},
    {"__array__", (PyCFunction)fbpy_array_method, METH_VARARGS, NULL},
    {"__dlpack__", (PyCFunction)(void (*)(void))fbpy_dlpack, METH_VARARGS | METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
     "The pixels as a DLPack capsule, no copy: torch.from_dlpack(frame) and\n"
     "numpy.from_dlpack(frame) call it.  The tensor keeps the frame's slot held\n"
     "until it is freed, as an array does.  Read-only: the memory is mapped\n"
     "read-only, so writing through the tensor kills the process (SIGSEGV); the\n"
     "DLPack 1.0 capsule (max_version=(1, 0)) carries the read-only flag.\n"
     "stream must be None; copy=True and other devices raise BufferError."},
    {"__dlpack_device__", fbpy_dlpack_device, METH_NOARGS,
     "__dlpack_device__() -> (1, 0)\n--\n\nThe device of the pixels: host memory (kDLCPU, 0)."},
    {NULL},
};

static PyGetSetDef frame_getset[] = {
    {"array", (getter)frame_get_array, NULL,
     "A read-only numpy view of the pixels, no copy: (h, w, 3) for bgr24/rgb24,\n"
     "(h, w, 4) for bgra, (h, w) for gray8, (h*3/2, w) for nv12/yuv420p.\n"
     "It keeps the frame's slot held for as long as it (or a view of it) lives.",
     NULL},
    {"seq", (getter)frame_get_seq, NULL, "1, 2, 3, ... in publish order.", NULL},
    {"source_seq", (getter)frame_get_source_seq, NULL,
     "The seq of the frame this one was made from, or 0.", NULL},
    {"pts", (getter)frame_get_pts, NULL, "Presentation time in the source's time base.", NULL},
    {"timestamp", (getter)frame_get_timestamp, NULL,
     "Wall-clock publish time in seconds since the epoch (time.time() scale).", NULL},
    {"monotonic_ns", (getter)frame_get_monotonic_ns, NULL,
     "CLOCK_MONOTONIC at publish (time.monotonic_ns() scale).", NULL},
    {"realtime_ns", (getter)frame_get_realtime_ns, NULL, "CLOCK_REALTIME at publish.", NULL},
    {"capture_ns", (getter)frame_get_capture_ns, NULL,
     "CLOCK_MONOTONIC when its picture was captured (time.monotonic_ns() scale):\n"
     "a network camera's packet arriving, a file's picture read; None: unknown.",
     NULL},
    {"capture_realtime_ns", (getter)frame_get_capture_realtime_ns, NULL,
     "The capture time on CLOCK_REALTIME (time.time_ns() scale), or None.", NULL},
    {"decode_ns", (getter)frame_get_decode_ns, NULL,
     "CLOCK_MONOTONIC when framebusd's decoder gave the picture, or None.", NULL},
    {"time_base", (getter)frame_get_time_base, NULL,
     "pts is in units of num/den seconds: (num, den), or None.", NULL},
    {"hops", (getter)frame_get_hops, NULL,
     "The streams its picture passed before this one, the origin first:\n"
     "[(stream, seq, publish monotonic_ns), ...] (up to 4; [] for an origin frame).",
     NULL},
    {"origin", (getter)frame_get_origin, NULL,
     "(stream, seq) of the frame its picture first came out in (itself, for a\n"
     "frame of a decoded stream).",
     NULL},
    {"missed", (getter)frame_get_missed, NULL,
     "Frames skipped just before this one (queue mode: lost by falling behind).", NULL},
    {"flags", (getter)frame_get_flags, NULL, "Frame flags (KEYFRAME, DISCONTINUITY).", NULL},
    {"keyframe", (getter)frame_get_keyframe, NULL, "Whether it was a keyframe.", NULL},
    {"discontinuity", (getter)frame_get_discontinuity, NULL,
     "Whether frames before it were lost or its source restarted.", NULL},
    {"meta", (getter)frame_get_meta, NULL, "The side data the publisher attached (bytes).", NULL},
    {"released", (getter)frame_get_released, NULL, "Whether its slot went back to the ring.", NULL},
    {"subscriber", (getter)frame_get_subscriber, NULL, "The Subscriber it came from.", NULL},
    {NULL},
};

static PyType_Slot frame_slots[] = {
    {Py_tp_dealloc, frame_dealloc},
    {Py_tp_methods, frame_methods},
    {Py_tp_getset, frame_getset},
    {Py_tp_repr, frame_repr},
    {Py_bf_getbuffer, frame_getbuffer},
    {Py_bf_releasebuffer, frame_releasebuffer},
    {Py_tp_doc, "A frame held from a stream; numpy.asarray(frame) is a zero-copy view.\n\n"
		"Use it in a with block (released at the end) or call release()."},
    {0, NULL},
};

static PyType_Spec frame_spec = {
    .name = "framebus.Frame",
    .basicsize = sizeof(struct fbpy_frame),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = frame_slots,
};

/* ------------------------------------------------------------------------ */

static int slot_view_getbuffer(struct fbpy_slot_view *v, Py_buffer *view, int flags)
{
	struct fbpy_ring *ring = v->ring;
	const struct fb_frame *slot = ring->sub ? fb_subscriber_get_slot(ring->sub, v->slot) : NULL;

	if (!slot) {
		PyErr_SetString(PyExc_BufferError, "the subscription is closed");
		return -1;
	}
	if (refuse_writable(flags) < 0 ||
	    fbpy_view_fill(view, (PyObject *)v, slot->data[0], &v->owner->view, true, flags) < 0)
		return -1;
	ring->slots[v->slot].exports++;
	return 0;
}

static void slot_view_releasebuffer(struct fbpy_slot_view *v, Py_buffer *view)
{
	v->ring->slots[v->slot].exports--;
	slot_maybe_give_back(v->owner, v->ring, v->slot);
}

static void slot_view_dealloc(struct fbpy_slot_view *v)
{
	if (v->owns_ref) {
		ring_unref(v->ring);
		Py_DECREF(v->owner);
	}
	PyTypeObject *type = Py_TYPE(v);
	PyObject_Free(v);
	Py_DECREF(type);
}

static PyType_Slot slot_view_slots[] = {
    {Py_tp_dealloc, slot_view_dealloc},
    {Py_bf_getbuffer, slot_view_getbuffer},
    {Py_bf_releasebuffer, slot_view_releasebuffer},
    {Py_tp_doc, "The pixels of one ring slot, behind the array a Frame hands out."},
    {0, NULL},
};

static PyType_Spec slot_view_spec = {
    .name = "framebus._SlotView",
    .basicsize = sizeof(struct fbpy_slot_view),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = slot_view_slots,
};

int fbpy_subscriber_init_types(PyObject *m)
{
	fbpy_slot_view_type = (PyTypeObject *)PyType_FromSpec(&slot_view_spec);
	if (!fbpy_slot_view_type)
		return -1;
	fbpy_subscriber_type = (PyTypeObject *)PyType_FromSpec(&subscriber_spec);
	fbpy_frame_type = (PyTypeObject *)PyType_FromSpec(&frame_spec);
	if (!fbpy_subscriber_type || !fbpy_frame_type)
		return -1;
	if (PyModule_AddObjectRef(m, "Subscriber", (PyObject *)fbpy_subscriber_type) < 0 ||
	    PyModule_AddObjectRef(m, "Frame", (PyObject *)fbpy_frame_type) < 0 ||
	    fbpy_bus_add_method(&subscribe_method) < 0)
		return -1;
	if (PyModule_AddIntConstant(m, "KEYFRAME", FB_FRAME_KEYFRAME) < 0 ||
	    PyModule_AddIntConstant(m, "DISCONTINUITY", FB_FRAME_DISCONTINUITY) < 0)
		return -1;
	return 0;
}
