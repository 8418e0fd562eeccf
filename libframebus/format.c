/* SPDX-License-Identifier: MIT */
/* Pixel formats and frame layout. */
#include <errno.h>
#include <string.h>

#include "ring-private.h"

#define STRIDE_ALIGN 64u

struct format_desc {
	const char *name;
	uint32_t bytes_per_pixel; /* of the first plane */
	uint32_t n_planes;
	bool subsampled; /* chroma at half width and half height */
	bool even_width; /* chroma at half width only (packed 4:2:2) */
};

static const struct format_desc formats[] = {
    [FB_FORMAT_GRAY8] = {"gray8", 1, 1, false},
    [FB_FORMAT_BGR24] = {"bgr24", 3, 1, false},
    [FB_FORMAT_RGB24] = {"rgb24", 3, 1, false},
    [FB_FORMAT_BGRA] = {"bgra", 4, 1, false},
    [FB_FORMAT_NV12] = {"nv12", 1, 2, true},
    [FB_FORMAT_YUV420P] = {"yuv420p", 1, 3, true},
    [FB_FORMAT_RESULTS] = {"results", 0, 0, false},
    [FB_FORMAT_YUYV422] = {"yuyv422", 2, 1, false, true},
    [FB_FORMAT_GRAY16] = {"gray16", 2, 1, false},
    [FB_FORMAT_RGBA] = {"rgba", 4, 1, false},
};

static const struct format_desc *format_lookup(uint32_t format)
{
	if (format >= sizeof(formats) / sizeof(formats[0]) || !formats[format].name)
		return NULL;
	return &formats[format];
}

static uint32_t align_up32(uint32_t v, uint32_t a)
{
	return (v + a - 1) / a * a;
}

FB_EXPORT const char *fb_format_name(uint32_t format)
{
	const struct format_desc *d = format_lookup(format);
	return d ? d->name : NULL;
}

FB_EXPORT int fb_format_from_name(const char *name)
{
	if (!name)
		return -EINVAL;
	for (uint32_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++)
		if (formats[f].name && strcmp(formats[f].name, name) == 0)
			return (int)f;
	return -EINVAL;
}

FB_EXPORT int fb_layout_compute(uint32_t width, uint32_t height, uint32_t format,
				struct fb_layout *ret_layout)
{
	const struct format_desc *d = format_lookup(format);
	struct fb_layout l = {0};

	if (!d || !ret_layout)
		return -EINVAL;
	if (format == FB_FORMAT_RESULTS) {
		if (width || height)
			return -EINVAL;
		*ret_layout = (struct fb_layout){.format = format};
		return 0;
	}
	if (width == 0 || height == 0 || width > FB_MAX_DIMENSION || height > FB_MAX_DIMENSION)
		return -EINVAL;
	if ((d->subsampled && (width % 2 || height % 2)) || (d->even_width && width % 2))
		return -EINVAL;

	l.width = width;
	l.height = height;
	l.format = format;
	l.n_planes = d->n_planes;
	l.stride[0] = align_up32(width * d->bytes_per_pixel, STRIDE_ALIGN);
	l.plane_height[0] = height;
	if (format == FB_FORMAT_NV12) {
		l.stride[1] = l.stride[0]; /* width/2 U,V pairs = width bytes */
		l.plane_height[1] = height / 2;
	} else if (format == FB_FORMAT_YUV420P) {
		/* Chroma strides exactly half the luma stride, as I420 readers
		 * that take one row step for all three planes (OpenCV's
		 * (h*3/2, w) image) expect. */
		l.stride[0] = align_up32(width, 2 * STRIDE_ALIGN);
		l.stride[1] = l.stride[2] = l.stride[0] / 2;
		l.plane_height[1] = l.plane_height[2] = height / 2;
	}

	/* Planes follow each other; each starts on a stride-aligned offset
	 * because every stride and so every plane size is a multiple of 64. */
	uint64_t off = 0;
	for (uint32_t p = 0; p < l.n_planes; p++) {
		l.offset[p] = off;
		off += (uint64_t)l.stride[p] * l.plane_height[p];
	}
	l.frame_size = off;
	*ret_layout = l;
	return 0;
}
