/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test-helpers.h"

#define META_BYTES 24

static uint8_t pattern_byte(uint64_t seq, uint32_t plane, uint32_t row)
{
	return (uint8_t)(seq * 31u + plane * 7u + row);
}

void th_fill_frame(struct fb_frame *f, const struct fb_layout *l, uint64_t seq)
{
	for (uint32_t p = 0; p < l->n_planes; p++)
		for (uint32_t y = 0; y < l->plane_height[p]; y++)
			memset(f->data[p] + (size_t)y * f->stride[p], pattern_byte(seq, p, y),
			       f->stride[p]);
	f->pts = (int64_t)seq * 1000;
	f->source_seq = seq + 7;
	f->flags = seq % 5 == 0 ? FB_FRAME_KEYFRAME : 0;
	f->meta_size = META_BYTES;
	memset(f->meta, (int)(seq & 0xff), META_BYTES);
}

bool th_frame_is_whole(const struct fb_frame *f, const struct fb_layout *l)
{
	uint64_t seq = f->seq;
	uint8_t row[FB_MAX_DIMENSION * 4];

	if (f->pts != (int64_t)seq * 1000 || f->source_seq != seq + 7 ||
	    f->flags != (seq % 5 == 0 ? FB_FRAME_KEYFRAME : 0u) || f->meta_size != META_BYTES)
		return false;
	for (uint32_t i = 0; i < META_BYTES; i++)
		if (f->meta[i] != (uint8_t)(seq & 0xff))
			return false;
	for (uint32_t p = 0; p < l->n_planes; p++)
		for (uint32_t y = 0; y < l->plane_height[p]; y++) {
			memset(row, pattern_byte(seq, p, y), f->stride[p]);
			if (memcmp(f->data[p] + (size_t)y * f->stride[p], row, f->stride[p]) != 0)
				return false;
		}
	return true;
}

ssize_t th_sendmsg_fds(int sock, const void *buf, size_t len, const int *fds, unsigned n_fds)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	union {
		char buf[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

	if (n_fds > 8)
		return -1;
	if (n_fds) {
		memset(&u, 0, sizeof(u));
		msg.msg_control = u.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
	}
	return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

int th_send_fds(int sock, const struct fb_subscriber_fds *fds)
{
	int all[4] = {fds->frame_fd, fds->control_fd, fds->record_fd, fds->wake_fd};
	char byte = 'F';
	return th_sendmsg_fds(sock, &byte, 1, all, 4) == 1 ? 0 : -errno;
}

int th_recv_fds(int sock, struct fb_subscriber_fds *ret)
{
	int all[4];
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(all))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf)};

	if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1)
		return -EPROTO;
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(all)))
		return -EPROTO;
	memcpy(all, CMSG_DATA(c), sizeof(all));
	*ret = (struct fb_subscriber_fds){all[0], all[1], all[2], all[3]};
	return 0;
}

int th_wait(pid_t pid)
{
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

int th_count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", ".." and the directory's own fd */
}

void th_sleep_us(uint64_t us)
{
	struct timespec ts = {.tv_sec = (time_t)(us / 1000000u),
			      .tv_nsec = (long)(us % 1000000u) * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

struct fb_ring_params th_params(uint32_t w, uint32_t h, uint32_t format, uint32_t slots,
				uint32_t policy)
{
	return (struct fb_ring_params){
	    .width = w,
	    .height = h,
	    .format = format,
	    .slots = slots,
	    .policy = policy,
	    .meta_max = 64,
	};
}
