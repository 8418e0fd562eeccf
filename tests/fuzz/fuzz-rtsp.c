/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: framebusd's RTSP client's parsers (daemon/rtsp.c) on any
 * bytes a camera may answer: the input's head found, the input read as a response's head (and its
 * Digest challenge), as a Digest challenge itself (and answered), and as an SDP.  Besides crashes
 * it checks what is read: strings ended within their fields, the parameter sets' Annex B within
 * their limit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rtp.h"
#include "rtsp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ENDED(field) (memchr((field), 0, sizeof(field)) != NULL)

static void challenge(const char *text)
{
	struct fbd_rtsp_digest d;
	char why[256] = "";
	int e = fbd_rtsp_parse_digest(text, &d, why, sizeof(why));
	if (e == 0 && (!ENDED(d.realm) || !ENDED(d.nonce) || !ENDED(d.opaque) || !d.nonce[0]))
		abort();
	if (e < 0 && ((e != -EPROTO && e != -ENOTSUP) || !why[0]))
		abort();
	if (e < 0)
		return;
	/* Its answer, for the text itself as the URL: whole or an error. */
	char out[FBD_RTSP_MAX_AUTHORIZATION];
	why[0] = 0;
	e = fbd_rtsp_digest_authorization(&d, "user", "password", "DESCRIBE", text, 1,
					  "0123456789abcdef", out, sizeof(out), why, sizeof(why));
	size_t n = e == 0 ? strlen(out) : 0;
	if ((e == 0 && (n < 2 || strcmp(out + n - 2, "\r\n"))) ||
	    (e < 0 && (e != -EINVAL || !why[0])))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fbd_rtsp_response r;
	struct fbd_rtsp_video v;
	char why[256] = "";

	size_t head = fbd_rtsp_head_size(data, size);
	if (head > size || (head && (head < 2 || data[head - 1] != '\n')))
		abort();
	int e = fbd_rtsp_parse_response((const char *)data, size, &r, why, sizeof(why));
	if (e == 0 && (!ENDED(r.method) || (r.method[0] && r.status) || !ENDED(r.content_base) ||
		       !ENDED(r.location) || !ENDED(r.session) || !ENDED(r.transport) ||
		       !ENDED(r.public_methods) || !ENDED(r.digest) || r.status < 0 ||
		       r.status > 999 || r.content_length > FBD_RTSP_MAX_MESSAGE))
		abort();
	if (e < 0 && (e != -EPROTO || !why[0]))
		abort();
	if (e == 0)
		challenge(r.digest);
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = 0;
	challenge(text);
	free(text);
	why[0] = 0;
	e = fbd_rtsp_parse_sdp((const char *)data, size, &v, why, sizeof(why));
	if (e == 0 &&
	    (!ENDED(v.control) || !ENDED(v.session_control) ||
	     v.extradata_size > sizeof(v.extradata) || v.payload_type < 0 || v.payload_type > 127 ||
	     !v.clock_rate || (v.codec != FBD_RTP_H264 && v.codec != FBD_RTP_H265) ||
	     (v.extradata_size && memcmp(v.extradata, "\0\0\0\1", 4))))
		abort();
	if (e < 0 && ((e != -EPROTO && e != -ENOTSUP) || !why[0]))
		abort();
	return 0;
}
