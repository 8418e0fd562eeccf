/* SPDX-License-Identifier: MIT */
/*
 * Private header of framebus._framebus, the C extension behind the Python
 * package.
 *
 * Layers.  Each file uses only the ones below it:
 *
 *     module.c                  the module: its exceptions, its types, init;
 *                               the loop thread's slice (frames_async)
 *        |
 *     subscriber.c  publisher.c Subscriber and Frame; Publisher and OutFrame
 *        |             |        (each gives Bus its method: subscribe, publish)
 *     bus.c (bus.h)             Bus: the client, its lock, its children
 *        |
 *     common.c (common.h)       errors as exceptions (one table), the sliced
 *                               wait of the blocking calls, time, pixels as
 *                               buffers and numpy arrays
 *     dlpack.c (dlpack.h)       pixels as DLPack capsules (declared in
 *                               common.h)
 *
 * This header is the top's: what module.c needs from the files below it.
 * The object layouts stay in the files they belong to.
 *
 * Lifetimes.  Every numpy array made from a frame points into ring memory, so
 * that memory must outlive the array.  Python references do that work: an
 * array holds its frame (the buffer exporter; a DLPack tensor holds a buffer
 * of it until its deleter runs), a frame holds its subscriber or
 * publisher, and that holds its bus.  close() only marks an object closed;
 * the C resources go once nothing alive can still reach them:
 * - a subscriber frame gives its slot back once it was released (or died)
 *   and no buffer export of the slot (array, memoryview, DLPack tensor) is
 *   left: its ring's slot table counts them, whichever object exported them;
 * - a subscriber unsubscribes once closed with no frame holding a slot of
 *   its ring;
 * - after framebusd restarted, a subscriber goes on with a new ring at once;
 *   the old one, retired, is unmapped once no frame holds a slot of it;
 * - a publisher unpublishes once closed with no frame being written and no
 *   array left over a frame it wrote;
 * - the bus disconnects once closed with no subscriber or publisher left,
 *   because disconnecting would make the daemon hand their slots back.
 */
#ifndef FBPY_H
#define FBPY_H

#include "bus.h"

/* Make the types, add them to the module, and give Bus its method. */
int fbpy_subscriber_init_types(PyObject *module);
int fbpy_publisher_init_types(PyObject *module);

/* subscriber.c, for publisher.c's OutFrame.made_from(): the frame a Frame
 * still holds; NULL with TypeError (not a Frame) or ValueError (released). */
const struct fb_frame *fbpy_frame_held(PyObject *obj);

#endif
