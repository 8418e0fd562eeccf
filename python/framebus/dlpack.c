/* SPDX-License-Identifier: MIT */
/* Frames' pixels as DLPack capsules, for torch.from_dlpack() and
 * numpy.from_dlpack() (common.h). */
#include "common.h" /* Python.h first, as the C-API asks */
#include "dlpack.h"

/*
 * One export, in one allocation.  It holds a buffer of the frame, as an
 * array over the frame does: the frame's slot stays held, and its ring
 * mapped, until the consumer's tensor is gone and it calls the deleter.  So
 * a tensor follows every rule docs/python.md gives arrays (the hold limit,
 * release(), close()), with nothing of its own to keep in step.
 */
struct export {
	union {
		struct fb_dl_managed_tensor legacy;
		struct fb_dl_managed_tensor_versioned versioned;
	} managed;
	Py_buffer view;
	int64_t shape[3];
	int64_t strides[3];
};

/* The deleter.  The consumer calls it from whatever thread frees its tensor,
 * with or without the GIL (PyTorch frees tensors without it).  After the
 * interpreter began to finalize there is nothing to give back to: the
 * process is ending, and taking the GIL then could stop this thread. */
static void release_export(struct export *e)
{
	if (!Py_IsInitialized())
		return;
	PyGILState_STATE gil = PyGILState_Ensure();
	PyBuffer_Release(&e->view);
	PyMem_Free(e);
	PyGILState_Release(gil);
}

static void delete_legacy(struct fb_dl_managed_tensor *m)
{
	release_export(m->manager_ctx);
}

static void delete_versioned(struct fb_dl_managed_tensor_versioned *m)
{
	release_export(m->manager_ctx);
}

/* A capsule that still has its first name was never consumed: it owns the
 * tensor.  A consumer renames it to "used_..." and calls the deleter itself
 * when its tensor goes. */
static void capsule_destructor(PyObject *capsule)
{
	const char *name = PyCapsule_GetName(capsule);

	if (!name)
		return;
	if (strcmp(name, FB_DLPACK_CAPSULE) == 0) {
		struct fb_dl_managed_tensor *m = PyCapsule_GetPointer(capsule, name);
		m->deleter(m);
	} else if (strcmp(name, FB_DLPACK_CAPSULE_VERSIONED) == 0) {
		struct fb_dl_managed_tensor_versioned *m = PyCapsule_GetPointer(capsule, name);
		m->deleter(m);
	}
}

/* A (major, minor) or (type, id) argument. */
static int parse_pair(PyObject *pair, const char *what, int *ret_a, int *ret_b)
{
	if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
		PyErr_Format(PyExc_TypeError, "%s must be a tuple of two ints, not %R", what, pair);
		return -1;
	}
	int a, b;
	if (!PyArg_ParseTuple(pair, "ii", &a, &b))
		return -1;
	*ret_a = a;
	*ret_b = b;
	return 0;
}

/* The arguments of __dlpack__ (the Python specification of DLPack, as the
 * array API words it): whether the caller takes a versioned capsule, or -1
 * with an exception.  framebus never copies and has no streams. */
static int check_arguments(PyObject *stream, PyObject *max_version, PyObject *dl_device,
			   PyObject *copy)
{
	int major, minor, type, id;

	if (stream != Py_None) {
		PyErr_Format(PyExc_ValueError,
			     "frames are in host memory, which has no streams: stream must be "
			     "None, not %R",
			     stream);
		return -1;
	}
	if (dl_device != Py_None) {
		if (parse_pair(dl_device, "dl_device", &type, &id) < 0)
			return -1;
		if (type != FB_DL_CPU || id != 0) {
			PyErr_Format(PyExc_BufferError,
				     "frames are in host memory, device (%d, 0): framebus does not "
				     "copy them to device (%d, %d)",
				     FB_DL_CPU, type, id);
			return -1;
		}
	}
	if (copy != Py_None) {
		int r = PyObject_IsTrue(copy);
		if (r < 0)
			return -1;
		if (r) {
			PyErr_SetString(PyExc_BufferError,
					"framebus exports the frame's own memory, never a copy: "
					"copy the tensor (tensor.clone(), array.copy()) instead");
			return -1;
		}
	}
	if (max_version == Py_None)
		return 0;
	if (parse_pair(max_version, "max_version", &major, &minor) < 0)
		return -1;
	return major >= FB_DLPACK_MAJOR;
}

PyObject *fbpy_dlpack(PyObject *exporter, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
	PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
	int versioned;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OOOO:__dlpack__", kwlist, &stream,
					 &max_version, &dl_device, &copy))
		return NULL;
	if ((versioned = check_arguments(stream, max_version, dl_device, copy)) < 0)
		return NULL;

	struct export *e = PyMem_Malloc(sizeof(*e));
	if (!e)
		return PyErr_NoMemory();
	/* The exporter says whether the memory is writable: a Frame's is not,
	 * an OutFrame's is. */
	if (PyObject_GetBuffer(exporter, &e->view, PyBUF_RECORDS_RO) < 0) {
		PyMem_Free(e);
		return NULL;
	}
	for (int i = 0; i < e->view.ndim; i++) {
		e->shape[i] = e->view.shape[i];
		e->strides[i] = e->view.strides[i] / e->view.itemsize;
	}
	/* byte_offset 0 and data the pixels themselves, as numpy and PyTorch
	 * export and expect: the 256-byte alignment DLPack once asked of data
	 * is not what its consumers read. */
	struct fb_dl_tensor tensor = {
	    .data = e->view.buf,
	    .device = {FB_DL_CPU, 0},
	    .ndim = e->view.ndim,
	    .dtype = {FB_DL_UINT, (uint8_t)(8 * e->view.itemsize), 1},
	    .shape = e->shape,
	    .strides = e->strides,
	    .byte_offset = 0,
	};
	const char *name;
	if (versioned) {
		e->managed.versioned = (struct fb_dl_managed_tensor_versioned){
		    .version = {FB_DLPACK_MAJOR, FB_DLPACK_MINOR},
		    .manager_ctx = e,
		    .deleter = delete_versioned,
		    .flags = e->view.readonly ? FB_DLPACK_FLAG_READ_ONLY : 0,
		    .dl_tensor = tensor,
		};
		name = FB_DLPACK_CAPSULE_VERSIONED;
	} else {
		e->managed.legacy = (struct fb_dl_managed_tensor){
		    .dl_tensor = tensor,
		    .manager_ctx = e,
		    .deleter = delete_legacy,
		};
		name = FB_DLPACK_CAPSULE;
	}
	PyObject *capsule = PyCapsule_New(&e->managed, name, capsule_destructor);
	if (!capsule)
		release_export(e);
	return capsule;
}

PyObject *fbpy_dlpack_device(PyObject *self, PyObject *unused)
{
	return Py_BuildValue("(ii)", FB_DL_CPU, 0);
}
