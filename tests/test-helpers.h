/* SPDX-License-Identifier: MIT */
/* Shared by the ring test suites: frame patterns, fd passing, processes. */
#ifndef FB_TEST_HELPERS_H
#define FB_TEST_HELPERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "framebus/framebus.h"

/* Fill every byte of a frame with a pattern derived from seq, and stamp the
 * frame's metadata with values derived from seq too. */
void th_fill_frame(struct fb_frame *frame, const struct fb_layout *layout, uint64_t seq);

/* Whether every byte and every metadata field of frame is exactly what
 * th_fill_frame() wrote for frame->seq. */
bool th_frame_is_whole(const struct fb_frame *frame, const struct fb_layout *layout);

/* sendmsg() len bytes with n_fds (at most 8) descriptors attached. */
ssize_t th_sendmsg_fds(int sock, const void *buf, size_t len, const int *fds, unsigned n_fds);

/* Send or receive the four descriptors of a subscriber over a Unix socket. */
int th_send_fds(int sock, const struct fb_subscriber_fds *fds);
int th_recv_fds(int sock, struct fb_subscriber_fds *ret_fds);

/* Wait for pid; return its exit status, or 128 + signal if it was killed. */
int th_wait(pid_t pid);

/* Open descriptors of this process. */
int th_count_fds(void);

void th_sleep_us(uint64_t us);

/* Ring parameters with 64 bytes of side data per frame. */
struct fb_ring_params th_params(uint32_t w, uint32_t h, uint32_t format, uint32_t slots,
				uint32_t policy);

#endif
