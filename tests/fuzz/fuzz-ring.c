/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: a subscriber's (and the daemon's) view of ring memory that a
 * hostile producer wrote.  A valid ring with frames in it is copied into a
 * fresh memfd, the input overwrites its start (the header, the slots'
 * metadata and the log), the memfd is sealed as a producer seals it, and then
 * the daemon's check (fb__ring_map_readonly) and a subscriber's attach and
 * acquires run on it.  Nothing may crash or read outside the mapping.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ring-private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fb_producer *producer;
static int control_fd;
static uint8_t *pristine;
static size_t total;

static void make_pristine(void)
{
	struct fb_ring_params params = {.width = 16,
					.height = 16,
					.format = FB_FORMAT_NV12,
					.slots = 3,
					.policy = FB_POLICY_DROP,
					.meta_max = 64};
	int frame_fd;
	struct stat st;

	if (fb_producer_new(&params, &producer) < 0)
		abort();
	for (int i = 0; i < 4; i++) {
		struct fb_frame *f;
		if (fb_producer_acquire(producer, 0, &f) < 0)
			abort();
		memset(f->data[0], i, 16);
		f->meta_size = (uint32_t)i * 8;
		fb_producer_publish(producer, f);
	}
	fb__producer_get_fds(producer, &frame_fd, &control_fd);
	if (fstat(frame_fd, &st) < 0)
		abort();
	total = (size_t)st.st_size;
	pristine = malloc(total);
	if (!pristine || pread(frame_fd, pristine, total, 0) != (ssize_t)total)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fb_ring_params params;
	struct fb__ring_geometry geo;
	const struct fb__ring_header *hdr;
	struct fb__subscriber_slot slot;
	struct fb_subscriber_fds fds;
	fb_subscriber *sub;

	if (!producer)
		make_pristine();
	int fd = fb__memfd_create("fuzz-ring", total, true);
	if (fd < 0)
		abort();
	if (pwrite(fd, pristine, total, 0) != (ssize_t)total ||
	    (size && pwrite(fd, data, size < total ? size : total, 0) < 0) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0)
		abort();

	if (fb__ring_map_readonly(fd, false, &params, &geo, &hdr) == 0)
		munmap((void *)hdr, geo.total_size);

	if (fb__subscriber_slot_create(FB_MODE_QUEUE, 2, 1, &slot) < 0)
		abort();
	if (fb__subscriber_slot_fds(&slot, fd, control_fd, &fds) < 0)
		abort();
	if (fb_subscriber_attach(&fds, &sub) == 0) {
		const struct fb_layout *l = fb_subscriber_get_layout(sub);
		for (int i = 0; i < 8; i++) {
			const struct fb_frame *f;
			if (fb_subscriber_acquire(sub, 0, &f) < 0)
				break;
			/* Read what the subscriber was given: all of it must be mapped. */
			volatile uint8_t sum = 0;
			for (uint32_t p = 0; p < l->n_planes; p++)
				for (uint32_t y = 0; y < l->plane_height[p]; y++)
					sum +=
					    f->data[p][(size_t)y * f->stride[p] + f->stride[p] - 1];
			for (uint32_t m = 0; m < f->meta_size; m++)
				sum += f->meta[m];
			fb_subscriber_release(sub, f);
		}
		fb_subscriber_free(sub);
	} else
		fb_subscriber_fds_close(&fds);
	fb__subscriber_slot_close(&slot);
	close(fd);
	return 0;
}
