/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "identity.h"

#include <stdio.h>
#include <string.h>

const uint8_t FBD_IDENTITY_UUID[16] = {0x39, 0xd9, 0x57, 0x54, 0xcb, 0x1f, 0x4e, 0x48,
				       0xba, 0xb7, 0xb2, 0x73, 0xdd, 0x15, 0xe1, 0x67};

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

size_t fbd_identity_write(const struct fbd_identity *id, uint8_t *buf)
{
	size_t name = strnlen(id->stream, FB_NAME_MAX);
	uint16_t meta = id->meta_size <= FBD_IDENTITY_META_MAX ? id->meta_size : 0;
	uint8_t *p = buf;

	memcpy(p, FBD_IDENTITY_UUID, 16);
	p += 16;
	*p++ = FBD_IDENTITY_VERSION;
	*p++ = (uint8_t)name;
	memcpy(p, id->stream, name);
	p += name;
	p = put64(p, id->seq);
	p = put64(p, id->capture_realtime_ns);
	p = put64(p, id->publish_realtime_ns);
	*p++ = (uint8_t)(meta >> 8);
	*p++ = (uint8_t)meta;
	if (meta)
		memcpy(p, id->meta, meta);
	return (size_t)(p - buf) + meta;
}

bool fbd_identity_read(const uint8_t *buf, size_t size, struct fbd_identity *ret_id)
{
	struct fbd_identity id = {0};
	/* libx265 writes the UUID of its own in front of every payload it is
	 * given: ours then follows it. */
	if (size >= 32 && memcmp(buf, FBD_IDENTITY_UUID, 16) &&
	    !memcmp(buf + 16, FBD_IDENTITY_UUID, 16))
		buf += 16, size -= 16;
	const uint8_t *p = buf, *end = buf + size;

	if (size < 18 || memcmp(p, FBD_IDENTITY_UUID, 16) || p[16] != FBD_IDENTITY_VERSION)
		return false;
	size_t name = p[17];
	p += 18;
	/* A later version may add fields after the meta: they are skipped. */
	if (name == 0 || name > FB_NAME_MAX || (size_t)(end - p) < name + 26)
		return false;
	memcpy(id.stream, p, name);
	p += name;
	id.seq = get64(p);
	id.capture_realtime_ns = get64(p + 8);
	id.publish_realtime_ns = get64(p + 16);
	id.meta_size = (uint16_t)(p[24] << 8 | p[25]);
	p += 26;
	if (id.meta_size > FBD_IDENTITY_META_MAX || (size_t)(end - p) < id.meta_size)
		return false;
	id.meta = p;
	*ret_id = id;
	return true;
}

void fbd_identity_of(const struct fb_frame *f, const char *name, struct fbd_identity *ret_id)
{
	const struct fb_trace *t = f->trace;
	/* The origin's publish time on this host's realtime clock: the
	 * frame's own, minus the time between the two publishes. */
	uint64_t since = 0;
	if (t->n_hops && f->monotonic_ns > t->hops[0].publish_ns)
		since = f->monotonic_ns - t->hops[0].publish_ns;
	*ret_id = (struct fbd_identity){
	    .seq = t->n_hops ? t->hops[0].seq : f->seq,
	    .capture_realtime_ns = t->capture_realtime_ns,
	    .publish_realtime_ns = f->realtime_ns - since,
	    .meta = f->meta,
	    .meta_size = f->meta_size <= FBD_IDENTITY_META_MAX ? (uint16_t)f->meta_size : 0,
	};
	snprintf(ret_id->stream, sizeof(ret_id->stream), "%s",
		 t->n_hops ? t->hops[0].stream : name);
}
