/* SPDX-License-Identifier: MIT */
/* Whole-factor shrinks (daemon/shrink.c) against a straightforward
 * reference, pixel by pixel: every factor 2..8 each way, odd widths and
 * heights, padded rows, planar Y'CbCr 4:2:0, 4:2:2 and 4:4:4 in limited and
 * full range and the four packed RGB formats in, the four RGB formats out. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include <libavutil/pixdesc.h>

#include "pixfmt.h"
#include "shrink.h"

#define PAD 13 /* bytes after every row, in and out */

static const uint32_t outputs[] = {FB_FORMAT_BGR24, FB_FORMAT_RGB24, FB_FORMAT_BGRA,
				   FB_FORMAT_RGBA};
/* Output sizes: vector widths and their tails, odd ones. */
static const uint32_t widths[] = {1, 3, 4, 5, 8, 13, 17, 37};
static const uint32_t heights[] = {1, 3};

static uint32_t rng_state = 12345;

static uint8_t next_byte(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return (uint8_t)(rng_state >> 16);
}

/* Where R, G, B and A sit in a pixel of format f (-1: no alpha), and its
 * size. */
static void channels(uint32_t f, int ch[4], int *size)
{
	const bool bgr = f == FB_FORMAT_BGR24 || f == FB_FORMAT_BGRA;
	ch[0] = bgr ? 2 : 0;
	ch[1] = 1;
	ch[2] = bgr ? 0 : 2;
	ch[3] = f == FB_FORMAT_BGRA || f == FB_FORMAT_RGBA ? 3 : -1;
	*size = ch[3] < 0 ? 3 : 4;
}

/* An input picture of w x h in format fmt, random bytes, rows padded. */
static AVFrame *picture(int fmt, int w, int h)
{
	const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(fmt);
	AVFrame *f = av_frame_alloc();
	cr_assert(f && d);
	f->format = fmt;
	f->width = w;
	f->height = h;
	for (int p = 0; p < 3; p++) {
		int pw = w, ph = h;
		if (d->flags & AV_PIX_FMT_FLAG_RGB) {
			if (p > 0)
				break;
			pw = w * d->comp[0].step;
		} else if (p > 0) {
			pw = -((-w) >> d->log2_chroma_w);
			ph = -((-h) >> d->log2_chroma_h);
		}
		f->linesize[p] = pw + PAD;
		f->buf[p] = av_buffer_alloc((size_t)f->linesize[p] * (size_t)ph);
		cr_assert(f->buf[p]);
		f->data[p] = f->buf[p]->data;
		for (size_t i = 0; i < f->buf[p]->size; i++)
			f->data[p][i] = next_byte();
	}
	return f;
}

/* BT.601 as libswscale converts, x 65536: the integers shrink.c divides by
 * the pixels of a block. */
static void coefficients(bool full, int32_t k[5])
{
	static const int32_t limited[] = {76309, 104597, 132201, 25675, 53279};
	static const int32_t jpeg[] = {65536, 91881, 116130, 22554, 46802};
	memcpy(k, full ? jpeg : limited, sizeof(jpeg));
}

static uint8_t clip(int32_t v)
{
	return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* The pixel at ox, oy of in shrunk by fx, fy into RGBA, as shrink.c
 * defines it: from Y'CbCr, the sums of each plane's samples over the block
 * (a chroma sample for each pixel it covers) converted with the
 * coefficients divided by the block's pixels; from RGB, each channel's
 * rounded mean.  Also the same from the block's mean in floating point. */
static void reference(const AVFrame *in, uint32_t fx, uint32_t fy, uint32_t ox, uint32_t oy,
		      uint8_t ret[4], double ret_exact[3])
{
	const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(in->format);
	const int32_t n = (int32_t)(fx * fy);
	int32_t sum[4] = {0};
	for (uint32_t y = oy * fy; y < (oy + 1) * fy; y++)
		for (uint32_t x = ox * fx; x < (ox + 1) * fx; x++) {
			if (d->flags & AV_PIX_FMT_FLAG_RGB) {
				const uint8_t *px = in->data[0] + y * (uint32_t)in->linesize[0] +
						    x * (uint32_t)d->comp[0].step;
				for (int c = 0; c < 4; c++)
					sum[c] +=
					    c < d->nb_components ? px[d->comp[c].offset] : 255;
				continue;
			}
			const uint32_t cx = x >> d->log2_chroma_w, cy = y >> d->log2_chroma_h;
			sum[0] += in->data[0][y * (uint32_t)in->linesize[0] + x];
			sum[1] += in->data[1][cy * (uint32_t)in->linesize[1] + cx];
			sum[2] += in->data[2][cy * (uint32_t)in->linesize[2] + cx];
		}
	if (d->flags & AV_PIX_FMT_FLAG_RGB) {
		for (int c = 0; c < 4; c++) {
			ret[c] = (uint8_t)((sum[c] + n / 2) / n);
			if (c < 3)
				ret_exact[c] = (double)sum[c] / n;
		}
		return;
	}
	const bool full = in->format == AV_PIX_FMT_YUVJ420P || in->format == AV_PIX_FMT_YUVJ422P ||
			  in->format == AV_PIX_FMT_YUVJ444P;
	int32_t k[5];
	coefficients(full, k);
	const int32_t y = k[0] / n * (sum[0] - (full ? 0 : 16 * n)) + (1 << 15);
	const int32_t u = sum[1] - 128 * n, v = sum[2] - 128 * n;
	ret[0] = clip((y + k[1] / n * v) >> 16);
	ret[1] = clip((y - k[3] / n * u - k[4] / n * v) >> 16);
	ret[2] = clip((y + k[2] / n * u) >> 16);
	ret[3] = 255;
	/* BT.601: Kr 0.299, Kb 0.114; limited range scaled from 219 and 224
	 * steps. */
	const double ky = full ? 1 : 255 / 219.0, kc = full ? 1 : 255 / 224.0;
	const double my = ky * ((double)sum[0] / n - (full ? 0 : 16)), mu = kc * u / n,
		     mv = kc * v / n;
	ret_exact[0] = my + 1.402 * mv;
	ret_exact[1] = my - 0.114 * 1.772 / 0.587 * mu - 0.299 * 1.402 / 0.587 * mv;
	ret_exact[2] = my + 1.772 * mu;
}

/* Shrink in by fx, fy into every output format, and compare each pixel with
 * the reference; the bytes after each row stay untouched. */
static void check(const AVFrame *in, uint32_t fx, uint32_t fy)
{
	const uint32_t w = (uint32_t)in->width / fx, h = (uint32_t)in->height / fy;
	for (size_t o = 0; o < sizeof(outputs) / sizeof(outputs[0]); o++) {
		struct fb_layout l = {.width = w, .height = h, .format = outputs[o]};
		int ch[4], size;
		channels(outputs[o], ch, &size);
		const uint32_t stride = w * (uint32_t)size + PAD;
		uint8_t *slot = malloc((size_t)stride * h);
		cr_assert(slot);
		memset(slot, 0xa5, (size_t)stride * h);
		struct fb_frame out = {.data = {slot}, .stride = {stride}};
		cr_assert(fbd_shrink(in, &out, &l), "%s %dx%d by %ux%u to %s",
			  av_get_pix_fmt_name(in->format), in->width, in->height, fx, fy,
			  fb_format_name(outputs[o]));
		for (uint32_t y = 0; y < h; y++) {
			for (uint32_t x = 0; x < w; x++) {
				uint8_t want[4];
				double exact[3];
				reference(in, fx, fy, x, y, want, exact);
				const uint8_t *px = slot + y * stride + x * (uint32_t)size;
				for (int c = 0; c < 4; c++) {
					if (ch[c] < 0)
						continue;
					cr_assert_eq(px[ch[c]], want[c],
						     "%s %dx%d by %ux%u to %s: pixel %u,%u channel "
						     "%d is %u, not %u",
						     av_get_pix_fmt_name(in->format), in->width,
						     in->height, fx, fy, fb_format_name(outputs[o]),
						     x, y, c, px[ch[c]], want[c]);
					if (c < 3) /* the reference is the mean's, rounded */
						cr_assert_leq(
						    fabs(px[ch[c]] - fmin(fmax(exact[c], 0), 255)),
						    1.0);
				}
			}
			for (uint32_t i = w * (uint32_t)size; i < stride; i++)
				cr_assert_eq(slot[y * stride + i], 0xa5, "written past the row");
		}
		free(slot);
	}
}

static void every_factor(int fmt)
{
	for (uint32_t fy = 2; fy <= 8; fy++)
		for (uint32_t fx = 2; fx <= 8; fx++)
			for (size_t wi = 0; wi < sizeof(widths) / sizeof(widths[0]); wi++)
				for (size_t hi = 0; hi < sizeof(heights) / sizeof(heights[0]);
				     hi++) {
					AVFrame *in = picture(fmt, (int)(widths[wi] * fx),
							      (int)(heights[hi] * fy));
					check(in, fx, fy);
					av_frame_free(&in);
				}
}

Test(shrink, yuv420p_limited_range)
{
	every_factor(AV_PIX_FMT_YUV420P);
}

Test(shrink, yuvj420p_full_range)
{
	every_factor(AV_PIX_FMT_YUVJ420P);
}

Test(shrink, yuv422p_and_yuvj422p)
{
	every_factor(AV_PIX_FMT_YUV422P);
	every_factor(AV_PIX_FMT_YUVJ422P);
}

Test(shrink, yuv444p_and_yuvj444p)
{
	every_factor(AV_PIX_FMT_YUV444P);
	every_factor(AV_PIX_FMT_YUVJ444P);
}

Test(shrink, packed_rgb_reordered)
{
	every_factor(AV_PIX_FMT_BGR24);
	every_factor(AV_PIX_FMT_RGB24);
	every_factor(AV_PIX_FMT_BGRA);
	every_factor(AV_PIX_FMT_RGBA);
}

/* A wide picture: the full rows the vector loops take, 1080p's factor 3. */
Test(shrink, a_1080p_picture_by_3)
{
	AVFrame *in = picture(AV_PIX_FMT_YUV420P, 1920, 1080);
	check(in, 3, 3);
	av_frame_free(&in);
}

/* What is not a whole factor from 2 to 8, or a format it does not read, is
 * left to libswscale: nothing written. */
Test(shrink, other_cases_are_refused_untouched)
{
	static const struct {
		int fmt, w, h;
		uint32_t ow, oh, of;
	} cases[] = {
	    {AV_PIX_FMT_YUV420P, 320, 240, 320, 240, FB_FORMAT_RGB24}, /* factor 1 */
	    {AV_PIX_FMT_YUV420P, 300, 240, 200, 120, FB_FORMAT_RGB24}, /* 1.5 */
	    {AV_PIX_FMT_YUV420P, 360, 180, 40, 20, FB_FORMAT_RGB24},   /* 9 */
	    {AV_PIX_FMT_YUV420P, 320, 240, 160, 120, FB_FORMAT_GRAY8}, /* not RGB out */
	    {AV_PIX_FMT_NV12, 320, 240, 160, 120, FB_FORMAT_RGB24},    /* not planar */
	    {AV_PIX_FMT_GRAY8, 320, 240, 160, 120, FB_FORMAT_RGB24},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		AVFrame *in = av_frame_alloc();
		static uint8_t plane[3][360 * 240 * 3], slot[320 * 240 * 4];
		cr_assert(in);
		in->format = cases[i].fmt;
		in->width = cases[i].w;
		in->height = cases[i].h;
		for (int p = 0; p < 3; p++) {
			in->data[p] = plane[p];
			in->linesize[p] = cases[i].w * 3;
		}
		memset(slot, 0xa5, sizeof(slot));
		struct fb_layout l = {
		    .width = cases[i].ow, .height = cases[i].oh, .format = cases[i].of};
		struct fb_frame out = {.data = {slot}, .stride = {cases[i].ow * 4}};
		cr_assert_not(fbd_shrink(in, &out, &l), "case %zu taken", i);
		for (size_t j = 0; j < sizeof(slot); j++)
			cr_assert_eq(slot[j], 0xa5, "case %zu wrote its slot", i);
		av_frame_free(&in);
	}
}
