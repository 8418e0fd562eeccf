/* SPDX-License-Identifier: MIT */
/* daemon/rtp.c: RTP H.264 and H.265 packets into Annex B access units, each
 * ended on its marker bit (or a new timestamp); a lost packet drops its
 * access unit; what it does not support is an error naming it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "rtp.h"

#define PT 96

struct packets {
	struct fbd_rtp_depay d;
	struct fbd_rtp_access_unit units[2];
	char why[256];
	uint16_t seq;
};

/* Push one packet of payload (n bytes) with timestamp ts. */
static int push(struct packets *p, uint32_t ts, bool marker, const void *payload, size_t n)
{
	uint8_t buf[70000];
	cr_assert_leq(n, sizeof(buf) - 12);
	buf[0] = 0x80;
	buf[1] = (uint8_t)((marker ? 0x80 : 0) | PT);
	buf[2] = (uint8_t)(p->seq >> 8);
	buf[3] = (uint8_t)p->seq;
	p->seq++;
	for (int i = 0; i < 4; i++)
		buf[4 + i] = (uint8_t)(ts >> (24 - 8 * i));
	memcpy(buf + 8, "\x12\x34\x56\x78", 4);
	memcpy(buf + 12, payload, n);
	p->why[0] = 0;
	return fbd_rtp_depay_push(&p->d, buf, 12 + n, p->units, p->why, sizeof(p->why));
}

static void expect_unit(const struct fbd_rtp_access_unit *u, const void *annexb, size_t n,
			int64_t pts, bool ended_here)
{
	cr_assert_eq(u->size, n, "an access unit of %zu bytes, not %zu", u->size, n);
	cr_assert(!memcmp(u->data, annexb, n));
	cr_assert_eq(u->pts, pts);
	cr_assert_eq(u->ended_here, ended_here);
}

Test(rtp, h264_fu_a_ends_on_the_marker_bit)
{
	struct packets p = {.seq = 65534}; /* and the sequence number wraps */
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	cr_assert_eq(push(&p, 1000, false, "\x7c\x85\x01\x02", 4), 0);
	cr_assert_eq(push(&p, 1000, false, "\x7c\x05\x03", 3), 0);
	cr_assert_eq(push(&p, 1000, true, "\x7c\x45\x04", 3), 1);
	expect_unit(&p.units[0], "\0\0\0\1\x65\x01\x02\x03\x04", 9, 1000, true);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, an_access_unit_is_a_padded_buffer_a_decoder_can_keep)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	cr_assert_eq(push(&p, 0, true, "\x65\x01\x02", 3), 1);
	const struct fbd_rtp_access_unit *u = &p.units[0];
	/* Padded with zeros, as libavcodec reads packets. */
	cr_assert_not_null(u->buf);
	cr_assert_eq(u->data, u->buf->data);
	cr_assert_geq(u->buf->size, u->size + FBD_RTP_PADDING);
	for (size_t i = 0; i < FBD_RTP_PADDING; i++)
		cr_assert_eq(u->data[u->size + i], 0);
	/* Kept (a decoder's packet): the next access units are built
	 * elsewhere and it stays as it was. */
	AVBufferRef *kept = av_buffer_ref(u->buf);
	const uint8_t *data = u->data;
	for (uint8_t i = 0; i < 4; i++) {
		cr_assert_eq(push(&p, 3000u * (i + 1u), true, (uint8_t[]){0x41, i, i, i, i}, 5), 1);
		cr_assert_neq(p.units[0].data, data);
	}
	cr_assert(!memcmp(kept->data, "\0\0\0\1\x65\x01\x02\0\0\0", 10));
	fbd_rtp_depay_clear(&p.d);
	av_buffer_unref(&kept);
}

Test(rtp, h264_stap_a_and_single_nal_units)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	cr_assert_eq(push(&p, 0, false, "\x18\x00\x02\x67\x42\x00\x02\x68\xce", 9), 0);
	cr_assert_eq(push(&p, 0, true, "\x65\xaa", 2), 1);
	expect_unit(&p.units[0], "\0\0\0\1\x67\x42\0\0\0\1\x68\xce\0\0\0\1\x65\xaa", 18, 0, true);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, without_marker_bits_a_new_timestamp_ends_the_access_unit)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	cr_assert_eq(push(&p, 0xfffff000u, false, "\x65\x01", 2), 0);
	cr_assert_eq(push(&p, 0xfffff000u, false, "\x65\x02", 2), 0);
	/* The timestamp wraps: pts goes on past 2^32. */
	cr_assert_eq(push(&p, 0x00000b00u, false, "\x41\x03", 2), 1);
	expect_unit(&p.units[0], "\0\0\0\1\x65\x01\0\0\0\1\x65\x02", 12, 0xfffff000u, false);
	/* A new timestamp and its own marker: two at once, oldest first. */
	cr_assert_eq(push(&p, 0x00001700u, true, "\x41\x04", 2), 2);
	expect_unit(&p.units[0], "\0\0\0\1\x41\x03", 6, 0x100000b00ll, false);
	expect_unit(&p.units[1], "\0\0\0\1\x41\x04", 6, 0x100001700ll, true);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, a_lost_packet_drops_its_access_unit_only)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	cr_assert_eq(push(&p, 0, false, "\x7c\x85\x01", 3), 0);
	p.seq++; /* the middle fragment is lost */
	cr_assert_eq(push(&p, 0, true, "\x7c\x45\x03", 3), 0);
	cr_assert_eq(p.d.dropped, 1);
	cr_assert_eq(push(&p, 3000, true, "\x41\x04", 2), 1);
	expect_unit(&p.units[0], "\0\0\0\1\x41\x04", 6, 3000, true);
	/* The first packet of the next one lost, with its marker: dropped too. */
	p.seq++;
	cr_assert_eq(push(&p, 9000, true, "\x41\x06", 2), 0);
	cr_assert_eq(p.d.dropped, 2);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, h265_aggregation_and_fragmentation)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H265, PT);
	cr_assert_eq(push(&p, 90, false, "\x60\x01\x00\x03\x40\x01\x0c\x00\x02\x42\x01", 11), 0);
	cr_assert_eq(push(&p, 90, false, "\x62\x01\x93\xaa", 4), 0); /* FU start, type 19 */
	cr_assert_eq(push(&p, 90, true, "\x62\x01\x53\xbb", 4), 1);  /* FU end */
	expect_unit(&p.units[0], "\0\0\0\1\x40\x01\x0c\0\0\0\1\x42\x01\0\0\0\1\x26\x01\xaa\xbb", 21,
		    90, true);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, what_it_does_not_take_is_an_error_naming_it)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	cr_assert_eq(push(&p, 0, false, "\x1d\x85\x00", 3), -EPROTO);
	cr_assert(strstr(p.why, "FU-B"), "%s", p.why);
	fbd_rtp_depay_clear(&p.d);
	fbd_rtp_depay_init(&p.d, FBD_RTP_H265, PT);
	cr_assert_eq(push(&p, 0, false, "\x64\x01\x00", 3), -EPROTO);
	cr_assert(strstr(p.why, "PACI"), "%s", p.why);
	fbd_rtp_depay_clear(&p.d);
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT + 1);
	cr_assert_eq(push(&p, 0, false, "\x41\x00", 2), -EPROTO);
	cr_assert(strstr(p.why, "payload type 96, not 97"), "%s", p.why);
	fbd_rtp_depay_clear(&p.d);
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	cr_assert_eq(push(&p, 0, false, "\x18\x00\x09\x67", 4), -EPROTO);
	cr_assert(strstr(p.why, "aggregation packet"), "%s", p.why);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, an_access_unit_over_the_limit_is_an_error)
{
	static uint8_t fragment[60002];
	struct packets p = {0};
	int r = 0;
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	memcpy(fragment, "\x7c\x85", 2);
	cr_assert_eq(push(&p, 0, false, fragment, sizeof(fragment)), 0);
	fragment[1] = 0x05;
	for (int i = 0; i < 1000 && r == 0; i++)
		r = push(&p, 0, false, fragment, sizeof(fragment));
	cr_assert_eq(r, -EMSGSIZE);
	cr_assert(strstr(p.why, "an access unit over 16777216 bytes"), "%s", p.why);
	fbd_rtp_depay_clear(&p.d);
}
