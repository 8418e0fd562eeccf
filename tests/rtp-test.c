/* SPDX-License-Identifier: MIT */
/* daemon/rtp.c: RTP H.264 and H.265 packets into Annex B access units, each
 * ended on its marker bit (or a new timestamp); a lost packet costs its
 * access unit and, if it may be a reference, those until the next keyframe;
 * what it does not support is an error naming it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include <libavutil/mem.h>

#include "rtp.h"

#define PT 96

struct packets {
	struct fbd_rtp_depay d;
	struct fbd_rtp_access_unit units[2];
	char why[256];
	uint16_t seq;
	uint32_t ssrc;   /* 0: 0x12345678 */
	uint8_t padding; /* the next packet's padding bytes */
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
	uint32_t ssrc = p->ssrc ? p->ssrc : 0x12345678;
	for (int i = 0; i < 4; i++)
		buf[8 + i] = (uint8_t)(ssrc >> (24 - 8 * i));
	memcpy(buf + 12, payload, n);
	if (p->padding) {
		buf[0] |= 0x20;
		memset(buf + 12 + n, 0, p->padding);
		n += p->padding;
		buf[12 + n - 1] = p->padding;
		p->padding = 0;
	}
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
	cr_assert_eq(push(&p, 1000, false, "\x7c\x85\x81\x02", 4), 0);
	cr_assert_eq(push(&p, 1000, false, "\x7c\x05\x03", 3), 0);
	cr_assert_eq(push(&p, 1000, true, "\x7c\x45\x04", 3), 1);
	expect_unit(&p.units[0], "\0\0\0\1\x65\x81\x02\x03\x04", 9, 1000, true);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, an_access_unit_is_a_padded_buffer_a_decoder_can_keep)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	cr_assert_eq(push(&p, 0, true, "\x65\x81\x02", 3), 1);
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
	cr_assert(!memcmp(kept->data, "\0\0\0\1\x65\x81\x02\0\0\0", 10));
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
	cr_assert_eq(push(&p, 0xfffff000u, false, "\x65\x81", 2), 0);
	cr_assert_eq(push(&p, 0xfffff000u, false, "\x65\x02", 2), 0);
	/* The timestamp wraps: pts goes on past 2^32. */
	cr_assert_eq(push(&p, 0x00000b00u, false, "\x41\x03", 2), 1);
	expect_unit(&p.units[0], "\0\0\0\1\x65\x81\0\0\0\1\x65\x02", 12, 0xfffff000u, false);
	/* A new timestamp and its own marker: two at once, oldest first. */
	cr_assert_eq(push(&p, 0x00001700u, true, "\x41\x04", 2), 2);
	expect_unit(&p.units[0], "\0\0\0\1\x41\x03", 6, 0x100000b00ll, false);
	expect_unit(&p.units[1], "\0\0\0\1\x41\x04", 6, 0x100001700ll, true);
	fbd_rtp_depay_clear(&p.d);
}

/* H.264: an IDR picture, a reference P picture and a non-reference one,
 * each one slice, the first of its picture (the bit after the NAL header:
 * first_mb_in_slice == 0); an IDR picture's second slice. */
#define IDR "\x65\x88\x01"
#define P "\x41\x9a\x02"
#define P_NONREF "\x01\x9a\x03"
#define IDR_SLICE_2 "\x65\x40\x04"
#define ANNEXB(nal) "\0\0\0\1" nal

/* Push a one-packet access unit, expecting it handed out (1) or not (0). */
static void push_unit(struct packets *p, uint32_t ts, const char *nal, int handed_out)
{
	cr_assert_eq(push(p, ts, true, nal, 3), handed_out, "at %u", ts);
	if (handed_out) {
		cr_assert_eq(p->units[0].size, 7);
		cr_assert(!memcmp(p->units[0].data + 4, nal, 3));
		cr_assert_eq(p->units[0].pts, ts);
	}
}

Test(rtp, a_lost_packet_costs_its_access_unit_and_those_until_the_next_keyframe)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 0, IDR, 1);
	/* A P picture in three fragments, the middle one lost. */
	cr_assert_eq(push(&p, 3000, false, "\x5c\x81\x9a", 3), 0);
	p.seq++;
	cr_assert_eq(push(&p, 3000, true, "\x5c\x41\x03", 3), 0);
	cr_assert_eq(p.d.dropped, 1);
	/* The next ones refer to it: held back, counted. */
	push_unit(&p, 6000, P, 0);
	push_unit(&p, 9000, P, 0);
	cr_assert_eq(p.d.dropped, 3);
	/* Parameter sets are handed out (the keyframe needs them)... */
	cr_assert_eq(push(&p, 12000, false, "\x67\x42\x00\x1e", 4), 0);
	cr_assert_eq(push(&p, 12000, true, "\x68\xce\x38", 3), 1);
	cr_assert_eq(p.d.dropped, 3);
	/* ...and from the keyframe on, everything. */
	push_unit(&p, 15000, IDR, 1);
	push_unit(&p, 18000, P, 1);
	cr_assert_eq(p.d.dropped, 3);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, a_whole_access_unit_lost_at_a_boundary_costs_the_next_ones_until_a_keyframe)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 0, IDR, 1);
	p.seq++;                   /* frame 2, one packet, lost */
	push_unit(&p, 6000, P, 0); /* frame 3 came whole, but refers to 2 */
	push_unit(&p, 9000, P, 0);
	cr_assert_eq(p.d.dropped, 3); /* 2, 3, 4 */
	push_unit(&p, 12000, IDR, 1);
	push_unit(&p, 15000, P, 1);
	cr_assert_eq(p.d.dropped, 3);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, a_keyframe_after_a_gap_at_a_boundary_is_handed_out)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 0, IDR, 1);
	push_unit(&p, 3000, P, 1);
	p.seq += 2; /* two whole frames lost (counted as one: which, nobody knows) */
	push_unit(&p, 12000, IDR, 1);
	push_unit(&p, 15000, P, 1);
	cr_assert_eq(p.d.dropped, 1);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, a_gap_that_took_an_access_units_start_drops_it)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 0, IDR, 1);
	p.seq++; /* the keyframe's first slice lost: its second is no picture */
	push_unit(&p, 3000, IDR_SLICE_2, 0);
	cr_assert_eq(p.d.dropped, 1);
	push_unit(&p, 6000, P, 0);
	cr_assert_eq(p.d.dropped, 2);
	/* A fragment's start lost alike. */
	push_unit(&p, 9000, IDR, 1);
	p.seq++;
	cr_assert_eq(push(&p, 12000, true, "\x5c\x41\x03", 3), 0);
	cr_assert_eq(p.d.dropped, 3);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, a_lost_non_reference_picture_costs_itself_only)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 0, IDR, 1);
	cr_assert_eq(push(&p, 3000, false, "\x1c\x81\x9a", 3), 0); /* nal_ref_idc 0 */
	p.seq++;
	cr_assert_eq(push(&p, 3000, true, "\x1c\x41\x03", 3), 0);
	cr_assert_eq(p.d.dropped, 1);
	push_unit(&p, 6000, P, 1);
	push_unit(&p, 9000, P_NONREF, 1);
	cr_assert_eq(p.d.dropped, 1);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, a_recovery_point_sei_ends_the_wait)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 0, IDR, 1);
	p.seq++;
	push_unit(&p, 6000, P, 0);
	/* An SEI with user data (type 5, 3 bytes, an emulation prevention
	 * byte in them), then a recovery point (type 6): intra refresh. */
	cr_assert_eq(push(&p, 9000, false, "\x06\x05\x03\x00\x00\x03\x01\x06\x01\x84\x80", 11), 0);
	cr_assert_eq(push(&p, 9000, true, P, 3), 1);
	cr_assert_eq(p.units[0].size, 11 + 4 + 3 + 4);
	push_unit(&p, 12000, P, 1);
	cr_assert_eq(p.d.dropped, 2);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, without_a_keyframe_for_max_wait_the_pictures_come_again)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 0, IDR, 1);
	p.seq++;
	/* The wait starts with the first picture after the loss. */
	uint32_t ts = 6000;
	for (; ts - 6000 < FBD_RTP_MAX_WAIT; ts += 3000)
		push_unit(&p, ts, P, 0);
	push_unit(&p, ts, P, 1);
	push_unit(&p, ts + 3000, P, 1);
	cr_assert_eq(p.d.dropped, 1 + FBD_RTP_MAX_WAIT / 3000);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, h265_a_loss_waits_for_an_irap_picture)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H265, PT);
	cr_assert_eq(push(&p, 0, true, "\x26\x01\xaf\x01", 4), 1); /* IDR_W_RADL */
	p.seq++;
	cr_assert_eq(push(&p, 6000, true, "\x02\x01\xd0\x01", 4), 0); /* TRAIL_R */
	cr_assert_eq(push(&p, 9000, true, "\x02\x01\xd0\x02", 4), 0);
	cr_assert_eq(p.d.dropped, 3);
	cr_assert_eq(push(&p, 12000, true, "\x2a\x01\xaf\x03", 4), 1); /* CRA */
	cr_assert_eq(push(&p, 15000, true, "\x02\x01\xd0\x04", 4), 1);
	/* A lost TRAIL_N (a sub-layer non-reference picture) costs itself. */
	cr_assert_eq(push(&p, 18000, false, "\x62\x01\x80\xd0", 4), 0); /* FU start, type 0 */
	p.seq++;
	cr_assert_eq(push(&p, 18000, true, "\x62\x01\x40\x05", 4), 0);
	cr_assert_eq(push(&p, 21000, true, "\x02\x01\xd0\x06", 4), 1);
	/* A slice that is not its picture's first after a gap: its start lost. */
	p.seq++;
	cr_assert_eq(push(&p, 27000, true, "\x02\x01\x50\x07", 4), 0);
	cr_assert_eq(p.d.dropped, 5);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, a_first_access_unit_joined_in_its_middle_is_not_handed_out_nor_counted)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	/* SPS, PPS and the keyframe's first slice came before the PLAY
	 * answer (not kept): its second slice alone is no keyframe. */
	push_unit(&p, 0, IDR_SLICE_2, 0);
	/* The P pictures after it refer to it. */
	push_unit(&p, 3000, P, 0);
	push_unit(&p, 6000, IDR, 1);
	push_unit(&p, 9000, P, 1);
	cr_assert_eq(p.d.dropped, 0);
	fbd_rtp_depay_clear(&p.d);
	/* Joined inside a fragmented NAL unit. */
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	cr_assert_eq(push(&p, 0, false, "\x7c\x05\x02", 3), 0);
	cr_assert_eq(push(&p, 0, true, "\x7c\x45\x03", 3), 0);
	push_unit(&p, 3000, IDR, 1);
	cr_assert_eq(p.d.dropped, 0);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, joined_inside_a_gop_the_first_picture_handed_out_is_a_keyframe)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 0, P, 0);
	/* Parameter sets are handed out. */
	cr_assert_eq(push(&p, 3000, true, "\x18\x00\x02\x67\x42\x00\x02\x68\xce", 9), 1);
	push_unit(&p, 3000, P, 0);
	push_unit(&p, 6000, IDR, 1);
	cr_assert_eq(p.d.dropped, 0);
	/* Then a loss counts. */
	p.seq++;
	push_unit(&p, 12000, P, 0);
	cr_assert_eq(p.d.dropped, 2);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, a_new_ssrc_goes_on_a_frame_later)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 1000, IDR, 1);
	push_unit(&p, 4600, P, 1);
	/* The camera restarts its stream: a new SSRC, sequence numbers and
	 * timestamps from elsewhere, a frame in progress cut. */
	cr_assert_eq(push(&p, 8200, false, "\x5c\x81\x9a", 3), 0);
	p.ssrc = 0xabcdef01;
	p.seq = 40000;
	cr_assert_eq(push(&p, 123456, true, IDR, 3), 1);
	cr_assert_eq(p.units[0].pts, 8200 + 3600); /* a step after the last timestamp */
	cr_assert_eq(push(&p, 127056, true, P, 3), 1);
	cr_assert_eq(p.units[0].pts, 8200 + 2 * 3600);
	cr_assert_eq(p.d.dropped, 0);
	fbd_rtp_depay_clear(&p.d);
	/* No step seen yet: 3000 (30 fps at 90 kHz). */
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	push_unit(&p, 500, IDR, 1);
	p.ssrc = 0x01020304;
	cr_assert_eq(push(&p, 9, true, IDR, 3), 1);
	cr_assert_eq(p.units[0].pts, 3500);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, empty_payloads_are_passed_over)
{
	for (uint32_t codec = FBD_RTP_H264; codec <= FBD_RTP_H265; codec++) {
		struct packets p = {0};
		fbd_rtp_depay_init(&p.d, codec, PT);
		const char *idr = codec == FBD_RTP_H265 ? "\x26\x01\xaf" : IDR;
		/* Zero bytes, and padding alone, inside an access unit... */
		cr_assert_eq(push(&p, 0, false, idr, 3), 0);
		cr_assert_eq(push(&p, 0, false, "", 0), 0);
		p.padding = 4;
		cr_assert_eq(push(&p, 0, false, "", 0), 0);
		cr_assert_eq(push(&p, 0, true, "", 0), 1); /* ...its marker bit ends it */
		cr_assert_eq(p.units[0].size, 7);
		/* ...and alone (no gap in the sequence numbers). */
		p.padding = 1;
		cr_assert_eq(push(&p, 3000, true, "", 0), 0);
		cr_assert_eq(push(&p, 6000, true, idr, 3), 1);
		cr_assert_eq(p.d.dropped, 0);
		fbd_rtp_depay_clear(&p.d);
	}
}

Test(rtp, h265_after_a_wait_ended_on_a_cra_its_rasl_pictures_are_held_back)
{
	struct packets p = {0};
	fbd_rtp_depay_init(&p.d, FBD_RTP_H265, PT);
	/* Joined at a CRA: the decoder skips its RASL pictures itself. */
	cr_assert_eq(push(&p, 0, true, "\x2a\x01\xaf\x01", 4), 1);    /* CRA */
	cr_assert_eq(push(&p, 3000, true, "\x10\x01\xd0\x02", 4), 1); /* RASL_N */
	cr_assert_eq(push(&p, 6000, true, "\x02\x01\xd0\x03", 4), 1); /* TRAIL_R */
	p.seq++;                                                      /* lost */
	cr_assert_eq(push(&p, 12000, true, "\x02\x01\xd0\x04", 4), 0);
	cr_assert_eq(push(&p, 15000, true, "\x2a\x01\xaf\x05", 4), 1); /* CRA */
	cr_assert_eq(push(&p, 18000, true, "\x12\x01\xd0\x06", 4), 0); /* RASL_R */
	cr_assert_eq(push(&p, 21000, true, "\x10\x01\xd0\x07", 4), 0); /* RASL_N */
	cr_assert_eq(push(&p, 24000, true, "\x02\x01\xd0\x08", 4), 1);
	cr_assert_eq(p.d.dropped, 4);
	/* After an IDR, nothing more is held back. */
	p.seq++;
	cr_assert_eq(push(&p, 30000, true, "\x26\x01\xaf\x09", 4), 1); /* IDR_W_RADL */
	cr_assert_eq(push(&p, 33000, true, "\x02\x01\xd0\x0a", 4), 1);
	cr_assert_eq(p.d.dropped, 5);
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
	memcpy(fragment, "\x7c\x85\x80", 3);
	cr_assert_eq(push(&p, 0, false, fragment, sizeof(fragment)), 0);
	fragment[1] = 0x05;
	for (int i = 0; i < 1000 && r == 0; i++)
		r = push(&p, 0, false, fragment, sizeof(fragment));
	cr_assert_eq(r, -EMSGSIZE);
	cr_assert(strstr(p.why, "an access unit over 16777216 bytes"), "%s", p.why);
	fbd_rtp_depay_clear(&p.d);
}

Test(rtp, out_of_memory_is_an_error_saying_so)
{
	static uint8_t fragment[30002];
	struct packets p = {0};
	int r = 0;
	fbd_rtp_depay_init(&p.d, FBD_RTP_H264, PT);
	av_max_alloc(100000); /* libavutil's allocations over it fail */
	memcpy(fragment, "\x7c\x85\x80", 3);
	for (int i = 0; i < 10 && r == 0; i++, fragment[1] = 0x05)
		r = push(&p, 0, false, fragment, sizeof(fragment));
	cr_assert_eq(r, -ENOMEM);
	cr_assert(strstr(p.why, "out of memory for an access unit of"), "%s", p.why);
	fbd_rtp_depay_clear(&p.d);
}
