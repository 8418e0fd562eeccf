/* SPDX-License-Identifier: MIT */
/*
 * The control protocol between framebusd and its clients: SOCK_SEQPACKET,
 * one message per packet, a fixed header and a fixed payload per opcode.
 * docs/protocol.md is the specification; this header is its code.
 */
#ifndef FB_PROTOCOL_PRIVATE_H
#define FB_PROTOCOL_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "framebus/framebus.h"

#define FB__PROTOCOL_VERSION 2u
#define FB__MSG_MAX 4096u
#define FB__MSG_MAX_FDS 4u
#define FB__NAME_MAX 64u /* stream and client names, NUL included */
#define FB__ERROR_TEXT_MAX 192u

enum fb__opcode {
	/* requests: client -> daemon; the reply echoes the request's seq */
	FB__OP_HELLO = 1,       /* fb__msg_hello -> FB__OP_HELLO_REPLY */
	FB__OP_LIST = 2,        /* no payload -> FB__OP_STREAM_INFO x N, then FB__OP_DONE */
	FB__OP_INFO = 3,        /* fb__msg_name -> FB__OP_STREAM_INFO */
	FB__OP_SUBSCRIBE = 4,   /* fb__msg_subscribe -> FB__OP_SUBSCRIBED + 4 fds */
	FB__OP_UNSUBSCRIBE = 5, /* fb__msg_id -> FB__OP_DONE */
	FB__OP_STATS = 6, /* fb__msg_name -> FB__OP_SUBSCRIBER_STATS x N, then FB__OP_STREAM_INFO */
	/* fb__msg_create_stream + frame and control memfds and the producer's
	 * channel -> FB__OP_CREATED */
	FB__OP_CREATE_STREAM = 7,
	FB__OP_DESTROY_STREAM = 8, /* fb__msg_id (stream id) -> FB__OP_DONE */
	/* fb__msg_name -> FB__OP_SUBSCRIPTION x N, then FB__OP_STREAM_DETAIL:
	 * STATS with rates over fixed windows and wait/busy times (a daemon
	 * older than this request hangs up on it) */
	FB__OP_DETAIL = 9,
	/* fb__msg_subscribe_derived -> FB__OP_SUBSCRIBED + 4 fds: a stream made
	 * from another on request, shared by every client asking the same. */
	FB__OP_SUBSCRIBE_DERIVED = 10,
	/* no payload -> FB__OP_LIMITS_REPLY: the limits in force and the
	 * caller's user's use of them */
	FB__OP_LIMITS = 11,

	/* replies: daemon -> client */
	FB__OP_HELLO_REPLY = 64,      /* fb__msg_hello */
	FB__OP_DONE = 65,             /* no payload */
	FB__OP_ERROR = 66,            /* fb__msg_error */
	FB__OP_STREAM_INFO = 67,      /* fb__msg_stream_info */
	FB__OP_SUBSCRIBED = 68,       /* fb__msg_subscribed + 4 fds */
	FB__OP_SUBSCRIBER_STATS = 69, /* fb__msg_subscriber_stats */
	FB__OP_CREATED = 70,          /* fb__msg_id: the new stream's id */
	FB__OP_STREAM_DETAIL = 71,    /* fb__msg_stream_detail */
	FB__OP_SUBSCRIPTION = 72,     /* fb__msg_subscription */
	FB__OP_LIMITS_REPLY = 73,     /* fb__msg_limits */

	/* events: daemon -> client, seq 0 */
	FB__OP_STREAM_EVENT = 128, /* fb__msg_stream_event */
	/* on the channel of a stream a client publishes, to its producer */
	FB__OP_ADD_SUBSCRIBER =
	    129, /* fb__msg_registration + record, wake pipe write and read ends */
	FB__OP_REMOVE_SUBSCRIBER = 130, /* fb__msg_registration */
};

struct fb__msg_header {
	uint32_t opcode;
	uint32_t size;  /* whole message, header included */
	uint32_t seq;   /* request serial, echoed by replies; 0 for events */
	uint32_t n_fds; /* descriptors passed with the message */
};

struct fb__msg_hello {
	uint32_t version;
	uint32_t client_id; /* reply only */
	char name[FB__NAME_MAX];
};

struct fb__msg_name {
	char name[FB__NAME_MAX];
};

struct fb__msg_id {
	uint32_t id;
	uint32_t reserved_;
};

struct fb__msg_subscribe {
	char stream[FB__NAME_MAX];
	uint32_t mode;
	uint32_t max_holds; /* 0: the daemon's default */
};

struct fb__msg_subscribe_derived {
	char parent[FB__NAME_MAX];
	uint32_t mode;
	uint32_t max_holds;
	struct fb_derived spec;
};

struct fb__msg_subscribed {
	uint32_t id; /* for FB__OP_UNSUBSCRIBE */
	uint32_t reserved_;
};

struct fb__msg_error {
	int32_t error; /* negative errno */
	uint32_t reserved_;
	char text[FB__ERROR_TEXT_MAX];
};

struct fb__msg_stream_info {
	char name[FB__NAME_MAX];
	char source[FB__NAME_MAX * 2]; /* url, truncated; "client:NAME" for published streams */
	uint32_t width, height, format, slots, policy, meta_max;
	uint32_t state; /* enum fb_stream_state */
	uint32_t subscribers;
	uint64_t published;
	uint64_t dropped;
	uint32_t fps_in_milli; /* frames published per second over the last interval, x1000 */
	uint32_t retries;      /* consecutive failed attempts to open the source */
	char detail[FB__ERROR_TEXT_MAX]; /* why it is retrying or ended */
};

struct fb__msg_subscriber_stats {
	uint32_t id;
	uint32_t client_id;
	uint32_t mode;
	uint32_t held;
	uint32_t fps_out_milli; /* frames it read per second lately, x1000 */
	uint32_t reserved_;
	uint64_t lag;
	uint64_t missed;
	uint64_t next_seq;
	char client[FB__NAME_MAX];
};

/* A stream as FB__OP_DETAIL describes it: STREAM_INFO (fps_in_milli over
 * the last second) and more. */
struct fb__msg_stream_detail {
	struct fb__msg_stream_info info;
	uint32_t fps_10s_milli;      /* published per second over the last 10 s, x1000 */
	uint32_t capture_latency_us; /* its newest frame: from capture to publish; 0: unknown */
	uint32_t capture_age_us;     /* its newest frame: from capture to now; 0: unknown */
	uint32_t stalls;             /* queue subscribers that stalled it (block_timeout) */
	uint32_t block_timeout_ms;   /* a block stream's block_timeout; 0: a drop stream */
	uint32_t holds_promised;     /* frames its subscriptions may hold, together */
	uint32_t flags;              /* FB__STREAM_DERIVED */
	uint32_t reserved_;
	/* A derived stream's parent frames it passed over: busy with an
	 * earlier one, or by its fps limit. */
	uint64_t parent_skipped_busy, parent_skipped_rate;
};

#define FB__STREAM_DERIVED 1u /* made from a parent's frames (from = PARENT) */

/* A subscription as FB__OP_DETAIL describes it: SUBSCRIBER_STATS
 * (fps_out_milli over the last second) and more. */
struct fb__msg_subscription {
	struct fb__msg_subscriber_stats stats;
	uint64_t frames;        /* frames it took since it subscribed */
	uint32_t fps_10s_milli; /* frames it took per second over the last 10 s, x1000 */
	/* Over the last 10 s: from a frame's publish until the subscriber had
	 * it (wait), and until it released it (busy), microseconds. */
	uint32_t wait_p50_us, wait_p99_us;
	uint32_t busy_p50_us, busy_p99_us;
	uint32_t uid;   /* the client's (SO_PEERCRED), if flags has FB__SUBSCRIPTION_UID */
	uint32_t flags; /* FB__SUBSCRIPTION_*; 0 from a daemon older than them */
	uint32_t reserved_[7];
};

#define FB__SUBSCRIPTION_UID 1u     /* uid is set */
#define FB__SUBSCRIPTION_STALLED 2u /* it stalled its block stream: no longer waited for */

struct fb__msg_create_stream {
	char name[FB__NAME_MAX];
	uint32_t width, height, format, slots, policy, meta_max;
};

struct fb__msg_registration {
	uint32_t subscriber_id; /* the daemon's, never 0 */
	uint32_t mode;
	uint32_t max_holds;
	uint32_t reserved_;
};

struct fb__msg_stream_event {
	char stream[FB__NAME_MAX];
	uint32_t state;        /* enum fb_stream_state */
	uint32_t subscription; /* subscription id the event is for, 0: every one on stream */
	char detail[FB__ERROR_TEXT_MAX];
};

/* A received message: header, payload and descriptors. */
/* The limits in force (framebusd.conf's [daemon] keys) and what the
 * asking client's user (uid) uses of the per-user ones. */
struct fb__msg_limits {
	uint32_t max_clients;
	uint32_t max_subscriptions_per_client;
	uint32_t max_streams_per_client;
	uint32_t default_max_holds;
	uint32_t max_derived_per_client;
	uint32_t max_connections_per_user;
	uint32_t max_subscriptions_per_user;
	uint32_t max_streams_per_user;
	uint64_t max_ring_memory_per_client;
	uint64_t max_derived_memory;
	uint64_t max_memory_per_user;
	uint32_t uid;
	uint32_t exempt; /* 1: root or the daemon's user, bound by no per-user limit */
	uint32_t connections, subscriptions, streams;
	uint32_t reserved0_;
	uint64_t memory;
	uint32_t reserved_[8];
};

struct fb__msg {
	struct fb__msg_header header;
	union {
		struct fb__msg_hello hello;
		struct fb__msg_name name;
		struct fb__msg_id id;
		struct fb__msg_subscribe subscribe;
		struct fb__msg_subscribe_derived subscribe_derived;
		struct fb__msg_subscribed subscribed;
		struct fb__msg_error error;
		struct fb__msg_stream_info stream_info;
		struct fb__msg_subscriber_stats subscriber_stats;
		struct fb__msg_stream_event stream_event;
		struct fb__msg_create_stream create_stream;
		struct fb__msg_registration registration;
		struct fb__msg_stream_detail stream_detail;
		struct fb__msg_subscription subscription;
		struct fb__msg_limits limits;
		uint8_t raw[FB__MSG_MAX - sizeof(struct fb__msg_header)];
	} body;
	int fds[FB__MSG_MAX_FDS];
};

/* Send one message: header filled in from the arguments, payload copied,
 * fds passed with SCM_RIGHTS (they stay open on our side).  MSG_NOSIGNAL: a
 * vanished peer is -EPIPE, never SIGPIPE. */
int fb__msg_send(int sock, uint32_t opcode, uint32_t seq, const void *payload, size_t size,
		 const int *fds, uint32_t n_fds);

/* Receive one message (blocking or not, as the socket is).  Checks the
 * header against the packet (size, fd count, payload size for the opcode) and
 * closes every descriptor that should not be there.  On success the message's
 * fds (msg->header.n_fds of them) belong to the caller.  Returns 0, -EAGAIN,
 * -ECONNRESET when the peer hung up, -EPROTO for a malformed message (any fds
 * closed), or another -errno. */
int fb__msg_recv(int sock, struct fb__msg *msg);

/* Close a received message's descriptors. */
void fb__msg_close_fds(struct fb__msg *msg);

/* Payload size an opcode requires, or -1 for an unknown opcode. */
int fb__msg_payload_size(uint32_t opcode);

/* Number of fds an opcode carries. */
uint32_t fb__msg_fd_count(uint32_t opcode);

/* Copy a string into a fixed NUL-padded field; false if it did not fit. */
bool fb__name_set(char *dst, size_t dst_size, const char *src);

/* Whether a fixed field holds a NUL-terminated name of 1..size-1 printable
 * characters. */
bool fb__name_valid(const char *name, size_t size);

#endif
