/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: a frame's identity as framebusd reads it from a SEI of a
 * network stream (daemon/identity.c), on any bytes a sender may put there.
 * Besides crashes it checks that what is read lies within the bytes given
 * and comes back the same when written again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fbd_identity id, again;
	uint8_t buf[FBD_IDENTITY_MAX];

	if (!fbd_identity_read(data, size, &id))
		return 0;
	if (id.meta < data || id.meta + id.meta_size > data + size ||
	    memchr(id.stream, 0, sizeof(id.stream)) == NULL || !id.stream[0])
		abort();
	size_t n = fbd_identity_write(&id, buf);
	if (n > sizeof(buf) || n > size || !fbd_identity_read(buf, n, &again) ||
	    strcmp(id.stream, again.stream) || id.seq != again.seq ||
	    id.capture_realtime_ns != again.capture_realtime_ns ||
	    id.publish_realtime_ns != again.publish_realtime_ns ||
	    id.meta_size != again.meta_size || memcmp(id.meta, again.meta, id.meta_size))
		abort();
	return 0;
}
