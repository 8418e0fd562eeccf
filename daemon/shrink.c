/* SPDX-License-Identifier: MIT */
/* Shrinking packed 8-bit pictures by whole factors: each output pixel the
 * mean of its fx x fy block, channels reordered on the way (area filtering,
 * what libswscale's SWS_AREA does at such factors).  A derived stream's
 * usual case (1920x1080 bgr24 -> 640x360 rgb24) costs libswscale a
 * conversion of every input row to its internal planar format before it
 * scales; this reads each input byte once. */
#include <string.h>

#include "pixfmt.h"
#include "shrink.h"

/* Byte offsets of R, G, B and A in a pixel; -1: none. */
struct channels {
	int r, g, b, a;
	int size;
};

static bool channels_of(uint32_t format, struct channels *ret)
{
	switch (format) {
	case FB_FORMAT_BGR24:
		*ret = (struct channels){2, 1, 0, -1, 3};
		return true;
	case FB_FORMAT_RGB24:
		*ret = (struct channels){0, 1, 2, -1, 3};
		return true;
	case FB_FORMAT_BGRA:
		*ret = (struct channels){2, 1, 0, 3, 4};
		return true;
	case FB_FORMAT_RGBA:
		*ret = (struct channels){0, 1, 2, 3, 4};
		return true;
	default:
		return false;
	}
}

#define MAX_FACTOR 8
/* 16 bytes added at a time, as GCC's and clang's vector types (SSE2 and
 * up on x86, NEON on ARM): GCC's -O2 vectorizer does not take this loop. */
typedef uint8_t u8x16 __attribute__((vector_size(16)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));

/* dst[i] += src[i] for i < n. */
static void add_bytes(uint16_t *dst, const uint8_t *src, uint32_t n)
{
	uint32_t i = 0;
	for (; i + 16 <= n; i += 16) {
		u8x16 b;
		u16x16 d;
		memcpy(&b, src + i, sizeof(b));
		memcpy(&d, dst + i, sizeof(d));
		d += __builtin_convertvector(b, u16x16);
		memcpy(dst + i, &d, sizeof(d));
	}
	for (; i < n; i++)
		dst[i] += src[i];
}

/* One output row from a row of column sums: each pixel the mean of fx of
 * them, channels reordered; inlined with size (bytes a pixel in) constant. */
static inline __attribute__((always_inline)) void
across(uint8_t *o, const uint16_t *column, uint32_t width, uint32_t fx, const struct channels *to,
       const int src[4], uint32_t n, const int size)
{
	const int dst[4] = {to->r, to->g, to->b, to->a};
	/* x / n as (x * inv) >> 22: exact for x < 2^16 and n <= 64, and no
	 * division per pixel. */
	const uint32_t inv = ((1u << 22) + n - 1) / n;
	for (uint32_t x = 0; x < width; x++, o += to->size, column += fx * (uint32_t)size) {
		uint32_t sum[4] = {0};
		for (uint32_t i = 0; i < fx; i++)
			for (int c = 0; c < size; c++)
				sum[c] += column[i * (uint32_t)size + (uint32_t)c];
		for (int c = 0; c < 4; c++)
			if (dst[c] >= 0)
				o[dst[c]] = src[c] < 0
						? 255
						: (uint8_t)(((sum[src[c]] + n / 2) * inv) >> 22);
	}
}

bool fbd_shrink(const AVFrame *in, struct fb_frame *out, const struct fb_layout *l)
{
	struct channels from = {0}, to;

	for (uint32_t f = FB_FORMAT_BGR24; f <= FB_FORMAT_RGBA; f++)
		if (fb_av_pixel_format(f) == in->format)
			channels_of(f, &from);
	if (!from.size || !channels_of(l->format, &to) || in->width <= 0 || in->height <= 0 ||
	    (uint32_t)in->width % l->width || (uint32_t)in->height % l->height)
		return false;
	uint32_t fx = (uint32_t)in->width / l->width, fy = (uint32_t)in->height / l->height;
	if (fx < 2 || fy < 2 || fx > MAX_FACTOR || fy > MAX_FACTOR)
		return false;
	const uint32_t row_bytes = (uint32_t)in->width * (uint32_t)from.size;
	/* Each output channel from which input byte of a pixel (alpha: 255
	 * when the input has none). */
	const int src[4] = {from.r, from.g, from.b, from.a};
	/* A block's column sums, a byte each: at most 8 x 255, a uint16. */
	uint16_t column[4 * FB_MAX_DIMENSION];

	for (uint32_t y = 0; y < l->height; y++) {
		const uint8_t *row = in->data[0] + (size_t)y * fy * (size_t)in->linesize[0];
		memset(column, 0, row_bytes * sizeof(column[0]));
		for (uint32_t j = 0; j < fy; j++, row += in->linesize[0])
			add_bytes(column, row, row_bytes);
		uint8_t *o = out->data[0] + (size_t)y * out->stride[0];
		if (from.size == 3)
			across(o, column, l->width, fx, &to, src, fx * fy, 3);
		else
			across(o, column, l->width, fx, &to, src, fx * fy, 4);
	}
	return true;
}
