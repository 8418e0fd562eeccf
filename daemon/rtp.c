/* SPDX-License-Identifier: MIT */
/* RTP H.264 (RFC 6184, non-interleaved mode) and H.265 (RFC 7798, without
 * DONL) into Annex B access units. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtp.h"
#include "why.h"

static const uint8_t start_code[4] = {0, 0, 0, 1};

void fbd_rtp_depay_init(struct fbd_rtp_depay *d, uint32_t codec, int payload_type)
{
	*d = (struct fbd_rtp_depay){.codec = codec, .payload_type = payload_type};
}

void fbd_rtp_depay_clear(struct fbd_rtp_depay *d)
{
	av_buffer_unref(&d->building.ref);
	av_buffer_unref(&d->done[0].ref);
	av_buffer_unref(&d->done[1].ref);
	fbd_rtp_depay_init(d, d->codec, d->payload_type);
}

static int append(struct fbd_rtp_buffer *b, const uint8_t *p, size_t n, char *why, size_t size)
{
	if (!n)
		return 0;
	if (n > FBD_RTP_MAX_ACCESS_UNIT - b->len)
		return fbd_fail(why, size, -EMSGSIZE, "an access unit over %u bytes",
				FBD_RTP_MAX_ACCESS_UNIT);
	size_t cap = b->ref ? b->ref->size - FBD_RTP_PADDING : 0;
	if (b->len + n > cap) {
		cap = cap ? cap : 65536;
		while (cap < b->len + n)
			cap *= 2;
		/* The building buffer is never shared: this grows it in place
		 * or moves it. */
		if (av_buffer_realloc(&b->ref, cap + FBD_RTP_PADDING) < 0)
			return fbd_fail(why, size, -ENOMEM,
					"out of memory for an access unit of %zu bytes",
					b->len + n);
	}
	memcpy(b->ref->data + b->len, p, n);
	b->len += n;
	return 0;
}

/* Packets were lost: an access unit is dropped, and if it may have been a
 * reference picture, those after it, which may refer to it, wait for a
 * keyframe. */
static void lose(struct fbd_rtp_depay *d, bool reference)
{
	if (!d->joining)
		d->dropped++;
	if (reference && !d->waiting) {
		d->waiting = true;
		d->waiting_since = d->unwrapped;
	}
}

/* An RBSP's next byte, its emulation prevention bytes (00 00 03) passed
 * over; -1 at its end. */
struct rbsp {
	const uint8_t *p;
	size_t n, i;
	int zeros;
};

static int rbsp_byte(struct rbsp *r)
{
	if (r->zeros >= 2 && r->i < r->n && r->p[r->i] == 3) {
		r->i++;
		r->zeros = 0;
	}
	if (r->i >= r->n)
		return -1;
	uint8_t b = r->p[r->i++];
	r->zeros = b ? 0 : r->zeros + 1;
	return b;
}

/* An ff-coded SEI payloadType or payloadSize (H.264 7.3.2.3.1), -1 at the end. */
static long sei_value(struct rbsp *r)
{
	long v = 0;
	int b;
	while ((b = rbsp_byte(r)) == 0xff)
		v += 255;
	return b < 0 ? -1 : v + b;
}

/* Whether an SEI NAL unit's payload (after its header), as far as it
 * came, has a recovery point (payloadType 6 in H.264 and H.265): the
 * pictures from it on are whole (intra refresh sends no IDR). */
static bool recovery_point(const uint8_t *p, size_t n)
{
	struct rbsp r = {.p = p, .n = n};
	for (;;) {
		long type = sei_value(&r), len = type < 0 ? -1 : sei_value(&r);
		if (type == 6)
			return true;
		for (; len > 0; len--)
			if (rbsp_byte(&r) < 0)
				return false;
		if (len < 0)
			return false;
	}
}

/* What a NAL unit (header h, then p: its start, for a fragment) says of
 * its access unit; and, first in an access unit that may not have come
 * whole, whether it starts one.  A slice's first bit after its NAL header
 * is set in a picture's first slice (H.264's first_mb_in_slice == 0,
 * H.265's first_slice_segment_in_pic_flag). */
static void note_nal(struct fbd_rtp_depay *d, const uint8_t *h, size_t hn, const uint8_t *p,
		     size_t n)
{
	bool h265 = d->codec == FBD_RTP_H265;
	size_t header = h265 ? 2 : 1;
	if (!p) { /* the whole NAL unit in h */
		if (hn < header)
			return;
		p = h + header;
		n = hn - header;
	}
	unsigned type = h265 ? (h[0] >> 1) & 0x3f : h[0] & 0x1fu;
	bool first_slice = n > 0 && p[0] & 0x80;
	bool vcl, key, reference, starts;
	if (h265) {
		vcl = type <= 31;
		key = (type >= 16 && type <= 21) || (type == 39 && recovery_point(p, n));
		reference = vcl && (type >= 16 || type % 2); /* _N types: even, below 16 */
		/* 7.4.2.4.4: what may come first in an access unit */
		starts =
		    vcl ? first_slice
			: (type >= 32 && type <= 35) || type == 39 || (type >= 41 && type <= 44);
	} else {
		vcl = type >= 1 && type <= 5;
		key = type == 5 || (type == 6 && recovery_point(p, n));
		reference = vcl && h[0] & 0x60; /* nal_ref_idc */
		/* 7.4.1.2.3; data partitions B and C (3, 4) have no first_mb_in_slice */
		starts = type == 1 || type == 2 || type == 5 ? first_slice : type >= 6 && type <= 9;
	}
	d->unit_vcl = d->unit_vcl || vcl;
	d->unit_reference = d->unit_reference || reference;
	d->unit_key = d->unit_key || key;
	d->unit_cra = d->unit_cra || (h265 && type == 21);
	d->unit_rasl = d->unit_rasl || (h265 && (type == 8 || type == 9));
	if (d->unchecked) {
		d->unchecked = false;
		if (!starts)
			d->broken = true; /* its start was lost */
		else if (d->lost_before)
			lose(d, true); /* whole ones were: which, nobody knows */
		d->lost_before = false;
	}
}

/* One NAL unit, its header given apart (a fragment's is rebuilt). */
static int append_nal(struct fbd_rtp_depay *d, const uint8_t *header, size_t header_len,
		      const uint8_t *p, size_t n, char *why, size_t size)
{
	note_nal(d, header, header_len, p, n);
	int r = append(&d->building, start_code, sizeof(start_code), why, size);
	if (r >= 0)
		r = append(&d->building, header, header_len, why, size);
	if (r >= 0)
		r = append(&d->building, p, n, why, size);
	return r;
}

/* An aggregation packet's NAL units: each after its 16-bit size. */
static int append_aggregate(struct fbd_rtp_depay *d, const uint8_t *p, size_t n, char *why,
			    size_t size)
{
	while (n > 0) {
		if (n < 2)
			return fbd_fail(why, size, -EPROTO,
					"an aggregation packet ends inside a size");
		size_t nal = (size_t)p[0] << 8 | p[1];
		if (nal == 0 || nal > n - 2)
			return fbd_fail(why, size, -EPROTO,
					"an aggregation packet's NAL unit of %zu bytes in %zu", nal,
					n - 2);
		int r = append_nal(d, p + 2, nal, NULL, 0, why, size);
		if (r < 0)
			return r;
		p += 2 + nal;
		n -= 2 + nal;
	}
	return 0;
}

/* One fragment of a NAL unit: the first starts it with its rebuilt header. */
static int append_fragment(struct fbd_rtp_depay *d, bool first, bool last, const uint8_t *header,
			   size_t header_len, const uint8_t *p, size_t n, char *why, size_t size)
{
	int r;
	if (first) {
		if (d->in_fragment)
			d->broken = true; /* the previous one's end was lost */
		r = append_nal(d, header, header_len, p, n, why, size);
	} else if (!d->in_fragment) {
		d->broken = true; /* its start was lost, or came before we joined */
		r = 0;
	} else {
		r = append(&d->building, p, n, why, size);
	}
	d->in_fragment = !last;
	return r;
}

/* A payload of n > 0 bytes. */
static int payload_h264(struct fbd_rtp_depay *d, const uint8_t *p, size_t n, char *why, size_t size)
{
	static const char *const interleaved[] = {
	    [25] = "STAP-B", [26] = "MTAP16", [27] = "MTAP24", [29] = "FU-B"};
	unsigned type = p[0] & 0x1f;
	if (type >= 1 && type <= 23)
		return append_nal(d, p, n, NULL, 0, why, size);
	if (type == 24)
		return append_aggregate(d, p + 1, n - 1, why, size);
	if (type == 28) {
		if (n < 2)
			return fbd_fail(why, size, -EPROTO, "an H.264 FU-A packet of %zu bytes", n);
		uint8_t header = (uint8_t)((p[0] & 0xe0) | (p[1] & 0x1f));
		return append_fragment(d, p[1] & 0x80, p[1] & 0x40, &header, 1, p + 2, n - 2, why,
				       size);
	}
	if (type == 25 || type == 26 || type == 27 || type == 29)
		return fbd_fail(why, size, -EPROTO,
				"H.264 RTP packets of type %u (%s, interleaved packetization mode) "
				"are not supported",
				type, interleaved[type]);
	return 0; /* 0, 30, 31: reserved, ignored (RFC 6184 5.2) */
}

static int payload_h265(struct fbd_rtp_depay *d, const uint8_t *p, size_t n, char *why, size_t size)
{
	if (n < 2)
		return fbd_fail(why, size, -EPROTO, "an H.265 RTP payload of %zu bytes", n);
	unsigned type = (p[0] >> 1) & 0x3f;
	if (type <= 47)
		return append_nal(d, p, n, NULL, 0, why, size);
	if (type == 48)
		return append_aggregate(d, p + 2, n - 2, why, size);
	if (type == 49) {
		if (n < 3)
			return fbd_fail(why, size, -EPROTO, "an H.265 FU packet of %zu bytes", n);
		uint8_t header[2] = {(uint8_t)((p[0] & 0x81) | (p[2] & 0x3f) << 1), p[1]};
		return append_fragment(d, p[2] & 0x80, p[2] & 0x40, header, 2, p + 3, n - 3, why,
				       size);
	}
	if (type == 50)
		return fbd_fail(why, size, -EPROTO, "H.265 PACI RTP packets are not supported");
	return 0; /* 51-63: unspecified, ignored (RFC 7798 4.4) */
}

static void reset_unit(struct fbd_rtp_depay *d)
{
	d->building.len = 0;
	d->broken = d->in_fragment = false;
	d->unit_vcl = d->unit_reference = d->unit_key = d->unit_cra = d->unit_rasl = false;
}

/* The access unit gathered so far ends: dropped if a packet of it was lost
 * (a loss: lose()); held back if a reference picture before it was and it
 * is no keyframe; else handed out. */
static void end_unit(struct fbd_rtp_depay *d, bool ended_here, struct fbd_rtp_access_unit *units,
		     int *n)
{
	if (d->broken) {
		/* Of a picture that is no reference (as far as its packets
		 * that came say), the next ones do not need it. */
		lose(d, !d->unit_vcl || d->unit_reference);
		d->lost_before = false;
	} else if (d->building.len) {
		/* Parameter sets and SEI alone are handed out: the decoder
		 * needs them for the keyframe it waits for. */
		bool hold = d->waiting && d->unit_vcl;
		if (hold && (d->unit_key || d->unwrapped - d->waiting_since >= FBD_RTP_MAX_WAIT)) {
			d->waiting = hold = false;
			d->after_cra = d->unit_cra && !d->joining;
		} else if (!hold && d->after_cra && d->unit_vcl) {
			hold = d->after_cra = d->unit_rasl;
		}
		if (hold) {
			if (!d->joining)
				d->dropped++;
		} else {
			struct fbd_rtp_buffer out = d->done[*n];
			d->done[*n] = d->building;
			d->building = out;
			/* Built in again only when nobody else holds it (a
			 * decoder may still hold an access unit handed out
			 * before). */
			if (d->building.ref && !av_buffer_is_writable(d->building.ref))
				av_buffer_unref(&d->building.ref);
			struct fbd_rtp_buffer *b = &d->done[*n];
			memset(b->ref->data + b->len, 0, FBD_RTP_PADDING);
			units[*n] = (struct fbd_rtp_access_unit){
			    .data = b->ref->data,
			    .size = b->len,
			    .buf = b->ref,
			    .pts = d->unwrapped,
			    .ended_here = ended_here,
			};
			(*n)++;
			d->joining = d->joining && !d->unit_vcl;
		}
	}
	reset_unit(d);
}

int fbd_rtp_depay_push(struct fbd_rtp_depay *d, const uint8_t *packet, size_t len,
		       struct fbd_rtp_access_unit ret_units[2], char *why, size_t size)
{
	if (len < 12)
		return fbd_fail(why, size, -EPROTO, "an RTP packet of %zu bytes", len);
	if (packet[0] >> 6 != 2)
		return fbd_fail(why, size, -EPROTO, "an RTP packet of version %d", packet[0] >> 6);
	size_t header = 12 + 4 * (size_t)(packet[0] & 0x0f);
	if (packet[0] & 0x10) { /* an extension: its 16-bit length counts words */
		if (len < header + 4)
			return fbd_fail(why, size, -EPROTO, "an RTP packet ends in its extension");
		header += 4 + 4 * ((size_t)packet[header + 2] << 8 | packet[header + 3]);
	}
	size_t padding = packet[0] & 0x20 ? packet[len - 1] : 0;
	if (header > len || padding > len - header)
		return fbd_fail(why, size, -EPROTO,
				"an RTP packet of %zu bytes with %zu of header and %zu of padding",
				len, header, padding);
	bool marker = packet[1] & 0x80;
	int pt = packet[1] & 0x7f;
	if (pt != d->payload_type)
		return fbd_fail(why, size, -EPROTO,
				"an RTP packet of payload type %d, not %d as the SDP said", pt,
				d->payload_type);
	uint16_t seq = (uint16_t)(packet[2] << 8 | packet[3]);
	uint32_t ts = (uint32_t)packet[4] << 24 | (uint32_t)packet[5] << 16 |
		      (uint32_t)packet[6] << 8 | packet[7];
	uint32_t ssrc = (uint32_t)packet[8] << 24 | (uint32_t)packet[9] << 16 |
			(uint32_t)packet[10] << 8 | packet[11];
	int n = 0;

	if (!d->started || ssrc != d->ssrc) {
		/* The first packet, or the sender started again: what was
		 * gathered cannot be completed, the timestamps go on from
		 * where they were, a frame later (the last timestamp step,
		 * or 3000: 30 fps at 90 kHz; not the same pts again, which
		 * source.c would take for the last frame's arrival).  Joining
		 * a live stream may fall in the middle of an access unit, or
		 * of a GOP: the first one handed out is a whole keyframe, and
		 * what comes before it was not lost. */
		reset_unit(d);
		d->unwrapped = d->started ? d->unwrapped + (d->step ? d->step : 3000) : ts;
		d->unchecked = d->waiting = d->joining = true;
		d->lost_before = false;
		d->waiting_since = d->unwrapped;
		d->started = true;
		d->ssrc = ssrc;
		d->timestamp = ts;
	} else {
		bool gap = seq != d->next_seq;
		if (ts != d->timestamp) {
			/* The lost packets were the end of the access unit in
			 * progress (no marker bit came), whole access units, or
			 * the start of this one: its first NAL unit tells. */
			bool partial = d->building.len || d->in_fragment || d->broken;
			if (gap && partial)
				d->broken = true;
			end_unit(d, false, ret_units, &n);
			int32_t step = (int32_t)(ts - d->timestamp);
			d->unwrapped += step;
			if (step > 0)
				d->step = step;
			d->timestamp = ts;
			if (gap) {
				d->unchecked = true;
				d->lost_before = !partial;
			}
		} else if (gap) {
			d->broken = true;
		}
	}
	d->next_seq = (uint16_t)(seq + 1);
	const uint8_t *p = packet + header;
	size_t plen = len - header - padding;
	/* An empty payload (some cameras send them, padding alone) carries
	 * nothing: its sequence number and marker bit count. */
	if (!d->broken && plen > 0) {
		int r = d->codec == FBD_RTP_H265 ? payload_h265(d, p, plen, why, size)
						 : payload_h264(d, p, plen, why, size);
		if (r < 0)
			return r;
	}
	if (marker)
		end_unit(d, true, ret_units, &n);
	return n;
}
