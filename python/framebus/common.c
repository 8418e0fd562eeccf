/* SPDX-License-Identifier: MIT */
/* The bottom of framebus._framebus: errors as exceptions, the sliced wait,
 * time, and pixels as buffers and numpy arrays (common.h). */
#include "common.h" /* Python.h first, as the C-API asks */

#include <errno.h>
#include <time.h>

PyObject *fbpy_error, *fbpy_stream_ended, *fbpy_stream_removed, *fbpy_hold_limit,
    *fbpy_frame_dropped, *fbpy_no_such_stream, *fbpy_stream_exists;

/* How long a blocking call waits at a time before it looks at Python's
 * signals (and, while framebusd is away, a subscriber tries to subscribe
 * again). */
#define SLICE_MS 100

static PyObject *numpy_asarray;

/* ---- Errors ---- */

/* The Bus's own requests to framebusd, all requests, any call. */
#define BUS_REQUESTS (FBPY_LIST | FBPY_DESCRIBE | FBPY_EVENTS)
#define REQUESTS (BUS_REQUESTS | FBPY_SUBSCRIBE | FBPY_PUBLISH)
#define ANY_CALL (~0u)

#define WENT_AWAY "framebusd at %(path)s went away: the connection to framebusd was lost"
#define NO_FRAME "no frame from '%(name)s' within the timeout"

/*
 * Every failure's exception and message.  The first row that matches a
 * failure gives the exception, the first one with a message gives the
 * message, so a row may leave either to the rows below it.  A message is
 * Python's %-formatting over the failure's %(name)s, %(path)s, %(held)d and
 * %(error)s: what framebusd answered if it refused the request, else the
 * error's text (fb_strerror).
 */
static const struct error_row {
	unsigned calls;      /* enum fbpy_call flags */
	int r;               /* 0: any error */
	bool explained;      /* only if framebusd said why it refused */
	PyObject **type;     /* NULL: a row below says */
	const char *message; /* NULL: a row below says */
} error_rows[] = {
    /* Errors some calls word themselves.  No socket at the path means no
     * daemon there: FileNotFoundError would read as a missing file. */
    {FBPY_CONNECT, -ENOENT, false, &PyExc_ConnectionRefusedError,
     "cannot connect to framebusd at %(path)s: Connection refused"},
    {REQUESTS, -ECONNRESET, false, &PyExc_ConnectionResetError, WENT_AWAY},
    {REQUESTS, -EPIPE, false, &PyExc_ConnectionResetError, WENT_AWAY},
    {FBPY_DESCRIBE | FBPY_SUBSCRIBE, -ENOENT, false, &fbpy_no_such_stream,
     "the bus has no stream '%(name)s'"},
    {FBPY_PUBLISH, -EEXIST, false, &fbpy_stream_exists, "the bus already has a stream '%(name)s'"},
    {FBPY_TAKE, -ETIMEDOUT, false, &PyExc_TimeoutError, NO_FRAME},
    {FBPY_TAKE, -EAGAIN, false, &PyExc_TimeoutError, NO_FRAME},
    {FBPY_TAKE, -EDQUOT, false, &fbpy_hold_limit,
     "the subscription to '%(name)s' already holds %(held)d frames, its limit: release frames "
     "(and drop arrays made from them) before taking another"},
    {FBPY_TAKE, -EPIPE, false, &fbpy_stream_ended, "stream '%(name)s' ended"},
    {FBPY_TAKE, -ECANCELED, false, &fbpy_stream_removed,
     "framebusd ended the subscription to '%(name)s' (the stream was removed or restarted with "
     "a new geometry): subscribe again"},
    {FBPY_TAKE, -EBADF, false, &PyExc_ValueError, "the subscription to '%(name)s' was closed"},
    {FBPY_FRAME, -ENOBUFS, false, &fbpy_frame_dropped,
     "every slot of '%(name)s' is held by subscribers: frame dropped"},
    {FBPY_FRAME, -ETIMEDOUT, false, &PyExc_TimeoutError,
     "no free slot in '%(name)s' within the timeout (a queue subscriber is behind)"},
    {FBPY_FRAME, -EBADF, false, &PyExc_ValueError, "the publisher of '%(name)s' was closed"},

    /* Requests framebusd refused, saying why. */
    {BUS_REQUESTS, -ENOENT, true, &fbpy_no_such_stream, NULL},
    {BUS_REQUESTS, 0, true, &PyExc_ValueError, NULL},
    {FBPY_SUBSCRIBE | FBPY_PUBLISH, -EINVAL, true, &PyExc_ValueError, NULL},
    {FBPY_SUBSCRIBE, -EUSERS, true, &PyExc_ValueError, NULL},
    /* An [access] rule (the text names it). */
    {FBPY_SUBSCRIBE | FBPY_PUBLISH, -EACCES, true, &PyExc_PermissionError, NULL},
    {FBPY_SUBSCRIBE | FBPY_PUBLISH, 0, true, &fbpy_error, NULL},
    /* Limits of a client's own, not bad arguments. */
    {FBPY_PUBLISH, -EDQUOT, false, &fbpy_error, NULL},
    {FBPY_PUBLISH, -EUSERS, false, &fbpy_error, NULL},

    /* What each call was doing, for any other error. */
    {FBPY_CONNECT, 0, false, NULL, "cannot connect to framebusd at %(path)s: %(error)s"},
    {FBPY_LIST, 0, false, NULL, "listing streams '': %(error)s"},
    {FBPY_DESCRIBE, 0, false, NULL, "describing stream '%(name)s': %(error)s"},
    {FBPY_EVENTS, 0, false, NULL, "reading events '': %(error)s"},
    {FBPY_SUBSCRIBE, 0, false, NULL, "cannot subscribe to '%(name)s': %(error)s"},
    {FBPY_PUBLISH, 0, false, NULL, "cannot publish '%(name)s': %(error)s"},
    {FBPY_TAKE, 0, false, NULL, "acquiring a frame from '%(name)s': %(error)s"},
    {FBPY_FRAME, 0, false, NULL, "taking a frame of '%(name)s': %(error)s"},
    {FBPY_SEND, 0, false, NULL, "publishing a frame of '%(name)s': %(error)s"},

    /* The exception an error raises at any call. */
    {ANY_CALL, -ENOENT, false, &fbpy_no_such_stream, NULL},
    {ANY_CALL, -EEXIST, false, &fbpy_stream_exists, NULL},
    {ANY_CALL, -EPIPE, false, &fbpy_stream_ended, NULL},
    {ANY_CALL, -ECANCELED, false, &fbpy_stream_removed, NULL},
    {ANY_CALL, -EDQUOT, false, &fbpy_hold_limit, NULL},
    {ANY_CALL, -ENOBUFS, false, &fbpy_frame_dropped, NULL},
    {ANY_CALL, -ETIMEDOUT, false, &PyExc_TimeoutError, NULL},
    {ANY_CALL, -EAGAIN, false, &PyExc_TimeoutError, NULL},
    {ANY_CALL, -ECONNRESET, false, &PyExc_ConnectionResetError, NULL},
    {ANY_CALL, -ENOTCONN, false, &PyExc_ConnectionResetError, NULL},
    {ANY_CALL, -ECONNREFUSED, false, &PyExc_ConnectionRefusedError, NULL},
    {ANY_CALL, -EACCES, false, &PyExc_PermissionError, NULL},
    {ANY_CALL, -EPERM, false, &PyExc_PermissionError, NULL},
    {ANY_CALL, -EINVAL, false, &PyExc_ValueError, NULL},
    {ANY_CALL, -EUSERS, false, &PyExc_ValueError, NULL},
    {ANY_CALL, -ENOMEM, false, &PyExc_MemoryError, NULL},
    /* Last: every failure matches it. */
    {ANY_CALL, 0, false, &fbpy_error, "%(error)s"},
};

PyObject *fbpy_raise(int r, const struct fbpy_failure *f)
{
	bool explained = f->why && f->why[0];
	PyObject *type = NULL;
	const char *message = NULL;

	for (const struct error_row *row = error_rows; !type || !message; row++) {
		if (!(row->calls & f->call) || (row->r && row->r != r) ||
		    (row->explained && !explained))
			continue;
		if (!type && row->type)
			type = *row->type;
		if (!message)
			message = row->message;
	}
	const char *error = explained ? f->why : fb_strerror(r);
	PyObject *fields = Py_BuildValue(
	    "{s:s,s:O,s:I,s:N}", "name", f->name, "path", f->path ? f->path : Py_None, "held",
	    f->held, "error", PyUnicode_DecodeUTF8(error, (Py_ssize_t)strlen(error), "replace"));
	PyObject *format = fields ? PyUnicode_FromString(message) : NULL;
	PyObject *text = format ? PyUnicode_Format(format, fields) : NULL;
	if (text)
		PyErr_SetObject(type, text);
	Py_XDECREF(text);
	Py_XDECREF(format);
	Py_XDECREF(fields);
	return NULL;
}

/* ---- Time and the blocking calls ---- */

uint64_t fbpy_now_ms(void)
{
	return fb_now_ns() / 1000000u;
}

int64_t fbpy_timeout_ms(PyObject *timeout)
{
	if (!timeout || timeout == Py_None)
		return -1;
	double s = PyFloat_AsDouble(timeout);
	if (s == -1.0 && PyErr_Occurred())
		return -2;
	if (!(s >= 0) || s > 1e9) {
		PyErr_Format(PyExc_ValueError,
			     "timeout must be None or between 0 and 1e9 seconds, not %R", timeout);
		return -2;
	}
	/* Round up: a timeout of 0.0001 s still waits a little. */
	return (int64_t)(s * 1000.0 + 0.999);
}

uint64_t fbpy_deadline(int64_t timeout_ms)
{
	if (timeout_ms < 0)
		return FBPY_FOREVER;
	return timeout_ms > 0 ? fbpy_now_ms() + (uint64_t)timeout_ms : 0;
}

int fbpy_wait(uint64_t deadline, fbpy_attempt *attempt, void *data)
{
	for (;;) {
		int slice = 0;
		if (deadline == FBPY_FOREVER)
			slice = SLICE_MS;
		else if (deadline > 0) {
			uint64_t now = fbpy_now_ms();
			slice = now >= deadline ? 0 : (int)Py_MIN(deadline - now, SLICE_MS);
		}
		int r = attempt(data, slice);
		if ((r != -EINTR && r != -ETIMEDOUT) || PyErr_Occurred() ||
		    PyErr_CheckSignals() < 0)
			return r;
		if (r == -ETIMEDOUT && deadline != FBPY_FOREVER && fbpy_now_ms() >= deadline)
			return r;
	}
}

/* ---- Pixels ---- */

int fbpy_view_init(struct fbpy_view *v, const struct fb_layout *l)
{
	Py_ssize_t w = l->width, h = l->height, stride = l->stride[0];

	switch (l->format) {
	case FB_FORMAT_GRAY8:
		*v = (struct fbpy_view){2, {h, w}, {stride, 1}, h * w, 1};
		return 0;
	case FB_FORMAT_GRAY16:
		*v = (struct fbpy_view){2, {h, w}, {stride, 2}, h * w * 2, 2};
		return 0;
	case FB_FORMAT_YUYV422: /* Y, then U or V in turn: [..., 0] is the luma */
		*v = (struct fbpy_view){3, {h, w, 2}, {stride, 2, 1}, h * w * 2, 1};
		return 0;
	case FB_FORMAT_BGR24:
	case FB_FORMAT_RGB24:
		*v = (struct fbpy_view){3, {h, w, 3}, {stride, 3, 1}, h * w * 3, 1};
		return 0;
	case FB_FORMAT_BGRA:
	case FB_FORMAT_RGBA:
		*v = (struct fbpy_view){3, {h, w, 4}, {stride, 4, 1}, h * w * 4, 1};
		return 0;
	case FB_FORMAT_NV12:
	case FB_FORMAT_YUV420P:
		/* All planes with one row step: fb_layout_compute makes the
		 * chroma rows line up so (see docs/ring.md). */
		*v = (struct fbpy_view){2, {h * 3 / 2, w}, {stride, 1}, h * 3 / 2 * w, 1};
		return 0;
	case FB_FORMAT_RESULTS: /* no pixels: an empty array */
		*v = (struct fbpy_view){1, {0}, {1}, 0, 1};
		return 0;
	}
	PyErr_Format(fbpy_error, "unknown pixel format %u", (unsigned)l->format);
	return -1;
}

PyObject *fbpy_view_shape(const struct fbpy_view *v)
{
	if (v->ndim == 1)
		return Py_BuildValue("(n)", v->shape[0]);
	if (v->ndim == 2)
		return Py_BuildValue("(nn)", v->shape[0], v->shape[1]);
	return Py_BuildValue("(nnn)", v->shape[0], v->shape[1], v->shape[2]);
}

int fbpy_view_fill(Py_buffer *view, PyObject *exporter, void *pixels, const struct fbpy_view *v,
		   bool readonly, int flags)
{
	if ((flags & PyBUF_STRIDES) != PyBUF_STRIDES) {
		PyErr_SetString(PyExc_BufferError,
				"frame rows are padded: ask for strides (numpy.asarray does)");
		return -1;
	}
	view->buf = pixels ? pixels : (void *)""; /* a results frame has no pixels */
	view->obj = Py_NewRef(exporter);
	view->len = v->len;
	view->readonly = readonly;
	view->itemsize = v->itemsize;
	view->format = (flags & PyBUF_FORMAT) ? (v->itemsize == 2 ? "<H" : "B") : NULL;
	view->ndim = v->ndim;
	view->shape = (Py_ssize_t *)v->shape;
	view->strides = (Py_ssize_t *)v->strides;
	view->suboffsets = NULL;
	view->internal = NULL;
	return 0;
}

PyObject *fbpy_as_array(PyObject *obj)
{
	if (!numpy_asarray) {
		PyObject *numpy = PyImport_ImportModule("numpy");
		if (!numpy)
			return NULL;
		numpy_asarray = PyObject_GetAttrString(numpy, "asarray");
		Py_DECREF(numpy);
		if (!numpy_asarray)
			return NULL;
	}
	/* Through a memoryview, so that a refused buffer raises here instead
	 * of numpy falling back to other protocols. */
	PyObject *view = PyMemoryView_FromObject(obj);
	if (!view)
		return NULL;
	PyObject *array = PyObject_CallOneArg(numpy_asarray, view);
	Py_DECREF(view);
	return array;
}

PyObject *fbpy_array_method(PyObject *obj, PyObject *args)
{
	return fbpy_as_array(obj);
}

/* ---- Objects ---- */

PyObject *fbpy_enter(PyObject *self, PyObject *unused)
{
	return Py_NewRef(self);
}
