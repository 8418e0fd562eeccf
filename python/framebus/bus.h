/* SPDX-License-Identifier: MIT */
/* framebus.Bus (bus.c), for the subscriber and publisher files above it
 * (fbpy.h draws the layers). */
#ifndef FBPY_BUS_H
#define FBPY_BUS_H

#include "common.h"

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
	uint64_t next_check_ms;   /* fbpy_bus_keep_connected() does nothing before then */
};

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
/* Make the Bus type and its result types, and add them to the module. */
int fbpy_bus_init_types(PyObject *module);
/* Give Bus a method defined above it (subscribe, publish), after
 * fbpy_bus_init_types(): bus.c needs nothing from the files above. */
int fbpy_bus_add_method(PyMethodDef *def);

#endif
