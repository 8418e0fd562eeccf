/* SPDX-License-Identifier: MIT */
/*
 * The bottom of framebus._framebus (fbpy.h draws the layers): what every
 * other file uses and which uses none of them.  Errors as exceptions, the
 * sliced wait of the blocking calls, time, frames' pixels as buffers,
 * numpy arrays and DLPack capsules, and the __enter__ of every context
 * manager.
 */
#ifndef FBPY_COMMON_H
#define FBPY_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdbool.h>

#include <framebus/framebus.h>

/* ---- Errors ---- */

/* framebus.Error and its subclasses, made by the module's init. */
extern PyObject *fbpy_error, *fbpy_stream_ended, *fbpy_stream_removed, *fbpy_hold_limit,
    *fbpy_frame_dropped, *fbpy_no_such_stream, *fbpy_stream_exists;

/* The calls whose failures fbpy_raise() words: flags, so that a row of its
 * table can stand for several. */
enum fbpy_call {
	FBPY_CONNECT = 1 << 0,   /* framebus.connect() */
	FBPY_LIST = 1 << 1,      /* Bus.streams() */
	FBPY_DESCRIBE = 1 << 2,  /* Bus.stream() */
	FBPY_EVENTS = 1 << 3,    /* Bus.process() */
	FBPY_SUBSCRIBE = 1 << 4, /* Bus.subscribe() */
	FBPY_PUBLISH = 1 << 5,   /* Bus.publish() */
	FBPY_TAKE = 1 << 6,      /* Subscriber.acquire(), try_acquire(), iteration */
	FBPY_FRAME = 1 << 7,     /* Publisher.frame() */
	FBPY_SEND = 1 << 8,      /* OutFrame.publish() */
};

/* A call that failed, and what its message may name. */
struct fbpy_failure {
	enum fbpy_call call;
	const char *name; /* the stream's name (UTF-8), or NULL */
	PyObject *path;   /* framebusd's socket (str), or NULL */
	const char *why;  /* what framebusd answered a refused request, or NULL */
	unsigned held;    /* FBPY_TAKE: frames the subscription holds */
};

/* Raise the exception that fits the negative errno r for that call, and
 * return NULL.  The one table of exceptions and messages is in common.c. */
PyObject *fbpy_raise(int r, const struct fbpy_failure *failure);

/* ---- Time and the blocking calls ---- */

uint64_t fbpy_now_ms(void);
/* Seconds (None: forever) as milliseconds, -1 for forever; -2 and an
 * exception for a bad value. */
int64_t fbpy_timeout_ms(PyObject *timeout);

/* When a wait of timeout_ms (-1: forever, 0: not at all) that starts now
 * ends, for fbpy_wait(): the clock is read only for a real timeout. */
#define FBPY_FOREVER UINT64_MAX
uint64_t fbpy_deadline(int64_t timeout_ms);

/* One try of a blocking call, for fbpy_wait(): called with the GIL, it
 * releases the GIL around its wait of up to slice_ms (0: no wait).
 * Returns -ETIMEDOUT if nothing came in time, -EINTR to be tried again at
 * once (interrupted, or after reconnecting), anything else to end the wait;
 * an exception it sets ends the wait too. */
typedef int fbpy_attempt(void *data, int slice_ms);

/* Try until the attempt ends the wait or the deadline passes, in slices of
 * at most 100 ms: between them, Python's signal handlers run (a Ctrl-C
 * interrupts the wait; a signal may have come without interrupting it,
 * SA_RESTART).  Returns the last attempt's result; when a handler raised,
 * the exception is set. */
int fbpy_wait(uint64_t deadline, fbpy_attempt *attempt, void *data);

/* ---- Pixels ---- */

/* A frame's pixels as an array: all planes in one, rows one stride apart. */
struct fbpy_view {
	int ndim;
	Py_ssize_t shape[3];
	Py_ssize_t strides[3];
	Py_ssize_t len;      /* bytes */
	Py_ssize_t itemsize; /* 1 (uint8), or 2 (uint16: gray16) */
};

int fbpy_view_init(struct fbpy_view *view, const struct fb_layout *layout);
/* The shape of a frame's array, as a tuple. */
PyObject *fbpy_view_shape(const struct fbpy_view *v);
/* Fill a buffer request for a frame's pixels (the exporter's getbuffer). */
int fbpy_view_fill(Py_buffer *view, PyObject *exporter, void *pixels, const struct fbpy_view *v,
		   bool readonly, int flags);
/* The numpy array over obj's buffer (numpy imported on first use); also
 * obj.__array__(), so that numpy.asarray() of a frame whose buffer is gone
 * raises rather than making a 0-d object array. */
PyObject *fbpy_as_array(PyObject *obj);
PyObject *fbpy_array_method(PyObject *obj, PyObject *args);

/* __dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)
 * of a frame (dlpack.c): a DLPack capsule over obj's buffer, holding it until
 * the consumer calls the deleter; read-only if the buffer is.  A capsule
 * "dltensor_versioned" (DLPack 1.0, with its read-only flag) when the caller
 * gives max_version >= (1, 0), else "dltensor". */
PyObject *fbpy_dlpack(PyObject *obj, PyObject *args, PyObject *kwds);
/* __dlpack_device__(): (kDLCPU, 0). */
PyObject *fbpy_dlpack_device(PyObject *obj, PyObject *unused);

/* ---- Objects ---- */

/* __enter__ of every context manager here: the object itself. */
PyObject *fbpy_enter(PyObject *self, PyObject *unused);

#endif
