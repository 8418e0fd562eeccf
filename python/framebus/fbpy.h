/* SPDX-License-Identifier: MIT */
/*
 * Private header of framebus._framebus, the C extension behind the Python
 * package: the object layouts shared by bus.c, subscriber.c and publisher.c.
 *
 * Lifetimes.  Every numpy array made from a frame points into ring memory, so
 * that memory must outlive the array.  Python references do that work: an
 * array holds its frame (the buffer exporter), a frame holds its subscriber or
 * publisher, and that holds its bus.  close() only marks an object closed;
 * the C resources go once nothing alive can still reach them:
 * - a subscriber frame gives its slot back once it was released (or died)
 *   and no buffer export of the slot (array, memoryview) is left: the
 *   subscriber's slot table counts them, whichever object exported them;
 * - a subscriber unsubscribes once closed with no frame holding a slot;
 * - a publisher unpublishes once closed with no frame being written and no
 *   array left over a frame it wrote;
 * - the bus disconnects once closed with no subscriber or publisher left,
 *   because disconnecting would make the daemon hand their slots back.
 */
#ifndef FBPY_H
#define FBPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdbool.h>

#include <framebus/framebus.h>

/* A subscriber or publisher, linked into its bus so that bus.close() can
 * close it. */
struct fbpy_child {
	struct fbpy_child *prev, *next;
	void (*close)(struct fbpy_child *child);
};

struct fbpy_bus {
	PyObject_HEAD
	fb_client *client; /* NULL once disconnected */
	PyThread_type_lock lock; /* one caller of the client at a time */
	PyObject *path;
	bool closed;
	Py_ssize_t users; /* subscribers and publishers not yet freed */
	struct fbpy_child children;
	PyObject *events; /* StreamEvent and ConnectionEvent not yet taken by process() */
	uint64_t connections;     /* counts the times the client connected again */
	uint64_t next_check_ms;   /* fbpy_bus_keep_connected() does nothing before then */
};

struct fbpy_view {
	int ndim;
	Py_ssize_t shape[3];
	Py_ssize_t strides[3];
	Py_ssize_t len;
};

struct fbpy_frame;

/* One slot of a subscriber's ring, as the binding sees it. */
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

struct fbpy_subscriber {
	PyObject_HEAD
	struct fbpy_child link;
	struct fbpy_bus *bus;
	fb_subscriber *sub; /* NULL once unsubscribed */
	PyObject *stream;
	uint32_t mode;
	uint32_t max_holds; /* as asked (0: the daemon's default) */
	uint32_t format;
	uint32_t width, height;
	uint32_t n_slots;
	uint64_t connections; /* the bus's count when it subscribed */
	bool lost;            /* framebusd restarted: subscribe again */
	bool resumed;         /* subscribed again: the next frame is a discontinuity */
	bool closed;
	bool busy;            /* a thread is inside acquire */
	Py_ssize_t live;      /* slots held */
	struct fbpy_frame *iter_frame; /* borrowed: the frame for-iteration handed out */
	struct fbpy_view view;
	struct fbpy_slot slots[FB_MAX_SLOTS];
};

/* The exporter of a spare array: one slot's pixels.  It keeps its
 * subscriber alive only once its array was handed out (before that the
 * subscriber owns the array, and a reference back would be a cycle). */
struct fbpy_slot_view {
	PyObject_HEAD
	struct fbpy_subscriber *owner;
	uint32_t slot;
	bool owns_ref;
};

struct fbpy_frame {
	PyObject_HEAD
	struct fbpy_subscriber *owner;
	uint32_t slot;
	uint64_t generation; /* its slot's generation when it was taken */
	bool holding;        /* not yet released */
	PyObject *array; /* the slot's array, until frame.array hands it out */
	PyObject *meta;
	struct fb_frame info; /* a copy, readable after the release */
};

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

/* Types and exceptions, created by the module's init. */
extern PyTypeObject *fbpy_bus_type, *fbpy_subscriber_type, *fbpy_frame_type,
    *fbpy_slot_view_type;
extern PyTypeObject *fbpy_publisher_type, *fbpy_outframe_type;
extern PyTypeObject *fbpy_stream_info_type, *fbpy_stream_event_type,
    *fbpy_connection_event_type;
extern PyObject *fbpy_error, *fbpy_stream_ended, *fbpy_stream_removed, *fbpy_hold_limit,
    *fbpy_frame_dropped, *fbpy_no_such_stream, *fbpy_stream_exists;

int fbpy_bus_init_types(PyObject *module);
int fbpy_subscriber_init_types(PyObject *module);
int fbpy_publisher_init_types(PyObject *module);

/* Raise the exception that fits a negative errno r, with a message that
 * starts with what was being done. */
PyObject *fbpy_raise(int r, const char *fmt, ...);

/* Take the bus's client lock, letting other threads run if it is busy. */
void fbpy_bus_lock(struct fbpy_bus *bus);
void fbpy_bus_unlock(struct fbpy_bus *bus);
/* Connect again if framebusd was lost; looks at most every 250 ms. */
void fbpy_bus_keep_connected(struct fbpy_bus *bus);
/* Raises ValueError and returns -1 if the bus is closed. */
int fbpy_bus_check(struct fbpy_bus *bus);
void fbpy_bus_adopt(struct fbpy_bus *bus, struct fbpy_child *child);
/* A child freed its C resources: unlink it; the last one out of a closed bus
 * disconnects it. */
void fbpy_bus_release(struct fbpy_bus *bus, struct fbpy_child *child);

/* framebus.connect() */
PyObject *fbpy_connect(PyObject *module, PyObject *args, PyObject *kwds);
/* bus.subscribe() and bus.publish(), in their objects' files. */
PyObject *fbpy_subscriber_new(struct fbpy_bus *bus, PyObject *args, PyObject *kwds);
PyObject *fbpy_publisher_new(struct fbpy_bus *bus, PyObject *args, PyObject *kwds);

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
/* Seconds (None: forever) as milliseconds, -1 for forever; -2 and an
 * exception for a bad value. */
int64_t fbpy_timeout_ms(PyObject *timeout);
uint64_t fbpy_now_ms(void);

#endif
