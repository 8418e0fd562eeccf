/* SPDX-License-Identifier: MIT */
/* The bottom of framebus._framebus: errors as exceptions, the sliced wait,
 * time, and pixels as buffers and numpy arrays (common.h). */
#include "common.h" /* Python.h first, as the C-API asks */

#include <errno.h>
#include <stdarg.h>
#include <time.h>

PyObject *fbpy_error, *fbpy_stream_ended, *fbpy_stream_removed, *fbpy_hold_limit,
    *fbpy_frame_dropped, *fbpy_no_such_stream, *fbpy_stream_exists;

/* How long a blocking call waits at a time before it looks at Python's
 * signals (and, while framebusd is away, a subscriber tries to subscribe
 * again). */
#define SLICE_MS 100

static PyObject *numpy_asarray;

/* ---- Errors ---- */

PyObject *fbpy_raise(int r, const char *fmt, ...)
{
	PyObject *type;
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	PyOS_vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	switch (r) {
	case -ENOENT:
		type = fbpy_no_such_stream;
		break;
	case -EEXIST:
		type = fbpy_stream_exists;
		break;
	case -EPIPE:
		type = fbpy_stream_ended;
		break;
	case -ECANCELED:
		type = fbpy_stream_removed;
		break;
	case -EDQUOT:
		type = fbpy_hold_limit;
		break;
	case -ENOBUFS:
		type = fbpy_frame_dropped;
		break;
	case -ETIMEDOUT:
	case -EAGAIN:
		type = PyExc_TimeoutError;
		break;
	case -ECONNRESET:
	case -ENOTCONN:
		type = PyExc_ConnectionResetError;
		break;
	case -ECONNREFUSED:
		type = PyExc_ConnectionRefusedError;
		break;
	case -EACCES:
	case -EPERM:
		type = PyExc_PermissionError;
		break;
	case -EINVAL:
	case -EUSERS:
		type = PyExc_ValueError;
		break;
	case -ENOMEM:
		type = PyExc_MemoryError;
		break;
	default:
		type = fbpy_error;
		break;
	}
	PyErr_Format(type, "%s: %s", what, fb_strerror(r));
	return NULL;
}

/* ---- Time and the blocking calls ---- */

uint64_t fbpy_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
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
		*v = (struct fbpy_view){2, {h, w}, {stride, 1}, h * w};
		return 0;
	case FB_FORMAT_BGR24:
	case FB_FORMAT_RGB24:
		*v = (struct fbpy_view){3, {h, w, 3}, {stride, 3, 1}, h * w * 3};
		return 0;
	case FB_FORMAT_BGRA:
		*v = (struct fbpy_view){3, {h, w, 4}, {stride, 4, 1}, h * w * 4};
		return 0;
	case FB_FORMAT_NV12:
	case FB_FORMAT_YUV420P:
		/* All planes with one row step: fb_layout_compute makes the
		 * chroma rows line up so (see docs/ring.md). */
		*v = (struct fbpy_view){2, {h * 3 / 2, w}, {stride, 1}, h * 3 / 2 * w};
		return 0;
	}
	PyErr_Format(fbpy_error, "unknown pixel format %u", (unsigned)l->format);
	return -1;
}

PyObject *fbpy_view_shape(const struct fbpy_view *v)
{
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
	view->buf = pixels;
	view->obj = Py_NewRef(exporter);
	view->len = v->len;
	view->readonly = readonly;
	view->itemsize = 1;
	view->format = (flags & PyBUF_FORMAT) ? "B" : NULL;
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
