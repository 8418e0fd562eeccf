/* SPDX-License-Identifier: MIT */
/* Marshalling of the control protocol: nothing here trusts the peer. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "protocol-private.h"

int fb__msg_payload_size(uint32_t opcode)
{
	switch (opcode) {
	case FB__OP_HELLO:
	case FB__OP_HELLO_REPLY:
		return sizeof(struct fb__msg_hello);
	case FB__OP_LIST:
	case FB__OP_DONE:
		return 0;
	case FB__OP_INFO:
	case FB__OP_STATS:
	case FB__OP_DETAIL:
		return sizeof(struct fb__msg_name);
	case FB__OP_SUBSCRIBE:
		return sizeof(struct fb__msg_subscribe);
	case FB__OP_SUBSCRIBE_DERIVED:
		return sizeof(struct fb__msg_subscribe_derived);
	case FB__OP_UNSUBSCRIBE:
		return sizeof(struct fb__msg_id);
	case FB__OP_ERROR:
		return sizeof(struct fb__msg_error);
	case FB__OP_STREAM_INFO:
		return sizeof(struct fb__msg_stream_info);
	case FB__OP_SUBSCRIBED:
		return sizeof(struct fb__msg_subscribed);
	case FB__OP_SUBSCRIBER_STATS:
		return sizeof(struct fb__msg_subscriber_stats);
	case FB__OP_STREAM_DETAIL:
		return sizeof(struct fb__msg_stream_detail);
	case FB__OP_SUBSCRIPTION:
		return sizeof(struct fb__msg_subscription);
	case FB__OP_LIMITS:
		return 0;
	case FB__OP_LIMITS_REPLY:
		return sizeof(struct fb__msg_limits);
	case FB__OP_STREAM_EVENT:
		return sizeof(struct fb__msg_stream_event);
	case FB__OP_CREATE_STREAM:
		return sizeof(struct fb__msg_create_stream);
	case FB__OP_DESTROY_STREAM:
	case FB__OP_CREATED:
		return sizeof(struct fb__msg_id);
	case FB__OP_ADD_SUBSCRIBER:
	case FB__OP_REMOVE_SUBSCRIBER:
		return sizeof(struct fb__msg_registration);
	default:
		return -1;
	}
}

uint32_t fb__msg_fd_count(uint32_t opcode)
{
	switch (opcode) {
	case FB__OP_SUBSCRIBED:
		return 4;
	case FB__OP_ADD_SUBSCRIBER:
	case FB__OP_CREATE_STREAM:
		return 3;
	default:
		return 0;
	}
}

int fb__msg_send(int sock, uint32_t opcode, uint32_t seq, const void *payload, size_t size,
		 const int *fds, uint32_t n_fds)
{
	struct fb__msg_header h = {
	    .opcode = opcode, .size = (uint32_t)(sizeof(h) + size), .seq = seq, .n_fds = n_fds};
	struct iovec iov[2] = {{.iov_base = &h, .iov_len = sizeof(h)},
			       {.iov_base = (void *)payload, .iov_len = size}};
	union {
		char buf[CMSG_SPACE(sizeof(int) * FB__MSG_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = iov, .msg_iovlen = size ? 2 : 1};

	if (sizeof(h) + size > FB__MSG_MAX || n_fds > FB__MSG_MAX_FDS)
		return -EINVAL;
	if (n_fds) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
	}
	ssize_t n;
	do
		n = sendmsg(sock, &m, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == ECONNREFUSED || errno == EPIPE ? -ECONNRESET
							       : -errno; /* peer gone */
	return n == (ssize_t)h.size ? 0 : -EPROTO;
}

void fb__msg_close_fds(struct fb__msg *msg)
{
	for (uint32_t i = 0; i < FB__MSG_MAX_FDS; i++) {
		if (msg->fds[i] >= 0)
			close(msg->fds[i]);
		msg->fds[i] = -1;
	}
}

int fb__msg_recv(int sock, struct fb__msg *msg)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * FB__MSG_MAX_FDS * 2)];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = msg, .iov_len = sizeof(msg->header) + sizeof(msg->body)};
	struct msghdr m = {.msg_iov = &iov,
			   .msg_iovlen = 1,
			   .msg_control = u.buf,
			   .msg_controllen = sizeof(u.buf)};
	uint32_t n_fds = 0;
	bool bad = false;
	ssize_t n;

	for (uint32_t i = 0; i < FB__MSG_MAX_FDS; i++)
		msg->fds[i] = -1;
	do
		n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;

	/* Collect every descriptor, keep those that fit, close the rest; also
	 * those of an empty message, which reads as the peer hanging up. */
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (n_fds < FB__MSG_MAX_FDS)
				msg->fds[n_fds++] = fd;
			else {
				close(fd);
				bad = true;
			}
		}
	}
	if (n == 0) {
		fb__msg_close_fds(msg);
		return -ECONNRESET;
	}
	if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		bad = true;
	if (!bad && (size_t)n < sizeof(msg->header))
		bad = true;
	if (!bad) {
		int payload = fb__msg_payload_size(msg->header.opcode);
		bad = payload < 0 || msg->header.size != (uint32_t)n ||
		      (size_t)n != sizeof(msg->header) + (size_t)payload ||
		      msg->header.n_fds != n_fds || n_fds != fb__msg_fd_count(msg->header.opcode);
	}
	if (bad) {
		fb__msg_close_fds(msg);
		return -EPROTO;
	}
	return 0;
}

bool fb__name_set(char *dst, size_t dst_size, const char *src)
{
	size_t len = src ? strlen(src) : 0;
	memset(dst, 0, dst_size);
	if (!src || len >= dst_size)
		return false;
	memcpy(dst, src, len);
	return true;
}

bool fb__name_valid(const char *name, size_t size)
{
	size_t len = strnlen(name, size);
	if (len == 0 || len == size)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e)
			return false;
	return true;
}
