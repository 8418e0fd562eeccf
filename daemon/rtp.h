/* SPDX-License-Identifier: MIT */
/* RTP depacketizer for H.264 (RFC 6184) and H.265 (RFC 7798): RTP packets
 * in, Annex B access units out, each ended by its last packet's marker bit
 * (or, for senders that never set it, by the next packet's new timestamp).
 * A lost packet drops its access unit and holds back the pictures after it
 * until a keyframe (they refer to what was lost).
 * A pure function of the packets it is given: no I/O, no clock.  Each
 * access unit is built in a refcounted buffer (libavutil's AVBufferRef),
 * padded with AV_INPUT_BUFFER_PADDING_SIZE zeros as libavcodec wants its
 * packets: a decoder takes it as it is, without a copy. */
#ifndef FBD_RTP_H
#define FBD_RTP_H

#include <libavutil/buffer.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest access unit accepted: a 4K keyframe at a camera's highest
 * quality is a few MiB. */
#define FBD_RTP_MAX_ACCESS_UNIT (16u << 20)

enum fbd_rtp_codec {
	FBD_RTP_H264 = 0,
	FBD_RTP_H265,
};

/* The zeros after each access unit (libavcodec's AV_INPUT_BUFFER_PADDING_SIZE,
 * which is 64 in every FFmpeg this builds with: held by a static assert in
 * source.c, where libavcodec is). */
#define FBD_RTP_PADDING 64

struct fbd_rtp_buffer {
	AVBufferRef *ref; /* NULL: none yet; its size: the capacity and the padding */
	size_t len;
};

/* How long whole access units are held back waiting for a keyframe after
 * a loss, in pts: 10 s of the 90 kHz clock H.264 and H.265 RTP use (RFC
 * 6184 5.1, RFC 7798 4.1).  A camera that sends none for that long (a GOP
 * over 10 s, intra refresh without recovery point SEI) is not frozen. */
#define FBD_RTP_MAX_WAIT (10 * 90000)

struct fbd_rtp_depay {
	uint32_t codec; /* enum fbd_rtp_codec */
	int payload_type;
	/* The access unit being gathered, and those last returned. */
	struct fbd_rtp_buffer building, done[2];
	bool started;     /* a packet came: seq, ssrc and timestamp are known */
	bool broken;      /* a packet of the access unit was lost: it is dropped */
	bool in_fragment; /* inside a fragmented NAL unit (FU-A, FU) */
	/* What the access unit's NAL units said: a slice, a reference
	 * picture's, a keyframe (IDR, IRAP, a recovery point SEI). */
	bool unit_vcl, unit_reference, unit_key;
	bool unit_cra, unit_rasl; /* H.265: a CRA picture, a RASL one */
	/* The next NAL unit must start an access unit (a parameter set, SEI,
	 * AUD or a picture's first slice), else its access unit is broken: at
	 * the start, after a new SSRC, after a gap before a new timestamp. */
	bool unchecked;
	bool lost_before; /* ...and if it does, whole access units were lost before it */
	/* A reference picture was lost (or none came yet): access units with
	 * slices are held back until a keyframe, or FBD_RTP_MAX_WAIT after
	 * waiting_since. */
	bool waiting;
	bool joining; /* no picture handed out since the start or a new SSRC: not counted */
	/* The wait ended on a CRA: the RASL pictures after it (its leading
	 * pictures) refer to pictures before it, and are held back too
	 * (decoders skip them only after a CRA that starts the stream). */
	bool after_cra;
	int64_t waiting_since;
	uint16_t next_seq;
	uint32_t ssrc;
	uint32_t timestamp; /* the access unit's, as sent */
	int64_t unwrapped;  /* the same, unwrapped to 64 bits */
	int32_t step;       /* the last timestamp increase, 0: none yet */
	/* Access units not handed out because of a loss: lost (whole, or
	 * packets of them), or held back waiting for a keyframe (not counted
	 * while joining). */
	uint64_t dropped;
};

/* One access unit, valid until the next fbd_rtp_depay_push() or
 * fbd_rtp_depay_clear(); av_buffer_ref(buf) keeps it longer (the
 * depacketizer then builds the next ones elsewhere). */
struct fbd_rtp_access_unit {
	const uint8_t *data; /* Annex B: each NAL unit after 00 00 00 01 */
	size_t size;         /* followed by FBD_RTP_PADDING zeros */
	AVBufferRef *buf;    /* the buffer data is in */
	int64_t pts;         /* the RTP timestamp unwrapped to 64 bits */
	/* true: its last packet is the one just pushed (marker bit); false:
	 * it ended before it (the pushed packet has a new timestamp). */
	bool ended_here;
};

/* A depacketizer for codec and RTP payload type payload_type.  The first
 * access unit with slices it hands out is a keyframe (or what comes
 * FBD_RTP_MAX_WAIT after the first packet): those before it, and a first
 * one that started before the first packet, are not handed out, nor
 * counted in dropped: nothing was lost.  The same again when the SSRC
 * changes (the sender started again). */
void fbd_rtp_depay_init(struct fbd_rtp_depay *d, uint32_t codec, int payload_type);

/* Take one RTP packet.  Returns how many access units it ended, 0 to 2 (a
 * new timestamp ends the previous one, its marker bit its own), in
 * ret_units[], oldest first, or -errno with the reason in why: -EPROTO for a malformed packet or a
 * packetization this does not support, -EMSGSIZE for an access unit over
 * FBD_RTP_MAX_ACCESS_UNIT, -ENOMEM. */
int fbd_rtp_depay_push(struct fbd_rtp_depay *d, const uint8_t *packet, size_t len,
		       struct fbd_rtp_access_unit ret_units[2], char *why, size_t size);

/* Free its buffers.  It can be initialised again. */
void fbd_rtp_depay_clear(struct fbd_rtp_depay *d);

#endif
