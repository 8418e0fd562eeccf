/* SPDX-License-Identifier: MIT */
/* framebus pixel formats as FFmpeg names them (framebusd and the tools). */
#ifndef FBD_PIXFMT_H
#define FBD_PIXFMT_H

#include <libavutil/pixfmt.h>

#include "framebus/framebus.h"

static inline enum AVPixelFormat fb_av_pixel_format(uint32_t format)
{
	switch (format) {
	case FB_FORMAT_GRAY8:
		return AV_PIX_FMT_GRAY8;
	case FB_FORMAT_BGR24:
		return AV_PIX_FMT_BGR24;
	case FB_FORMAT_RGB24:
		return AV_PIX_FMT_RGB24;
	case FB_FORMAT_BGRA:
		return AV_PIX_FMT_BGRA;
	case FB_FORMAT_NV12:
		return AV_PIX_FMT_NV12;
	case FB_FORMAT_YUV420P:
		return AV_PIX_FMT_YUV420P;
	case FB_FORMAT_YUYV422:
		return AV_PIX_FMT_YUYV422;
	case FB_FORMAT_GRAY16:
		return AV_PIX_FMT_GRAY16LE;
	case FB_FORMAT_RGBA:
		return AV_PIX_FMT_RGBA;
	default:
		return AV_PIX_FMT_NONE;
	}
}

#endif
