/* SPDX-License-Identifier: MIT */
/* framebus._framebus: the module, its exceptions and types. */
#include "fbpy.h" /* Python.h first, as the C-API asks */

static PyObject *format_names(PyObject *module, PyObject *unused)
{
	PyObject *list = PyList_New(0);
	for (uint32_t f = 1; list && fb_format_name(f); f++) {
		if (f == FB_FORMAT_RESULTS)
			continue; /* no pixels: Bus.publish_results() */
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

/* The calling thread's slice under the fair scheduler
 * (fb_thread_set_sched_slice(): a short one gives its wake-ups an early
 * deadline, so that they preempt a task that has run for a while).
 * frames_async() asks for one (docs/python.md, "Event loops"): an event loop
 * runs tens of microseconds of Python per frame, and under load without it
 * its wake-ups waited ~150 us more for a CPU than a blocking acquire's
 * (docs/ring.md, "Short slice", says why a blocking acquire sets none).
 * Returns the previous slice in seconds, or None where the thread is not
 * under the fair scheduler or the kernel refuses (before 6.12 the field is
 * accepted and ignored). */
static PyObject *sched_slice(PyObject *module, PyObject *arg)
{
	double seconds = PyFloat_AsDouble(arg);
	if (seconds == -1.0 && PyErr_Occurred())
		return NULL;
	if (!(seconds >= 0 && seconds <= FB_SCHED_SLICE_MAX_NS / 1e9)) {
		PyErr_Format(PyExc_ValueError, "a slice is between 0 and 1 seconds, not %R", arg);
		return NULL;
	}
	uint64_t previous;
	if (fb_thread_set_sched_slice((uint64_t)(seconds * 1e9), &previous) < 0)
		Py_RETURN_NONE;
	return PyFloat_FromDouble((double)previous / 1e9);
}

static PyMethodDef module_methods[] = {
    {"connect", (PyCFunction)(void (*)(void))fbpy_connect, METH_VARARGS | METH_KEYWORDS,
     "connect(path=None, name=None) -> Bus\n--\n\n"
     "Connect to framebusd at path (None: $FRAMEBUS_SOCKET, else " FB_DEFAULT_SOCKET ").\n"
     "name is what status tools show for this client."},
    {"formats", format_names, METH_NOARGS,
     "formats() -> list[str]\n--\n\nThe pixel format names a stream may have."},
    {"_sched_slice", sched_slice, METH_O,
     "_sched_slice(seconds) -> float | None\n--\n\n"
     "Set the calling thread's fair-scheduler slice; the previous one, or None\n"
     "(not a fair-class thread, or refused)."},
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
