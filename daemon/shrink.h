/* SPDX-License-Identifier: MIT */
/* Shrinking packed RGB pictures by whole factors (shrink.c). */
#ifndef FBD_SHRINK_H
#define FBD_SHRINK_H

#include <stdbool.h>
#include <libavutil/frame.h>

#include "framebus/framebus.h"

/* Shrink picture in (bgr24, rgb24, bgra or rgba) into out, a slot of layout
 * l (one of the same four formats) by averaging blocks, when l's size
 * divides in's by 2 to 8 each way.  Returns false, having written nothing,
 * for any other case: libswscale's then. */
bool fbd_shrink(const AVFrame *in, struct fb_frame *out, const struct fb_layout *l);

#endif
