/* SPDX-License-Identifier: MIT */
/* Shrinking 8-bit pictures to packed RGB by whole factors: each output
 * pixel the mean of its fx x fy block (area filtering, what libswscale's
 * SWS_AREA does at such factors).  A derived stream's usual case (a 1080p
 * camera to 640x360 rgb24) costs libswscale a conversion of every input row
 * to its internal planar format before it scales; this reads each input
 * byte once.  Two inputs: packed RGB (a parent's ring), channels reordered
 * on the way, and planar Y'CbCr (its decoder's picture), averaged as such
 * and converted once per output pixel as libswscale converts the parent's
 * picture (BT.601, limited range but for the yuvj formats, chroma
 * repeated over the pixels it covers): averaging is linear, so the result
 * is the mean of the parent's RGB pixels but where they clip. */
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

/* dst[i] = src[i] (first) or dst[i] += src[i], for i < n; inlined with
 * first constant. */
static inline __attribute__((always_inline)) void sum_bytes(uint16_t *dst, const uint8_t *src,
							    uint32_t n, const bool first)
{
	uint32_t i = 0;
	for (; i + 16 <= n; i += 16) {
		u8x16 b;
		u16x16 d = {0};
		memcpy(&b, src + i, sizeof(b));
		if (!first)
			memcpy(&d, dst + i, sizeof(d));
		d += __builtin_convertvector(b, u16x16);
		memcpy(dst + i, &d, sizeof(d));
	}
	for (; i < n; i++)
		dst[i] = (uint16_t)((first ? 0 : dst[i]) + src[i]);
}

/* The column sums of rows rows of n bytes each, a row at a time (each read
 * straight through: the hardware prefetches it); rows may repeat (a 4:2:0
 * chroma row under two luma rows). */
static void sum_rows(uint16_t *dst, const uint8_t *const *row, uint32_t rows, uint32_t n)
{
	sum_bytes(dst, row[0], n, true);
	for (uint32_t j = 1; j < rows; j++)
		sum_bytes(dst, row[j], n, false);
}

/* The rows of a block: fy rows of a plane from row r on, stride bytes apart,
 * each of a plane subsampled down by sh as the one it covers. */
static void block_rows(const uint8_t **ret, const uint8_t *plane, size_t stride, uint32_t r,
		       uint32_t fy, uint32_t sh)
{
	for (uint32_t j = 0; j < fy; j++)
		ret[j] = plane + (size_t)((r + j) >> sh) * stride;
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

/* Planar 8-bit Y'CbCr: its chroma subsampling (log2, across and down) and
 * whether it is full range (the yuvj formats: libswscale's rule). */
static bool planar_yuv(int format, uint32_t *ret_sw, uint32_t *ret_sh, bool *ret_full)
{
	switch (format) {
	case AV_PIX_FMT_YUV420P:
	case AV_PIX_FMT_YUVJ420P:
		*ret_sw = *ret_sh = 1;
		break;
	case AV_PIX_FMT_YUV422P:
	case AV_PIX_FMT_YUVJ422P:
		*ret_sw = 1;
		*ret_sh = 0;
		break;
	case AV_PIX_FMT_YUV444P:
	case AV_PIX_FMT_YUVJ444P:
		*ret_sw = *ret_sh = 0;
		break;
	default:
		return false;
	}
	*ret_full = format == AV_PIX_FMT_YUVJ420P || format == AV_PIX_FMT_YUVJ422P ||
		    format == AV_PIX_FMT_YUVJ444P;
	return true;
}

/* BT.601 Y'CbCr to RGB, x 65536 (libswscale's SWS_CS_ITU601 for limited
 * range), divided by the pixels a block sums: applied to sums less their
 * offsets.  Each fits 16 bits (blocks of 4 pixels or more) but Cb's for
 * blue: that is 2 x cbu_half, plus a sum itself when it is odd. */
struct yuv_to_rgb {
	int16_t y, crv, cbu_half, cgu, cgv;
	int16_t cbu_odd;      /* -1 (all bits) when cbu is odd, else 0 */
	int32_t y_off, c_off; /* 16 and 128 per summed pixel */
};

/* n output pixels' sums less their offsets from their columns' sums at y,
 * u and v; inlined with n, fx and sw constant. */
static inline __attribute__((always_inline)) void sum_group(int16_t *hy, int16_t *hu, int16_t *hv,
							    const uint16_t *y, const uint16_t *u,
							    const uint16_t *v, const uint32_t n,
							    const struct yuv_to_rgb *k,
							    const uint32_t fx, const uint32_t sw)
{
	const int32_t y_off = k->y_off, c_off = k->c_off;
#pragma GCC unroll 2
	for (uint32_t j = 0; j < n; j++) {
		int32_t ys = 0, us = 0, vs = 0;
#pragma GCC unroll 8
		for (uint32_t i = j * fx; i < (j + 1) * fx; i++) {
			ys += y[i];
			us += u[i >> sw];
			vs += v[i >> sw];
		}
		hy[j] = (int16_t)(ys - y_off);
		hu[j] = (int16_t)(us - c_off);
		hv[j] = (int16_t)(vs - c_off);
	}
}

/* Each output pixel's sums of Y, Cb and Cr less their offsets (16 bits:
 * at most 64 x 255 and no less than -64 x 128) from rows of column sums
 * (chroma at its own width, 1 << sw input pixels a sample), 1 << sw pixels
 * at a time: their chroma samples at offsets the compiler knows, and a
 * sample two of them share read once; inlined with fx and sw constant. */
static inline __attribute__((always_inline)) void sum_across(int16_t *hy, int16_t *hu, int16_t *hv,
							     const uint16_t *sy, const uint16_t *su,
							     const uint16_t *sv, uint32_t width,
							     const struct yuv_to_rgb *k,
							     const uint32_t fx, const uint32_t sw)
{
	const uint32_t group = 1u << sw;
	uint32_t x = 0;
	for (; x + group <= width; x += group)
		sum_group(hy + x, hu + x, hv + x, sy + x * fx, su + (x * fx >> sw),
			  sv + (x * fx >> sw), group, k, fx, sw);
	if (x < width) /* 4:2:0 or 4:2:2 to an odd width: one left */
		sum_group(hy + x, hu + x, hv + x, sy + x * fx, su + (x * fx >> sw),
			  sv + (x * fx >> sw), 1, k, fx, sw);
	for (x = width; x % 8; x++) /* to_rgb()'s last eight */
		hy[x] = hu[x] = hv[x] = 0;
}

typedef uint64_t u64x2 __attribute__((vector_size(16)));

/* Clamped to 0..255 without a branch once vectorized (compares and masks;
 * else conditional moves): a camera's noise around saturated colours would
 * mispredict one at every other pixel. */
static inline __attribute__((always_inline)) int32_t clip8(int32_t v)
{
	return v < 0 ? 0 : v > 255 ? 255 : v;
}

/* Output pixels from their sums (width rounded up to 8 of them), eight at
 * a time, as a plain loop of eight that compilers vectorize (16 x 16-bit
 * products: SSE2's pmullw and pmulhw, NEON's smull), each pixel's bytes put
 * together in a 32-bit word (R, G, B and A at byte r, g, b and a:
 * little-endian, the word as the pixel's bytes in memory); stored four
 * bytes a pixel, or three (the words' fourth bytes squeezed out in 64-bit
 * halves, each stored 8 bytes wide, the second over the first's two spare
 * bytes).  The pixels whose wide stores would pass the row's end, and
 * every pixel on a big-endian host, are stored a byte at a time.  Inlined
 * with the output's channels constant. */
static inline __attribute__((always_inline)) void to_rgb(uint8_t *o, const int16_t *hy,
							 const int16_t *hu, const int16_t *hv,
							 uint32_t width, const struct yuv_to_rgb *k,
							 const int r, const int g, const int b,
							 const int a, const int size)
{
	const bool little = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
	/* Pixels below wide are stored wide (3-byte pixels: four of them
	 * store 2 bytes past themselves, over the next pixel's). */
	const uint32_t wide = !little ? 0 : size == 4 ? width : width - 1;
	const int32_t ky = k->y, crv = k->crv, cgu = k->cgu, cgv = k->cgv, cbh = k->cbu_half;
	const int16_t odd = k->cbu_odd;
	for (uint32_t x0 = 0; x0 < width; x0 += 8) {
		const int16_t *y8 = hy + x0, *u8 = hu + x0, *v8 = hv + x0;
		uint32_t p[8];
		for (int i = 0; i < 8; i++) {
			const int32_t y = y8[i] * ky + (1 << 15);
			const int32_t cr = clip8((y + v8[i] * crv) >> 16);
			const int32_t cg = clip8((y - u8[i] * cgu - v8[i] * cgv) >> 16);
			const int32_t cb = clip8((y + 2 * (u8[i] * cbh) + (u8[i] & odd)) >> 16);
			p[i] = (uint32_t)cr << (8 * r) | (uint32_t)cg << (8 * g) |
			       (uint32_t)cb << (8 * b) | (a >= 0 ? 255u << (8 * a) : 0);
		}
		for (uint32_t h = 0, x = x0; h < 8 && x < width; h += 4, x += 4) {
			if (x + 4 <= wide) {
				if (size == 4) {
					memcpy(o + x * 4, p + h, 16);
				} else {
					u64x2 q;
					memcpy(&q, p + h, sizeof(q));
					q = (q & 0xffffff) | ((q >> 8) & 0xffffff000000);
					const uint64_t lo = q[0], hi = q[1];
					memcpy(o + x * 3, &lo, sizeof(lo));
					memcpy(o + x * 3 + 6, &hi, sizeof(hi));
				}
				continue;
			}
			for (uint32_t i = 0; i < 4 && x + i < width; i++) {
				uint8_t *px = o + (x + i) * (uint32_t)size;
				const uint32_t w = p[h + i];
				px[r] = (uint8_t)(w >> (8 * r));
				px[g] = (uint8_t)(w >> (8 * g));
				px[b] = (uint8_t)(w >> (8 * b));
				if (a >= 0)
					px[a] = 255;
			}
		}
	}
}

static bool shrink_yuv(const AVFrame *in, struct fb_frame *out, const struct fb_layout *l,
		       uint32_t fx, uint32_t fy)
{
	uint32_t sw, sh;
	bool full;
	if (!planar_yuv(in->format, &sw, &sh, &full))
		return false;
	const int32_t n = (int32_t)(fx * fy);
	/* y, crv, cbu, cgu, cgv x 65536, then divided by n. */
	static const int32_t limited[5] = {76309, 104597, 132201, 25675, 53279},
			     jpeg[5] = {65536, 91881, 116130, 22554, 46802};
	const int32_t *c = full ? jpeg : limited;
	const struct yuv_to_rgb k = {
	    .y = (int16_t)(c[0] / n),
	    .crv = (int16_t)(c[1] / n),
	    .cbu_half = (int16_t)(c[2] / n / 2),
	    .cgu = (int16_t)(c[3] / n),
	    .cgv = (int16_t)(c[4] / n),
	    .cbu_odd = (int16_t)(c[2] / n % 2 ? -1 : 0),
	    .y_off = full ? 0 : 16 * n,
	    .c_off = 128 * n,
	};
	const uint32_t width = (uint32_t)in->width, cwidth = (width + (1u << sw) - 1) >> sw;
	uint16_t sy[FB_MAX_DIMENSION], su[FB_MAX_DIMENSION], sv[FB_MAX_DIMENSION];
	/* Each output pixel's sums, a row at a time. */
	int16_t hy[FB_MAX_DIMENSION / 2 + 8], hu[FB_MAX_DIMENSION / 2 + 8],
	    hv[FB_MAX_DIMENSION / 2 + 8];
	const uint8_t *rows[MAX_FACTOR];

	for (uint32_t y = 0; y < l->height; y++) {
		const uint32_t r = y * fy;
		block_rows(rows, in->data[0], (size_t)in->linesize[0], r, fy, 0);
		sum_rows(sy, rows, fy, width);
		/* Chroma rows over the luma rows each covers (a 4:2:0 row
		 * under two). */
		block_rows(rows, in->data[1], (size_t)in->linesize[1], r, fy, sh);
		sum_rows(su, rows, fy, cwidth);
		block_rows(rows, in->data[2], (size_t)in->linesize[2], r, fy, sh);
		sum_rows(sv, rows, fy, cwidth);
		switch (fx * 2 + sw) {
#define ACROSS(f)                                                                                  \
	case f * 2:                                                                                \
		sum_across(hy, hu, hv, sy, su, sv, l->width, &k, f, 0);                            \
		break;                                                                             \
	case f * 2 + 1:                                                                            \
		sum_across(hy, hu, hv, sy, su, sv, l->width, &k, f, 1);                            \
		break
			ACROSS(2);
			ACROSS(3);
			ACROSS(4);
			ACROSS(5);
			ACROSS(6);
			ACROSS(7);
			ACROSS(8);
#undef ACROSS
		}
		uint8_t *o = out->data[0] + (size_t)y * out->stride[0];
		switch (l->format) {
		case FB_FORMAT_BGR24:
			to_rgb(o, hy, hu, hv, l->width, &k, 2, 1, 0, -1, 3);
			break;
		case FB_FORMAT_RGB24:
			to_rgb(o, hy, hu, hv, l->width, &k, 0, 1, 2, -1, 3);
			break;
		case FB_FORMAT_BGRA:
			to_rgb(o, hy, hu, hv, l->width, &k, 2, 1, 0, 3, 4);
			break;
		default: /* rgba */
			to_rgb(o, hy, hu, hv, l->width, &k, 0, 1, 2, 3, 4);
			break;
		}
	}
	return true;
}

bool fbd_shrink(const AVFrame *in, struct fb_frame *out, const struct fb_layout *l)
{
	struct channels from = {0}, to;

	if (!channels_of(l->format, &to) || in->width <= 0 || in->height <= 0 ||
	    in->width > FB_MAX_DIMENSION || (uint32_t)in->width % l->width ||
	    (uint32_t)in->height % l->height)
		return false;
	uint32_t fx = (uint32_t)in->width / l->width, fy = (uint32_t)in->height / l->height;
	if (fx < 2 || fy < 2 || fx > MAX_FACTOR || fy > MAX_FACTOR)
		return false;
	for (uint32_t f = FB_FORMAT_BGR24; f <= FB_FORMAT_RGBA; f++)
		if (fb_av_pixel_format(f) == in->format)
			channels_of(f, &from);
	if (!from.size)
		return shrink_yuv(in, out, l, fx, fy);
	const uint32_t row_bytes = (uint32_t)in->width * (uint32_t)from.size;
	/* Each output channel from which input byte of a pixel (alpha: 255
	 * when the input has none). */
	const int src[4] = {from.r, from.g, from.b, from.a};
	/* A block's column sums, a byte each: at most 8 x 255, a uint16. */
	uint16_t column[4 * FB_MAX_DIMENSION];
	const uint8_t *rows[MAX_FACTOR];

	for (uint32_t y = 0; y < l->height; y++) {
		block_rows(rows, in->data[0], (size_t)in->linesize[0], y * fy, fy, 0);
		sum_rows(column, rows, fy, row_bytes);
		uint8_t *o = out->data[0] + (size_t)y * out->stride[0];
		if (from.size == 3)
			across(o, column, l->width, fx, &to, src, fx * fy, 3);
		else
			across(o, column, l->width, fx, &to, src, fx * fy, 4);
	}
	return true;
}
