/* SPDX-License-Identifier: MIT */
/* A frame's identity carried in-band with its encoded picture, from
 * framebus-output on one host to framebusd on another: the origin stream's
 * name, the origin frame's seq, its capture and publish times (CLOCK_REALTIME)
 * and its meta.  Carried as the payload of an H.264/HEVC "user data
 * unregistered" SEI message after FBD_IDENTITY_UUID; the layout is in
 * docs/tracing.md ("Across hosts"). */
#ifndef FBD_IDENTITY_H
#define FBD_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "framebus/framebus.h"

/* The SEI's UUID, 39d95754-cb1f-4e48-bab7-b273dd15e167. */
extern const uint8_t FBD_IDENTITY_UUID[16];

#define FBD_IDENTITY_VERSION 1
/* The most meta carried: a frame with more goes without its meta. */
#define FBD_IDENTITY_META_MAX 4096
/* UUID, version, name length, name, seq, two times, meta length, meta. */
#define FBD_IDENTITY_MAX (16 + 1 + 1 + FB_NAME_MAX + 8 + 8 + 8 + 2 + FBD_IDENTITY_META_MAX)

struct fbd_identity {
	char stream[FB_NAME_MAX + 1]; /* the origin stream, NUL-terminated */
	uint64_t seq;                 /* the frame's seq in it */
	uint64_t capture_realtime_ns; /* its picture's capture, 0: unknown */
	uint64_t publish_realtime_ns; /* when it was published there */
	const uint8_t *meta;          /* into the buffer parsed */
	uint16_t meta_size;
};

/* Writes id as a SEI payload (UUID first) into buf (FBD_IDENTITY_MAX bytes);
 * returns its size.  Meta longer than FBD_IDENTITY_META_MAX is left out. */
size_t fbd_identity_write(const struct fbd_identity *id, uint8_t *buf);

/* Reads a SEI payload (UUID first; or behind libx265's UUID, which it puts
 * in front of every payload): true and *ret_id for one of ours of a version
 * we know, false for anything else (another UUID, short, bad). */
bool fbd_identity_read(const uint8_t *buf, size_t size, struct fbd_identity *ret_id);

/* The identity of frame f of stream name: its origin (the first hop, or f
 * itself), capture and publish times on CLOCK_REALTIME, its meta. */
void fbd_identity_of(const struct fb_frame *f, const char *name, struct fbd_identity *ret_id);

#endif
