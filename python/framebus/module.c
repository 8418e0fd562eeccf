/* SPDX-License-Identifier: MIT */
/* framebus._framebus: the module, its exceptions and shared helpers. */
#include "fbpy.h" /* Python.h first, as the C-API asks */

#include <errno.h>
#include <stdarg.h>
#include <time.h>

PyObject *fbpy_error, *fbpy_stream_ended, *fbpy_stream_removed, *fbpy_hold_limit,
    *fbpy_frame_dropped, *fbpy_no_such_stream, *fbpy_stream_exists;

static PyObject *numpy_asarray;

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

static PyObject *format_names(PyObject *module, PyObject *unused)
{
	PyObject *list = PyList_New(0);
	for (uint32_t f = 1; list && fb_format_name(f); f++) {
		PyObject *name = PyUnicode_FromString(fb_format_name(f));
		if (!name || PyList_Append(list, name) < 0) {
			Py_XDECREF(name);
			Py_CLEAR(list);
			break;
		}
		Py_DECREF(name);
	}
	return list;
}

static PyMethodDef module_methods[] = {
    {"connect", (PyCFunction)(void (*)(void))fbpy_connect, METH_VARARGS | METH_KEYWORDS,
     "connect(path=None, name=None) -> Bus\n--\n\n"
     "Connect to framebusd at path (None: $FRAMEBUS_SOCKET, else " FB_DEFAULT_SOCKET ").\n"
     "name is what status tools show for this client."},
    {"formats", format_names, METH_NOARGS,
     "formats() -> list[str]\n--\n\nThe pixel format names a stream may have."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "framebus._framebus",
    .m_doc = "The C extension behind the framebus package; import framebus instead.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int add_exception(PyObject *module, PyObject **ret, const char *name, PyObject *bases,
			 const char *doc)
{
	char qualified[128];
	PyOS_snprintf(qualified, sizeof(qualified), "framebus.%s", name);
	*ret = PyErr_NewExceptionWithDoc(qualified, doc, bases, NULL);
	if (!*ret)
		return -1;
	return PyModule_AddObjectRef(module, name, *ret);
}

PyMODINIT_FUNC PyInit__framebus(void);
PyMODINIT_FUNC PyInit__framebus(void)
{
	PyObject *m = PyModule_Create(&module_def);
	PyObject *bases = NULL;

	if (!m)
		return NULL;
	if (add_exception(m, &fbpy_error, "Error", NULL,
			  "Base class of the errors framebus raises itself.") < 0)
		goto fail;
	if (add_exception(m, &fbpy_stream_ended, "StreamEnded", fbpy_error,
			  "The stream ended (its source finished or its publisher left) and "
			  "every frame was read.") < 0 ||
	    add_exception(m, &fbpy_stream_removed, "StreamRemoved", fbpy_error,
			  "The daemon ended this subscription: the stream was removed or "
			  "restarted with another geometry.  Subscribe again.") < 0 ||
	    add_exception(m, &fbpy_hold_limit, "HoldLimitError", fbpy_error,
			  "The subscription already holds as many frames as it may: release "
			  "frames (and drop arrays made from them) first.") < 0 ||
	    add_exception(m, &fbpy_frame_dropped, "FrameDropped", fbpy_error,
			  "A drop-policy stream had every slot held by subscribers: this frame "
			  "was counted as dropped.") < 0)
		goto fail;
	bases = PyTuple_Pack(2, fbpy_error, PyExc_LookupError);
	if (!bases || add_exception(m, &fbpy_no_such_stream, "NoSuchStream", bases,
				    "The bus has no stream of that name.") < 0)
		goto fail;
	Py_DECREF(bases);
	bases = PyTuple_Pack(2, fbpy_error, PyExc_FileExistsError);
	if (!bases || add_exception(m, &fbpy_stream_exists, "StreamExists", bases,
				    "The bus already has a stream of that name.") < 0)
		goto fail;
	Py_CLEAR(bases);
	if (fbpy_bus_init_types(m) < 0 || fbpy_subscriber_init_types(m) < 0 ||
	    fbpy_publisher_init_types(m) < 0)
		goto fail;
	if (PyModule_AddStringConstant(m, "DEFAULT_SOCKET", FB_DEFAULT_SOCKET) < 0 ||
	    PyModule_AddStringConstant(m, "library_version", fb_version()) < 0)
		goto fail;
	return m;
fail:
	Py_XDECREF(bases);
	Py_DECREF(m);
	return NULL;
}
