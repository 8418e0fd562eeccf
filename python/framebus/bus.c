/* SPDX-License-Identifier: MIT */
/* framebus.Bus: a connection to framebusd. */
#include "bus.h" /* Python.h first, as the C-API asks */

#include <errno.h>

static PyTypeObject *fbpy_bus_type, *fbpy_stream_info_type, *fbpy_stream_event_type,
    *fbpy_connection_event_type;

#define MAX_PENDING_EVENTS 1024
/* How often the bus's own objects try to reach a lost framebusd again. */
#define RECONNECT_INTERVAL_MS 250

static PyStructSequence_Field stream_info_fields[] = {
    {"name", "the stream's name"},
    {"source", "its source url (a publishing client's name for published streams)"},
    {"width", "frame width in pixels (0 before the first frame)"},
    {"height", "frame height in pixels"},
    {"format", "pixel format name, or None before the first frame"},
    {"slots", "frame slots in its ring"},
    {"policy", "'drop' or 'block'"},
    {"meta_max", "bytes of side data a frame can carry"},
    {"state", "'starting', 'running', 'retrying', 'ended' or 'removed'"},
    {"subscribers", "subscriptions right now"},
    {"published", "frames published since it (re)started"},
    {"dropped", "publishes dropped because every slot was held"},
    {"fps", "frames published per second, lately"},
    {"retries", "consecutive failures to open or read its source"},
    {"detail", "why it is retrying or ended, else ''"},
    {"stalls", "queue subscribers that kept this block stream waiting past its block_timeout "
	       "since it started"},
    {"parent_skipped_busy", "a derived stream's parent frames it passed over since it started, "
			    "still busy with an earlier one (0 for other streams)"},
    {"parent_skipped_rate", "a derived stream's parent frames its fps limit left out since it "
			    "started (0 for other streams)"},
    {NULL},
};

static PyStructSequence_Desc stream_info_desc = {
    "framebus.StreamInfo", "A stream as the daemon describes it.", stream_info_fields, 18};

static PyStructSequence_Field stream_event_fields[] = {
    {"stream", "the stream's name"},
    {"state", "its new state ('running', 'retrying', 'ended', 'removed', ...)"},
    {"detail", "why, or ''"},
    {NULL},
};

static PyStructSequence_Desc stream_event_desc = {"framebus.StreamEvent", "A stream changed state.",
						  stream_event_fields, 3};

static PyStructSequence_Field connection_event_fields[] = {
    {"connected", "False: framebusd went away (the bus tries again every 250 ms); "
		  "True: connected again"},
    {"detail", "what happened, for a log"},
    {NULL},
};

static PyStructSequence_Desc connection_event_desc = {
    "framebus.ConnectionEvent", "The bus lost framebusd, or connected to it again.",
    connection_event_fields, 2};

static PyObject *name_or_none(const char *name)
{
	if (name)
		return PyUnicode_FromString(name);
	Py_RETURN_NONE;
}

static PyObject *stream_info_new(const struct fb_stream_info *i)
{
	PyObject *o = PyStructSequence_New(fbpy_stream_info_type);
	if (!o)
		return NULL;
	PyObject *items[] = {
	    PyUnicode_FromString(i->name),
	    PyUnicode_DecodeUTF8(i->source, (Py_ssize_t)strnlen(i->source, sizeof(i->source)),
				 "replace"),
	    PyLong_FromUnsignedLong(i->width),
	    PyLong_FromUnsignedLong(i->height),
	    name_or_none(fb_format_name(i->format)),
	    PyLong_FromUnsignedLong(i->slots),
	    PyUnicode_FromString(i->policy == FB_POLICY_BLOCK ? "block" : "drop"),
	    PyLong_FromUnsignedLong(i->meta_max),
	    name_or_none(fb_stream_state_name(i->state)),
	    PyLong_FromUnsignedLong(i->subscribers),
	    PyLong_FromUnsignedLongLong(i->published),
	    PyLong_FromUnsignedLongLong(i->dropped),
	    PyFloat_FromDouble(i->fps),
	    PyLong_FromUnsignedLong(i->retries),
	    PyUnicode_DecodeUTF8(i->detail, (Py_ssize_t)strnlen(i->detail, sizeof(i->detail)),
				 "replace"),
	    PyLong_FromUnsignedLong(i->stalls),
	    PyLong_FromUnsignedLongLong(i->parent_skipped_busy),
	    PyLong_FromUnsignedLongLong(i->parent_skipped_rate),
	};
	for (Py_ssize_t k = 0; k < (Py_ssize_t)(sizeof(items) / sizeof(items[0])); k++) {
		if (!items[k]) {
			for (Py_ssize_t j = k + 1;
			     j < (Py_ssize_t)(sizeof(items) / sizeof(items[0])); j++)
				Py_XDECREF(items[j]);
			Py_DECREF(o);
			return NULL;
		}
		PyStructSequence_SetItem(o, k, items[k]);
	}
	return o;
}

/* Queue an event for process() (a new reference, or NULL with an error). */
static void queue_event(struct fbpy_bus *bus, PyObject *e)
{
	if (!e || PyErr_Occurred() ||
	    (PyList_GET_SIZE(bus->events) >= MAX_PENDING_EVENTS &&
	     PySequence_DelItem(bus->events, 0) < 0) ||
	    PyList_Append(bus->events, e) < 0)
		PyErr_Clear();
	Py_XDECREF(e);
}

/* The client's callbacks: called with the GIL held, from inside a client
 * call the bus made. */
static void on_event(void *userdata, const char *stream, uint32_t state, const char *detail)
{
	PyObject *e = PyStructSequence_New(fbpy_stream_event_type);
	if (e) {
		PyStructSequence_SetItem(e, 0, PyUnicode_FromString(stream));
		PyStructSequence_SetItem(e, 1, name_or_none(fb_stream_state_name(state)));
		PyStructSequence_SetItem(
		    e, 2, PyUnicode_DecodeUTF8(detail, (Py_ssize_t)strlen(detail), "replace"));
	}
	queue_event(userdata, e);
}

static void on_connection(void *userdata, bool connected, const char *detail)
{
	struct fbpy_bus *bus = userdata;
	PyObject *e = PyStructSequence_New(fbpy_connection_event_type);
	if (e) {
		PyStructSequence_SetItem(e, 0, PyBool_FromLong(connected));
		PyStructSequence_SetItem(
		    e, 1, PyUnicode_DecodeUTF8(detail, (Py_ssize_t)strlen(detail), "replace"));
	}
	queue_event(bus, e);
}

void fbpy_bus_keep_connected(struct fbpy_bus *bus)
{
	uint64_t now = fbpy_now_ms(); /* (no syscall: called for every frame) */
	if (!bus->client || now < bus->next_check_ms)
		return;
	bus->next_check_ms = now + RECONNECT_INTERVAL_MS;
	fbpy_bus_lock(bus);
	fb_client_reconnect(bus->client); /* nothing to do while connected */
	fbpy_bus_unlock(bus);
}

void fbpy_bus_lock(struct fbpy_bus *bus)
{
	if (PyThread_acquire_lock(bus->lock, NOWAIT_LOCK))
		return;
	Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(bus->lock, WAIT_LOCK);
	Py_END_ALLOW_THREADS
}

void fbpy_bus_unlock(struct fbpy_bus *bus)
{
	PyThread_release_lock(bus->lock);
}

int fbpy_bus_check(struct fbpy_bus *bus)
{
	if (bus->closed) {
		PyErr_SetString(PyExc_ValueError, "the bus connection is closed");
		return -1;
	}
	return 0;
}

void fbpy_bus_adopt(struct fbpy_bus *bus, struct fbpy_child *child)
{
	child->next = bus->children.next;
	child->prev = &bus->children;
	child->next->prev = child;
	bus->children.next = child;
	bus->users++;
}

static void disconnect(struct fbpy_bus *bus)
{
	fbpy_bus_lock(bus);
	fb_client_free(bus->client);
	bus->client = NULL;
	fbpy_bus_unlock(bus);
}

void fbpy_bus_release(struct fbpy_bus *bus, struct fbpy_child *child)
{
	child->prev->next = child->next;
	child->next->prev = child->prev;
	child->prev = child->next = NULL;
	if (--bus->users == 0 && bus->closed)
		disconnect(bus);
}

PyObject *fbpy_connect(PyObject *module, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"path", "name", NULL};
	const char *path = NULL, *name = NULL;
	struct fbpy_bus *bus;
	fb_client *client;
	PyObject *where;
	int r;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "|zz:connect", kwlist, &path, &name))
		return NULL;
	size_t len = name ? strlen(name) : 1;
	for (size_t i = 0; name && i < len; i++)
		if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e)
			len = 0;
	if (len == 0 || len > FB_NAME_MAX)
		return PyErr_Format(PyExc_ValueError,
				    "client name '%s' must be 1 to %d printable ASCII characters "
				    "without spaces",
				    name, FB_NAME_MAX);
	if (!path || !*path)
		path = getenv("FRAMEBUS_SOCKET");
	if (!path || !*path)
		path = FB_DEFAULT_SOCKET;
	if (!(where = PyUnicode_DecodeFSDefault(path)))
		return NULL;
	Py_BEGIN_ALLOW_THREADS r = fb_client_connect(path, name, &client);
	Py_END_ALLOW_THREADS if (r < 0)
	{
		fbpy_raise(r, &(struct fbpy_failure){FBPY_CONNECT, .path = where});
		Py_DECREF(where);
		return NULL;
	}
	bus = PyObject_New(struct fbpy_bus, fbpy_bus_type);
	if (!bus) {
		fb_client_free(client);
		Py_DECREF(where);
		return NULL;
	}
	bus->client = client;
	bus->closed = false;
	bus->users = 0;
	bus->children.next = bus->children.prev = &bus->children;
	bus->lock = PyThread_allocate_lock();
	bus->path = where;
	bus->events = PyList_New(0);
	if (!bus->lock || !bus->events) {
		Py_DECREF(bus);
		return PyErr_Occurred() ? NULL : PyErr_NoMemory();
	}
	bus->next_check_ms = 0;
	fb_client_set_event_callback(client, on_event, bus);
	fb_client_set_connection_callback(client, on_connection, bus);
	return (PyObject *)bus;
}

static void bus_dealloc(struct fbpy_bus *bus)
{
	/* Children hold references to the bus: none is left. */
	fb_client_free(bus->client);
	if (bus->lock)
		PyThread_free_lock(bus->lock);
	Py_XDECREF(bus->path);
	Py_XDECREF(bus->events);
	PyTypeObject *type = Py_TYPE(bus);
	PyObject_Free(bus);
	Py_DECREF(type);
}

static PyObject *bus_close(struct fbpy_bus *bus, PyObject *unused)
{
	if (bus->closed)
		Py_RETURN_NONE;
	bus->closed = true;
	for (struct fbpy_child *c = bus->children.next, *next; c != &bus->children; c = next) {
		next = c->next;
		c->close(c); /* may unlink itself */
	}
	if (bus->users == 0)
		disconnect(bus);
	Py_RETURN_NONE;
}

/* A stream's description with the figures only its detail carries (stalls,
 * the parent frames a derived stream skipped). */
static int describe(struct fbpy_bus *bus, const char *name, struct fb_stream_info *ret_info)
{
	struct fb_subscription_info *subs;
	size_t n;
	int r = fb_client_inspect(bus->client, name, ret_info, &subs, &n);
	if (r >= 0)
		free(subs);
	return r;
}

static PyObject *bus_streams(struct fbpy_bus *bus, PyObject *unused)
{
	struct fb_stream_info *infos = NULL;
	size_t n = 0;
	int r;

	if (fbpy_bus_check(bus) < 0)
		return NULL;
	fbpy_bus_lock(bus);
	r = fb_client_list_streams(bus->client, &infos, &n);
	/* Each in detail; one removed since the list keeps the list's
	 * description. */
	for (size_t i = 0; r >= 0 && i < n; i++)
		if ((r = describe(bus, infos[i].name, &infos[i])) == -ENOENT)
			r = 0;
	const char *why = fb_client_last_error(bus->client);
	fbpy_bus_unlock(bus);
	if (r < 0) {
		free(infos);
		return fbpy_raise(r,
				  &(struct fbpy_failure){FBPY_LIST, .path = bus->path, .why = why});
	}
	PyObject *list = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; list && i < n; i++) {
		PyObject *o = stream_info_new(&infos[i]);
		if (!o) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, o);
	}
	free(infos);
	return list;
}

static PyObject *bus_stream(struct fbpy_bus *bus, PyObject *arg)
{
	struct fb_stream_info info;
	const char *name;
	int r;

	if (fbpy_bus_check(bus) < 0 || !(name = PyUnicode_AsUTF8(arg)))
		return NULL;
	fbpy_bus_lock(bus);
	r = describe(bus, name, &info);
	const char *why = fb_client_last_error(bus->client);
	fbpy_bus_unlock(bus);
	if (r < 0)
		return fbpy_raise(r, &(struct fbpy_failure){FBPY_DESCRIBE, .name = name,
							    .path = bus->path, .why = why});
	return stream_info_new(&info);
}

static PyObject *bus_process(struct fbpy_bus *bus, PyObject *unused)
{
	int r;

	if (fbpy_bus_check(bus) < 0)
		return NULL;
	fbpy_bus_lock(bus);
	r = fb_client_process(bus->client);
	const char *why = fb_client_last_error(bus->client);
	fbpy_bus_unlock(bus);
	/* While framebusd is away, process() tries to connect again: what it
	 * finds is a ConnectionEvent, not an error. */
	if (r < 0 && r != -ECONNRESET)
		return fbpy_raise(
		    r, &(struct fbpy_failure){FBPY_EVENTS, .path = bus->path, .why = why});
	PyObject *events = bus->events;
	bus->events = PyList_New(0);
	if (!bus->events) {
		bus->events = events;
		return NULL;
	}
	return events;
}

static PyObject *bus_fileno(struct fbpy_bus *bus, PyObject *unused)
{
	if (fbpy_bus_check(bus) < 0)
		return NULL;
	return PyLong_FromLong(fb_client_get_fd(bus->client));
}

static PyObject *bus_exit(struct fbpy_bus *bus, PyObject *args)
{
	return bus_close(bus, NULL);
}

static PyObject *bus_get_closed(struct fbpy_bus *bus, void *unused)
{
	return PyBool_FromLong(bus->closed);
}

static PyObject *bus_get_connected(struct fbpy_bus *bus, void *unused)
{
	return PyBool_FromLong(!bus->closed && bus->client && fb_client_check(bus->client) == 0);
}

static PyObject *bus_get_path(struct fbpy_bus *bus, void *unused)
{
	return Py_NewRef(bus->path);
}

static PyObject *bus_repr(struct fbpy_bus *bus)
{
	return PyUnicode_FromFormat("<framebus.Bus %U%s>", bus->path, bus->closed ? " closed" : "");
}

static PyMethodDef bus_methods[] = {
    {"streams", (PyCFunction)bus_streams, METH_NOARGS,
     "streams() -> list[StreamInfo]\n--\n\nEvery stream on the bus."},
    {"stream", (PyCFunction)bus_stream, METH_O,
     "stream(name) -> StreamInfo\n--\n\nOne stream; NoSuchStream if the bus has none of that "
     "name."},
    {"process", (PyCFunction)bus_process, METH_NOARGS,
     "process() -> list[StreamEvent | ConnectionEvent]\n--\n\n"
     "Read what the daemon sent without blocking and return the events received\n"
     "since the last call.  Call it when fileno() is readable.  When framebusd\n"
     "goes away the bus connects again by itself (process() tries every 250 ms,\n"
     "any request tries once), publishes its streams again, and says so with a\n"
     "ConnectionEvent."},
    {"fileno", (PyCFunction)bus_fileno, METH_NOARGS,
     "fileno() -> int\n--\n\nA descriptor readable when process() has work; the same across "
     "reconnections."},
    {"close", (PyCFunction)bus_close, METH_NOARGS,
     "close()\n--\n\n"
     "Close the bus and every subscriber and publisher made from it.  Frames\n"
     "still alive (or arrays made from them) stay valid; the connection goes\n"
     "once the last of them is gone."},
    {"__enter__", fbpy_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)bus_exit, METH_VARARGS, NULL},
    {NULL},
};

static PyGetSetDef bus_getset[] = {
    {"closed", (getter)bus_get_closed, NULL, "Whether close() was called.", NULL},
    {"path", (getter)bus_get_path, NULL, "The daemon's socket path.", NULL},
    {"connected", (getter)bus_get_connected, NULL,
     "False once closed, and while framebusd is away.", NULL},
    {NULL},
};

static PyType_Slot bus_slots[] = {
    {Py_tp_dealloc, bus_dealloc},
    {Py_tp_methods, bus_methods},
    {Py_tp_getset, bus_getset},
    {Py_tp_repr, bus_repr},
    {Py_tp_doc, "A connection to framebusd; made by framebus.connect()."},
    {0, NULL},
};

static PyType_Spec bus_spec = {
    .name = "framebus.Bus",
    .basicsize = sizeof(struct fbpy_bus),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = bus_slots,
};

int fbpy_bus_init_types(PyObject *m)
{
	fbpy_bus_type = (PyTypeObject *)PyType_FromSpec(&bus_spec);
	fbpy_stream_info_type = PyStructSequence_NewType(&stream_info_desc);
	fbpy_stream_event_type = PyStructSequence_NewType(&stream_event_desc);
	fbpy_connection_event_type = PyStructSequence_NewType(&connection_event_desc);
	if (!fbpy_bus_type || !fbpy_stream_info_type || !fbpy_stream_event_type ||
	    !fbpy_connection_event_type)
		return -1;
	if (PyModule_AddObjectRef(m, "Bus", (PyObject *)fbpy_bus_type) < 0 ||
	    PyModule_AddObjectRef(m, "StreamInfo", (PyObject *)fbpy_stream_info_type) < 0 ||
	    PyModule_AddObjectRef(m, "StreamEvent", (PyObject *)fbpy_stream_event_type) < 0 ||
	    PyModule_AddObjectRef(m, "ConnectionEvent", (PyObject *)fbpy_connection_event_type) < 0)
		return -1;
	return 0;
}

int fbpy_bus_add_method(PyMethodDef *def)
{
	PyObject *method = PyDescr_NewMethod(fbpy_bus_type, def);
	if (!method)
		return -1;
	int r = PyObject_SetAttrString((PyObject *)fbpy_bus_type, def->ml_name, method);
	Py_DECREF(method);
	return r;
}
