/* SPDX-License-Identifier: MIT */
/* framebusd's RTSP 1.0 client (RFC 2326): the video track of an rtsp://
 * URL as RTP packets over the RTSP connection (TCP interleaved), for
 * H.264 and H.265 (rtp.c makes them access units).  The parsers of its
 * responses and SDP are apart for fuzzing. */
#ifndef FBD_RTSP_H
#define FBD_RTSP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest response (headers and body) accepted. */
#define FBD_RTSP_MAX_MESSAGE 65536
#define FBD_RTSP_MAX_URL 1024
#define FBD_RTSP_MAX_EXTRADATA 4096

/* What the client uses of a response's headers (or of a request's from the
 * server: method set, status 0). */
struct fbd_rtsp_response {
	char method[32]; /* a request's method, "" in a response */
	int status;
	int cseq; /* -1: none */
	size_t content_length;
	char content_base[FBD_RTSP_MAX_URL]; /* Content-Base, else Content-Location */
	char location[FBD_RTSP_MAX_URL];     /* Location (a redirect) */
	char session[256];                   /* Session's id */
	uint32_t session_timeout;            /* Session's timeout=, s; 0: none */
	char transport[256];                 /* Transport */
	char public_methods[256];            /* Public (OPTIONS) */
	/* The parameters of the first WWW-Authenticate: Digest challenge
	 * fbd_rtsp_parse_digest() takes, else of the first one. */
	char digest[1024];
	bool basic; /* WWW-Authenticate: Basic offered */
};

/* A Digest challenge (RFC 2617), as the client uses it. */
struct fbd_rtsp_digest {
	char realm[256], nonce[256], opaque[256];
	bool qop_auth; /* qop=auth offered (and then used) */
	bool stale;    /* stale=true: the nonce expired, the credentials were right */
};

/* The longest Authorization header: a Digest answer with every field at its
 * limit (the URL, realm, nonce, opaque, user). */
#define FBD_RTSP_MAX_AUTHORIZATION (FBD_RTSP_MAX_URL + 4 * 256 + 256)

/* The SDP's first video track, if framebusd's client takes it. */
struct fbd_rtsp_video {
	uint32_t codec; /* enum fbd_rtp_codec */
	int payload_type;
	uint32_t clock_rate;
	char control[FBD_RTSP_MAX_URL];         /* the track's a=control, "" if none */
	char session_control[FBD_RTSP_MAX_URL]; /* the session's a=control, "" if none */
	/* Its parameter sets from sprop-*, Annex B: the decoder's extradata. */
	uint8_t extradata[FBD_RTSP_MAX_EXTRADATA];
	size_t extradata_size;
};

/* The size of a message's head in data: its first line and headers up to
 * and with the empty line that ends them (the first one, whether its lines
 * end in CRLF or, as some cameras send, LF alone), or 0 if it has not all
 * come. */
size_t fbd_rtsp_head_size(const uint8_t *data, size_t size);

/* Parse a response's status line and headers (size bytes, up to and with
 * the empty line), or a request's from the server ("METHOD URI RTSP/1.0"
 * and headers): header names in any case.  Returns 0, or -EPROTO with the
 * reason in why. */
int fbd_rtsp_parse_response(const char *head, size_t head_size,
			    struct fbd_rtsp_response *ret_response, char *why, size_t size);

/* Parse a Digest challenge: a response's digest (WWW-Authenticate's
 * parameters after "Digest ").  Returns 0, -EPROTO without realm or nonce,
 * or -ENOTSUP for what the client does not do (an algorithm other than MD5:
 * MD5-sess, SHA-256...; a qop without auth), with the reason in why. */
int fbd_rtsp_parse_digest(const char *challenge, struct fbd_rtsp_digest *ret_digest, char *why,
			  size_t size);

/* Parse an SDP (RFC 4566): lines that are no "x=..." (with a NUL, say) are
 * skipped, trailing NULs and blanks too.  Returns 0, -ENOTSUP if it has no
 * video this client takes (why names what it has: FFmpeg may read it), or
 * -EPROTO for a malformed video description, with the reason in why. */
int fbd_rtsp_parse_sdp(const char *sdp, size_t sdp_size, struct fbd_rtsp_video *ret_video,
		       char *why, size_t size);

/* The Authorization header (RFC 2617, with its CRLF) answering challenge d
 * for a request (method, uri) as user with password; with qop=auth, nc
 * and cnonce are its count and client nonce.  Returns 0, or -EINVAL with
 * the reason in why if it would not fit out_size (or its hashed texts
 * their limit): never a cut header. */
int fbd_rtsp_digest_authorization(const struct fbd_rtsp_digest *d, const char *user,
				  const char *password, const char *method, const char *uri,
				  uint32_t nc, const char *cnonce, char *out, size_t out_size,
				  char *why, size_t size);

struct fbd_rtsp;

/* Connect to url, authenticate if asked (Basic, Digest; the URL's
 * user:password), DESCRIBE, SETUP its video over TCP, PLAY.  Every wait
 * looks at *stop every 100 ms (then -ECANCELED), stores fb_now_ns() in
 * *alive_ns, and gives up after stall_timeout_ns without a byte
 * (-ETIMEDOUT).  Returns 0, or -errno with the reason in why: -ENOTSUP when
 * FFmpeg may do what this cannot (no H.264/H.265 video, no TCP transport),
 * -EACCES for credentials refused (401). */
int fbd_rtsp_open(const char *url, const atomic_bool *stop, _Atomic uint64_t *alive_ns,
		  uint64_t stall_timeout_ns, struct fbd_rtsp **ret_client, char *why, size_t size);

const struct fbd_rtsp_video *fbd_rtsp_video(const struct fbd_rtsp *c);

/* The next RTP packet of the video (first those that came before PLAY's
 * answer, kept), valid until the next call; RTCP and the
 * answers to its keepalives are read and dropped on the way (a Digest
 * camera's 401 with stale=true to a keepalive: the keepalive is sent again
 * once with the new nonce; any other refusal: fbd_rtsp_take_notice()).  Returns 0, or
 * -errno with the reason in why (-ECANCELED as above; -ETIMEDOUT after
 * stall_timeout_ns without a video packet: RTCP and answers do not count;
 * -EPROTO for bytes that are no RTSP, -ECONNRESET when the camera closed). */
int fbd_rtsp_read(struct fbd_rtsp *c, const uint8_t **ret_packet, size_t *ret_len, char *why,
		  size_t size);

/* Something the caller should log once (a keepalive the camera refused,
 * and why: the session may time out), new since the last call: true and
 * its text, else false. */
bool fbd_rtsp_take_notice(struct fbd_rtsp *c, char *text, size_t size);

/* TEARDOWN and close.  Accepts NULL. */
void fbd_rtsp_close(struct fbd_rtsp *c);

#endif
