/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: framebusd's RTP H.264/H.265 depacketizer (daemon/rtp.c) on
 * any packets a camera may send.  The input: a byte choosing the codec (its
 * low bit) and the payload type (the rest), then packets, each after its
 * 16-bit big-endian length.  Every packet is pushed, past errors too (the
 * daemon stops at the first; later ones must not find a broken state).
 * Besides crashes it checks what comes out: at most two access units a
 * packet, each within the size limit and Annex B from its first byte.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fbd_rtp_depay d;
	struct fbd_rtp_access_unit units[2];
	char why[256];

	if (size < 1)
		return 0;
	fbd_rtp_depay_init(&d, data[0] & 1 ? FBD_RTP_H265 : FBD_RTP_H264, data[0] >> 1);
	data++, size--;
	while (size >= 2) {
		size_t len = (size_t)data[0] << 8 | data[1];
		data += 2, size -= 2;
		if (len > size)
			len = size;
		why[0] = 0;
		int n = fbd_rtp_depay_push(&d, data, len, units, why, sizeof(why));
		if (n < 0 && (!why[0] || !memchr(why, 0, sizeof(why))) && n != -ENOMEM)
			abort();
		if (n > 2)
			abort();
		for (int i = 0; i < n; i++)
			if (units[i].size < 5 || units[i].size > FBD_RTP_MAX_ACCESS_UNIT ||
			    memcmp(units[i].data, "\0\0\0\1", 4))
				abort();
		data += len, size -= len;
	}
	fbd_rtp_depay_clear(&d);
	return 0;
}
