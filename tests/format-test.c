/* SPDX-License-Identifier: MIT */
/* Layout math for every pixel format (libframebus/format.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "framebus/framebus.h"

struct expect {
	uint32_t format;
	uint32_t width, height;
	uint32_t n_planes;
	uint32_t stride[3];
	uint32_t rows[3];
};

/* Strides are the plane's row bytes rounded up to 64; planes follow each other. */
static const struct expect cases[] = {
    {FB_FORMAT_GRAY8, 1920, 1080, 1, {1920}, {1080}},
    {FB_FORMAT_GRAY8, 641, 481, 1, {704}, {481}},
    {FB_FORMAT_BGR24, 1920, 1080, 1, {5760}, {1080}},
    {FB_FORMAT_BGR24, 3840, 2160, 1, {11520}, {2160}},
    {FB_FORMAT_BGR24, 33, 7, 1, {128}, {7}},
    {FB_FORMAT_RGB24, 1280, 720, 1, {3840}, {720}},
    {FB_FORMAT_BGRA, 100, 10, 1, {448}, {10}},
    {FB_FORMAT_NV12, 1920, 1080, 2, {1920, 1920}, {1080, 540}},
    {FB_FORMAT_NV12, 98, 50, 2, {128, 128}, {50, 25}},
    {FB_FORMAT_YUV420P, 1920, 1080, 3, {1920, 960, 960}, {1080, 540, 540}},
    {FB_FORMAT_YUV420P, 130, 2, 3, {256, 128, 128}, {2, 1, 1}},
    {FB_FORMAT_YUV420P, 320, 240, 3, {384, 192, 192}, {240, 120, 120}},
    {FB_FORMAT_YUYV422, 640, 481, 1, {1280}, {481}},
    {FB_FORMAT_GRAY16, 641, 1, 1, {1344}, {1}},
    {FB_FORMAT_RGBA, 100, 10, 1, {448}, {10}},
};

Test(format, layout_of_every_format)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct expect *e = &cases[i];
		struct fb_layout l;
		cr_assert_eq(fb_layout_compute(e->width, e->height, e->format, &l), 0, "case %zu",
			     i);
		cr_assert_eq(l.n_planes, e->n_planes, "case %zu", i);
		cr_assert_eq(l.width, e->width);
		cr_assert_eq(l.height, e->height);
		cr_assert_eq(l.format, e->format);
		uint64_t off = 0;
		for (uint32_t p = 0; p < l.n_planes; p++) {
			cr_assert_eq(l.stride[p], e->stride[p], "case %zu plane %u: %u", i, p,
				     l.stride[p]);
			cr_assert_eq(l.stride[p] % 64, 0);
			cr_assert_eq(l.plane_height[p], e->rows[p], "case %zu plane %u", i, p);
			cr_assert_eq(l.offset[p], off, "case %zu plane %u", i, p);
			cr_assert_eq(l.offset[p] % 64, 0);
			off += (uint64_t)l.stride[p] * l.plane_height[p];
		}
		for (uint32_t p = l.n_planes; p < FB_MAX_PLANES; p++)
			cr_assert_eq(l.stride[p], 0);
		cr_assert_eq(l.frame_size, off, "case %zu", i);
	}
}

Test(format, rejects_bad_geometry)
{
	struct fb_layout l;
	memset(&l, 0xab, sizeof(l));
	struct fb_layout before = l;

	cr_assert_eq(fb_layout_compute(0, 10, FB_FORMAT_GRAY8, &l), -EINVAL);
	cr_assert_eq(fb_layout_compute(10, 0, FB_FORMAT_GRAY8, &l), -EINVAL);
	cr_assert_eq(fb_layout_compute(FB_MAX_DIMENSION + 1, 10, FB_FORMAT_GRAY8, &l), -EINVAL);
	cr_assert_eq(fb_layout_compute(10, FB_MAX_DIMENSION + 1, FB_FORMAT_BGRA, &l), -EINVAL);
	cr_assert_eq(fb_layout_compute(11, 10, FB_FORMAT_NV12, &l), -EINVAL);
	cr_assert_eq(fb_layout_compute(10, 11, FB_FORMAT_YUV420P, &l), -EINVAL);
	cr_assert_eq(fb_layout_compute(11, 10, FB_FORMAT_YUYV422, &l), -EINVAL);
	cr_assert_eq(fb_layout_compute(10, 10, 0, &l), -EINVAL);
	cr_assert_eq(fb_layout_compute(10, 10, 99, &l), -EINVAL);
	cr_assert_eq(fb_layout_compute(1, 0, FB_FORMAT_RESULTS, &l), -EINVAL,
		     "results with pixels");
	cr_assert_eq(fb_layout_compute(0, 1, FB_FORMAT_RESULTS, &l), -EINVAL,
		     "results with pixels");
	cr_assert_eq(fb_layout_compute(10, 10, FB_FORMAT_GRAY8, NULL), -EINVAL);
	cr_assert_eq(memcmp(&l, &before, sizeof(l)), 0, "ret_layout written on failure");

	cr_assert_eq(fb_layout_compute(FB_MAX_DIMENSION, FB_MAX_DIMENSION, FB_FORMAT_BGRA, &l), 0);
	cr_assert_eq(l.frame_size, (uint64_t)FB_MAX_DIMENSION * FB_MAX_DIMENSION * 4);
}

/* A results stream's frames have no pixels: no planes, nothing to map. */
Test(format, results_have_no_planes)
{
	struct fb_layout l;
	memset(&l, 0xab, sizeof(l));
	cr_assert_eq(fb_layout_compute(0, 0, FB_FORMAT_RESULTS, &l), 0);
	cr_assert_eq(l.format, FB_FORMAT_RESULTS);
	cr_assert_eq(l.n_planes, 0);
	cr_assert_eq(l.frame_size, 0);
	cr_assert_eq(l.width + l.height + l.stride[0] + l.plane_height[0], 0);
}

Test(format, names_round_trip)
{
	const char *names[] = {"gray8",   "bgr24",   "rgb24",   "bgra",   "nv12",
			       "yuv420p", "results", "yuyv422", "gray16", "rgba"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int f = fb_format_from_name(names[i]);
		cr_assert_gt(f, 0, "%s", names[i]);
		cr_assert_str_eq(fb_format_name((uint32_t)f), names[i]);
	}
	cr_assert_eq(fb_format_from_name("BGR24"), -EINVAL);
	cr_assert_eq(fb_format_from_name("yuyv"), -EINVAL);
	cr_assert_eq(fb_format_from_name(NULL), -EINVAL);
	cr_assert_null(fb_format_name(0));
	cr_assert_null(fb_format_name(99));
}

Test(format, errors_are_described)
{
	cr_assert_str_eq(fb_strerror(-EPIPE), "the stream has ended");
	cr_assert_str_eq(fb_strerror(EPIPE), "the stream has ended");
	cr_assert_str_eq(fb_strerror(-ENOENT), "No such file or directory");
	cr_assert_str_eq(fb_strerror(-100000), "unknown error");
	cr_assert_str_eq(fb_version(), "0.1.0");
}
