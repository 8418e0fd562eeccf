/* SPDX-License-Identifier: MIT */
/*
 * scale-bench: how fast framebusd shrinks a derived stream's frames, on raw
 * frames in a file: each 1920x1080 frame to 640x360 rgb24 as a derived
 * stream's thread does it (daemon/shrink.c), timed in CPU time over every
 * frame, ROUNDS times; the fastest round is printed as frames a second.
 * FORMAT is the frames': bgr24 (a parent's ring) or yuv420p (a decoding
 * parent's picture).  bench/scale-bench.sh runs ffmpeg -vf scale on the
 * same file beside it.
 *
 *   scale-bench FILE.raw [ROUNDS [FORMAT]]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include <libavutil/frame.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>

#include "shrink.h"

static double cpu_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const int width = 1920, height = 1080;
	int rounds = argc > 2 ? atoi(argv[2]) : 3;
	enum AVPixelFormat format = av_get_pix_fmt(argc > 3 ? argv[3] : "bgr24");
	int size = format == AV_PIX_FMT_BGR24 || format == AV_PIX_FMT_YUV420P
		       ? av_image_get_buffer_size(format, width, height, 1)
		       : -1;
	struct stat st;

	int fd = argc > 1 ? open(argv[1], O_RDONLY) : -1;
	if (fd < 0 || size < 0 || fstat(fd, &st) < 0 || st.st_size < size || rounds < 1) {
		fprintf(stderr, "usage: scale-bench FILE.raw [ROUNDS [bgr24|yuv420p]] (1920x1080 "
				"frames)\n");
		return 2;
	}
	const size_t frame = (size_t)size;
	size_t n = (size_t)st.st_size / frame;
	uint8_t *raw = mmap(NULL, n * frame, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	struct fb_layout l;
	fb_layout_compute(640, 360, FB_FORMAT_RGB24, &l);
	uint8_t *slot = aligned_alloc(4096, (l.frame_size + 4095) / 4096 * 4096);
	if (raw == MAP_FAILED || !slot) {
		perror("scale-bench");
		return 1;
	}
	struct fb_frame out = {.data = {slot}, .stride = {l.stride[0]}};
	double best = 0;
	for (int r = 0; r < rounds; r++) {
		double t = cpu_s();
		for (size_t i = 0; i < n; i++) {
			AVFrame in = {.width = width, .height = height, .format = format};
			av_image_fill_arrays(in.data, in.linesize, raw + i * frame, format, width,
					     height, 1);
			if (!fbd_shrink(&in, &out, &l)) {
				fprintf(stderr, "scale-bench: shrink.c does not take this case\n");
				return 1;
			}
		}
		double fps = (double)n / (cpu_s() - t);
		printf("round %d: %zu frames, %.0f frames/s\n", r + 1, n, fps);
		best = fps > best ? fps : best;
	}
	printf("%.1f\n", best);
	return 0;
}
