/* SPDX-License-Identifier: MIT */
/* An RTSP 1.0 client (RFC 2326) for one video track over TCP interleaved
 * RTP: OPTIONS, DESCRIBE, SETUP, PLAY, keepalives, TEARDOWN; Basic and
 * Digest authentication (RFC 2617). */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libavutil/base64.h>
#include <libavutil/md5.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ring-private.h"
#include "rtp.h"
#include "rtsp.h"
#include "why.h"

/* How often a wait looks at the stop flag. */
#define POLL_MS 100
/* A session without timeout= times out after 60 s (RFC 2326 12.37). */
#define DEFAULT_SESSION_TIMEOUT 60
#define USER_AGENT "framebusd"
/* The most of the video packets that come before PLAY's answer kept. */
#define MAX_EARLY (4u << 20)

enum auth { AUTH_NONE = 0, AUTH_BASIC, AUTH_DIGEST };

struct fbd_rtsp {
	int fd;
	const atomic_bool *stop;
	_Atomic uint64_t *alive_ns;
	uint64_t stall_ns;
	uint64_t last_rx_ns;
	char url[FBD_RTSP_MAX_URL]; /* without user:password@ */
	char host[256], port[16];
	char user[128], password[128];
	char session_url[FBD_RTSP_MAX_URL]; /* PLAY, keepalives, TEARDOWN */
	int cseq;
	char session[256];
	uint64_t keepalive_ns, next_keepalive_ns; /* 0: not playing */
	bool get_parameter;                       /* the server has GET_PARAMETER */
	int channel;                              /* the RTP's interleaved channel */
	enum auth auth;
	struct fbd_rtsp_digest digest;
	uint32_t nc;
	/* The last keepalive: its CSeq, whether it was sent again after a
	 * stale nonce; the status of the last refusal told
	 * (fbd_rtsp_take_notice()), and one not yet told. */
	int keepalive_cseq;
	bool keepalive_again;
	int refused_status;
	char notice[256];
	struct fbd_rtsp_video video;
	/* Video packets that came before PLAY's answer, each after its
	 * 16-bit length, for fbd_rtsp_read() to return first (joining in the
	 * middle of a keyframe would cost the GOP). */
	uint8_t *early;
	size_t early_off, early_len;
	size_t in_off, in_len;
	uint8_t in[2 * (FBD_RTSP_MAX_MESSAGE + 4)];
};

/* Copy a value of n bytes into a field, or false if it does not fit. */
static bool copy(char *dst, size_t dst_size, const char *src, size_t n)
{
	if (n >= dst_size)
		return false;
	memcpy(dst, src, n);
	dst[n] = 0;
	return true;
}

static bool name_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && !strncasecmp(name, want, n);
}

/* The value of parameter key in "a=1;key=2" or "k=v, key=\"v\"" lists
 * (sep ';' or ','), unquoted into out; false if absent or too long. */
static bool param(const char *list, char sep, const char *key, char *out, size_t out_size)
{
	size_t klen = strlen(key);
	const char *p = list;
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == sep)
			p++;
		const char *name = p;
		while (*p && *p != '=' && *p != sep)
			p++;
		size_t nlen = (size_t)(p - name);
		while (nlen && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t'))
			nlen--;
		const char *value = p, *end = p;
		if (*p == '=') {
			p++;
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p == '"') {
				value = ++p;
				while (*p && *p != '"')
					p++;
				end = p;
				if (*p)
					p++;
				while (*p && *p != sep)
					p++;
			} else {
				value = p;
				while (*p && *p != sep)
					p++;
				end = p;
				while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
					end--;
			}
		}
		if (nlen == klen && !strncasecmp(name, key, klen))
			return copy(out, out_size, value, (size_t)(end - value));
	}
	return false;
}

/* "RTSP/1.x NNN reason": its status into r. */
static bool status_line(const char *line, size_t n, struct fbd_rtsp_response *r)
{
	char status[4];
	if (n < 12 || strncmp(line, "RTSP/1.", 7) || line[8] != ' ' ||
	    !isdigit((unsigned char)line[9]) || !isdigit((unsigned char)line[10]) ||
	    !isdigit((unsigned char)line[11]) || (n > 12 && line[12] != ' '))
		return false;
	copy(status, sizeof(status), line + 9, 3);
	r->status = atoi(status);
	return true;
}

/* "METHOD URI RTSP/1.x" (a request from the server): its method into r. */
static bool request_line(const char *line, size_t n, struct fbd_rtsp_response *r)
{
	size_t m = 0;
	while (m < n && (isupper((unsigned char)line[m]) || line[m] == '_'))
		m++;
	const char *uri = line + m + 1;
	const char *space = m && m < n && line[m] == ' ' ? memchr(uri, ' ', n - m - 1) : NULL;
	if (!space || space == uri || (size_t)(line + n - space) != 9 ||
	    strncmp(space, " RTSP/1.", 8) || !isdigit((unsigned char)space[8]))
		return false;
	return copy(r->method, sizeof(r->method), line, m);
}

/* The next line of a head at *p, without its end (CR LF or LF). */
static int head_line(const char **p, const char *end, const char **ret_line, size_t *ret_n,
		     char *why, size_t size)
{
	const char *eol = memchr(*p, '\n', (size_t)(end - *p));
	if (!eol)
		return fbd_fail(why, size, -EPROTO, "an RTSP response line without its end");
	size_t n = (size_t)(eol - *p);
	if (n && (*p)[n - 1] == '\r')
		n--;
	if (memchr(*p, 0, n))
		return fbd_fail(why, size, -EPROTO, "a NUL byte in an RTSP response");
	*ret_line = *p;
	*ret_n = n;
	*p = eol + 1;
	return 0;
}

size_t fbd_rtsp_head_size(const uint8_t *data, size_t size)
{
	for (const uint8_t *p = data, *end = data + size;
	     (p = memchr(p, '\n', (size_t)(end - p))) && ++p < end;) {
		if (*p == '\n')
			return (size_t)(p - data) + 1;
		if (*p == '\r' && p + 1 < end && p[1] == '\n')
			return (size_t)(p - data) + 2;
	}
	return 0;
}

int fbd_rtsp_parse_response(const char *head, size_t head_size,
			    struct fbd_rtsp_response *ret_response, char *why, size_t size)
{
	struct fbd_rtsp_response r = {.cseq = -1};
	const char *p = head, *end = head + head_size;
	bool first = true, digest_usable = false;
	char location[FBD_RTSP_MAX_URL] = "";

	while (p < end) {
		const char *line;
		size_t n;
		int err = head_line(&p, end, &line, &n, why, size);
		if (err < 0)
			return err;
		if (first) {
			if (!status_line(line, n, &r) && !request_line(line, n, &r))
				return fbd_fail(why, size, -EPROTO,
						"bytes that are no RTSP from the camera: '%.*s'",
						(int)(n < 80 ? n : 80), line);
			first = false;
			continue;
		}
		if (n == 0)
			break;
		if (line[0] == ' ' || line[0] == '\t')
			return fbd_fail(
			    why, size, -EPROTO,
			    "an RTSP header's continuation line without a header before it");
		const char *colon = memchr(line, ':', n);
		if (!colon)
			return fbd_fail(why, size, -EPROTO,
					"an RTSP header line without ':': '%.*s'",
					(int)(n < 80 ? n : 80), line);
		size_t nlen = (size_t)(colon - line);
		const char *v = colon + 1;
		size_t vlen = n - nlen - 1;
		while (vlen && (*v == ' ' || *v == '\t'))
			v++, vlen--;
		while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		/* A folded header (RFC 2326 takes HTTP/1.1's: lines that start
		 * with a blank continue it): its lines joined by a space.  Too
		 * long for joined is too long for any field kept. */
		char joined[2 * FBD_RTSP_MAX_URL];
		bool cut = false;
		while (p < end && (*p == ' ' || *p == '\t')) {
			const char *more;
			size_t m;
			if ((err = head_line(&p, end, &more, &m, why, size)) < 0)
				return err;
			while (m && (*more == ' ' || *more == '\t'))
				more++, m--;
			if (v != joined) {
				vlen = vlen < sizeof(joined) ? vlen : sizeof(joined);
				memcpy(joined, v, vlen);
				v = joined;
			}
			if (vlen < sizeof(joined))
				joined[vlen++] = ' ';
			size_t fit = sizeof(joined) - vlen < m ? sizeof(joined) - vlen : m;
			memcpy(joined + vlen, more, fit);
			vlen += fit;
			cut = cut || fit < m;
			while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				vlen--;
		}
		if (cut)
			vlen = sizeof(joined);
		bool ok = true;
		char number[24];
		if (name_is(line, nlen, "CSeq")) {
			char *e;
			ok = copy(number, sizeof(number), v, vlen);
			long cseq = ok ? strtol(number, &e, 10) : -1;
			ok = ok && vlen && !*e && cseq >= 0 && cseq <= 0x7fffffff;
			r.cseq = (int)cseq;
		} else if (name_is(line, nlen, "Content-Length")) {
			char *e;
			ok = copy(number, sizeof(number), v, vlen);
			unsigned long long len = ok ? strtoull(number, &e, 10) : 0;
			ok = ok && vlen && isdigit((unsigned char)number[0]) && !*e &&
			     len <= FBD_RTSP_MAX_MESSAGE;
			if (!ok)
				return fbd_fail(why, size, -EPROTO,
						"an RTSP Content-Length '%.*s' (at most %d)",
						(int)(vlen < 40 ? vlen : 40), v,
						FBD_RTSP_MAX_MESSAGE);
			r.content_length = (size_t)len;
		} else if (name_is(line, nlen, "Content-Base")) {
			ok = copy(r.content_base, sizeof(r.content_base), v, vlen);
		} else if (name_is(line, nlen, "Content-Location")) {
			ok = copy(location, sizeof(location), v, vlen);
		} else if (name_is(line, nlen, "Location")) {
			ok = copy(r.location, sizeof(r.location), v, vlen);
		} else if (name_is(line, nlen, "Session")) {
			char timeout[24];
			ok = copy(r.session, sizeof(r.session), v, vlen);
			if (ok && param(r.session, ';', "timeout", timeout, sizeof(timeout))) {
				long t = atol(timeout);
				r.session_timeout = t > 0 && t < 86400 ? (uint32_t)t : 0;
			}
			if (ok)
				r.session[strcspn(r.session, "; \t")] = 0;
		} else if (name_is(line, nlen, "Transport")) {
			ok = copy(r.transport, sizeof(r.transport), v, vlen);
		} else if (name_is(line, nlen, "Public")) {
			ok = copy(r.public_methods, sizeof(r.public_methods), v, vlen);
		} else if (name_is(line, nlen, "WWW-Authenticate")) {
			/* The first Digest challenge the client can answer (RFC
			 * 7616 cameras offer SHA-256 first, then MD5), else the
			 * first one: its parse says why not. */
			if (vlen >= 7 && !strncasecmp(v, "Digest ", 7) && !digest_usable) {
				struct fbd_rtsp_digest d;
				char challenge[sizeof(r.digest)], text[8];
				ok = copy(challenge, sizeof(challenge), v + 7, vlen - 7);
				digest_usable = ok && fbd_rtsp_parse_digest(challenge, &d, text,
									    sizeof(text)) == 0;
				if (ok && (digest_usable || !r.digest[0]))
					memcpy(r.digest, challenge, sizeof(r.digest));
			} else if (vlen >= 5 && !strncasecmp(v, "Basic", 5)) {
				r.basic = true;
			}
		}
		if (!ok)
			return fbd_fail(why, size, -EPROTO,
					"the RTSP header %.*s is too long or bad",
					(int)(nlen < 40 ? nlen : 40), line);
	}
	if (first)
		return fbd_fail(why, size, -EPROTO, "an empty RTSP response");
	if (!r.content_base[0])
		memcpy(r.content_base, location, sizeof(location));
	*ret_response = r;
	return 0;
}

int fbd_rtsp_parse_digest(const char *challenge, struct fbd_rtsp_digest *ret_digest, char *why,
			  size_t size)
{
	struct fbd_rtsp_digest d = {0};
	char qop[64] = "", algorithm[32] = "", stale[8] = "", *save = NULL;

	if (!param(challenge, ',', "realm", d.realm, sizeof(d.realm)) ||
	    !param(challenge, ',', "nonce", d.nonce, sizeof(d.nonce)) || !d.realm[0] || !d.nonce[0])
		return fbd_fail(why, size, -EPROTO,
				"the camera's Digest challenge has no realm or nonce (or an empty "
				"one, or one over %zu bytes)",
				sizeof(d.nonce) - 1);
	if (param(challenge, ',', "algorithm", algorithm, sizeof(algorithm)) &&
	    strcasecmp(algorithm, "MD5"))
		return fbd_fail(why, size, -ENOTSUP,
				"the camera wants Digest algorithm %s (framebusd's RTSP client "
				"does MD5 only, not MD5-sess or SHA-256)",
				algorithm);
	param(challenge, ',', "opaque", d.opaque, sizeof(d.opaque));
	param(challenge, ',', "qop", qop, sizeof(qop));
	char offered[sizeof(qop)];
	memcpy(offered, qop, sizeof(qop));
	for (char *t = strtok_r(qop, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
		d.qop_auth = d.qop_auth || !strcasecmp(t, "auth");
	if (offered[0] && !d.qop_auth)
		return fbd_fail(why, size, -ENOTSUP,
				"the camera wants Digest qop=%s (framebusd's RTSP client does "
				"auth)",
				offered);
	d.stale =
	    param(challenge, ',', "stale", stale, sizeof(stale)) && !strcasecmp(stale, "true");
	*ret_digest = d;
	return 0;
}

/* sprop-parameter-sets (a comma-separated list) or one sprop-vps/sps/pps
 * value: base64 NAL units, appended to extradata after start codes. */
static int add_parameter_sets(struct fbd_rtsp_video *v, const char *list, char *why, size_t size)
{
	char b64[FBD_RTSP_MAX_EXTRADATA];
	while (*list) {
		size_t n = strcspn(list, ",");
		if (n && n < sizeof(b64)) {
			memcpy(b64, list, n);
			b64[n] = 0;
			size_t room = sizeof(v->extradata) - v->extradata_size;
			if (room < 4 + AV_BASE64_DECODE_SIZE(n) + 1)
				return fbd_fail(why, size, -EPROTO,
						"the SDP's parameter sets are over %d bytes",
						FBD_RTSP_MAX_EXTRADATA);
			uint8_t *out = v->extradata + v->extradata_size;
			int got = av_base64_decode(out + 4, b64, (int)(room - 4));
			if (got <= 0)
				return fbd_fail(why, size, -EPROTO,
						"the SDP's parameter set '%.40s' is not base64",
						b64);
			memcpy(out, (const uint8_t[]){0, 0, 0, 1}, 4);
			v->extradata_size += 4 + (size_t)got;
		} else if (n) {
			return fbd_fail(why, size, -EPROTO,
					"the SDP's parameter sets are over %d bytes",
					FBD_RTSP_MAX_EXTRADATA);
		}
		list += n;
		if (*list == ',')
			list++;
	}
	return 0;
}

int fbd_rtsp_parse_sdp(const char *sdp, size_t sdp_size, struct fbd_rtsp_video *ret_video,
		       char *why, size_t size)
{
	struct fbd_rtsp_video v = {.payload_type = -1};
	char session_control[FBD_RTSP_MAX_URL] = "";
	char encoding[64] = "", fmtp[FBD_RTSP_MAX_EXTRADATA] = "";
	const char *p = sdp, *end = sdp + sdp_size;
	/* 0: the session's lines, 1: in the first video, 2: in another medium. */
	int at = 0;
	bool video_seen = false;

	/* Cameras end their SDP with a NUL or blanks, or slip in lines that are
	 * not "x=...": FFmpeg reads past both, and so does this. */
	while (end > p && (!end[-1] || isspace((unsigned char)end[-1])))
		end--;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *line = p;
		size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);
		p = eol ? eol + 1 : end;
		if (n && line[n - 1] == '\r')
			n--;
		if (n < 2 || line[1] != '=' || memchr(line, 0, n))
			continue;
		char text[FBD_RTSP_MAX_EXTRADATA];
		if (!copy(text, sizeof(text), line + 2, n - 2))
			return fbd_fail(why, size, -EPROTO, "an SDP line over %d bytes",
					FBD_RTSP_MAX_EXTRADATA);
		if (line[0] == 'm') {
			if (video_seen || strncmp(text, "video ", 6)) {
				at = 2; /* audio, data, more video: not set up */
				continue;
			}
			video_seen = true;
			char proto[32];
			int pt = -1;
			if (sscanf(text, "video %*u %31s %d", proto, &pt) != 2 || pt < 0 ||
			    pt > 127)
				return fbd_fail(why, size, -EPROTO,
						"the SDP's 'm=%.60s' has no payload type", text);
			if (strcmp(proto, "RTP/AVP"))
				return fbd_fail(why, size, -ENOTSUP, "its video is %s, not RTP/AVP",
						proto);
			v.payload_type = pt;
			at = 1;
			continue;
		}
		if (line[0] != 'a' || at == 2)
			continue;
		char *value = strchr(text, ':');
		if (!value)
			continue;
		*value++ = 0;
		if (!strcmp(text, "control")) {
			if (!copy(at ? v.control : session_control, sizeof(v.control), value,
				  strlen(value)))
				return fbd_fail(why, size, -EPROTO,
						"an SDP control URL over %d bytes",
						FBD_RTSP_MAX_URL);
			continue;
		}
		if (at != 1)
			continue;
		char *rest;
		long pt = strtol(value, &rest, 10);
		if (rest == value || pt != v.payload_type || *rest != ' ')
			continue;
		rest++;
		if (!strcmp(text, "rtpmap"))
			copy(encoding, sizeof(encoding), rest, strlen(rest));
		else if (!strcmp(text, "fmtp"))
			copy(fmtp, sizeof(fmtp), rest, strlen(rest));
	}
	if (!video_seen)
		return fbd_fail(why, size, -ENOTSUP, "its SDP has no video");
	if (!encoding[0])
		return fbd_fail(why, size, -ENOTSUP,
				"its video (RTP payload type %d) has no a=rtpmap", v.payload_type);
	char *slash = strchr(encoding, '/');
	long rate = slash ? atol(slash + 1) : 0;
	if (slash)
		*slash = 0;
	if (!strcasecmp(encoding, "H264"))
		v.codec = FBD_RTP_H264;
	else if (!strcasecmp(encoding, "H265"))
		v.codec = FBD_RTP_H265;
	else
		return fbd_fail(why, size, -ENOTSUP, "its video is %.32s, not H.264 or H.265",
				encoding);
	if (rate <= 0 || rate > 1000000)
		return fbd_fail(why, size, -EPROTO, "the SDP's %s clock rate '%s'", encoding,
				slash ? slash + 1 : "");
	v.clock_rate = (uint32_t)rate;
	char value[FBD_RTSP_MAX_EXTRADATA];
	if (v.codec == FBD_RTP_H264 && param(fmtp, ';', "packetization-mode", value, 16) &&
	    atoi(value) == 2)
		return fbd_fail(why, size, -ENOTSUP,
				"its H.264 is in interleaved packetization mode (2)");
	if (v.codec == FBD_RTP_H265 && param(fmtp, ';', "sprop-max-don-diff", value, 16) &&
	    atoi(value) > 0)
		return fbd_fail(why, size, -ENOTSUP, "its H.265 has DONL (sprop-max-don-diff > 0)");
	static const char *const h264_sets[] = {"sprop-parameter-sets", NULL};
	static const char *const h265_sets[] = {"sprop-vps", "sprop-sps", "sprop-pps", NULL};
	for (const char *const *k = v.codec == FBD_RTP_H264 ? h264_sets : h265_sets; *k; k++) {
		int r = param(fmtp, ';', *k, value, sizeof(value))
			    ? add_parameter_sets(&v, value, why, size)
			    : 0;
		if (r < 0)
			return r;
	}
	memcpy(v.session_control, session_control, sizeof(session_control));
	*ret_video = v;
	return 0;
}

/* A control URL against the base (RFC 2326 C.1.1): absolute, "*" (the base
 * itself) or relative (appended after a '/'). */
static bool resolve(char *out, const char *base, const char *control)
{
	if (!control[0] || !strcmp(control, "*"))
		return copy(out, FBD_RTSP_MAX_URL, base, strlen(base));
	if (!strncasecmp(control, "rtsp://", 7))
		return copy(out, FBD_RTSP_MAX_URL, control, strlen(control));
	size_t n = strlen(base);
	bool slash = n && base[n - 1] == '/';
	return snprintf(out, FBD_RTSP_MAX_URL, "%s%s%s", base, slash ? "" : "/", control) <
	       FBD_RTSP_MAX_URL;
}

/* Decode s's percent-escapes in place; false if one is a NUL, CR or LF
 * (they would end or split the request's Authorization header). */
static bool percent_decode(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2])) {
			char hex[3] = {s[1], s[2], 0};
			*o = (char)strtol(hex, NULL, 16);
			if (!*o || *o == '\r' || *o == '\n')
				return false;
			o++;
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
	return true;
}

/* rtsp://[user[:password]@]host[:port][/path] */
static int parse_url(struct fbd_rtsp *c, const char *url, char *why, size_t size)
{
	if (strncasecmp(url, "rtsp://", 7))
		return fbd_fail(why, size, -EINVAL, "'%s' is not an rtsp:// URL", url);
	for (const char *b = url; *b; b++)
		if ((unsigned char)*b < 0x20 || *b == 0x7f)
			return fbd_fail(why, size, -EINVAL,
					"the URL has a control character (0x%02x) at byte %zu",
					(unsigned char)*b, (size_t)(b - url));
	const char *auth = url + 7;
	const char *path = auth + strcspn(auth, "/?#");
	/* The #fragment is the client's, not sent (RFC 3986 3.5). */
	int path_len = (int)strcspn(path, "#");
	const char *at = memrchr(auth, '@', (size_t)(path - auth));
	const char *host = at ? at + 1 : auth;
	if (at) {
		size_t n = (size_t)(at - auth);
		const char *colon = memchr(auth, ':', n);
		size_t ulen = colon ? (size_t)(colon - auth) : n;
		if (!copy(c->user, sizeof(c->user), auth, ulen) ||
		    !copy(c->password, sizeof(c->password), colon ? colon + 1 : "",
			  colon ? n - ulen - 1 : 0))
			return fbd_fail(why, size, -EINVAL, "the URL's user:password is too long");
		if (!percent_decode(c->user))
			return fbd_fail(why, size, -EINVAL,
					"the URL's user has %%00, %%0D or %%0A (a NUL, CR or LF)");
		if (!percent_decode(c->password))
			return fbd_fail(
			    why, size, -EINVAL,
			    "the URL's password has %%00, %%0D or %%0A (a NUL, CR or LF)");
	}
	const char *port = NULL, *host_end = path;
	if (*host == '[') {
		const char *close = memchr(host, ']', (size_t)(path - host));
		if (!close)
			return fbd_fail(why, size, -EINVAL, "the URL's host '%.*s' lacks its ']'",
					(int)(path - host), host);
		if (close + 1 < path && close[1] == ':')
			port = close + 2;
		if (!copy(c->host, sizeof(c->host), host + 1, (size_t)(close - host - 1)))
			return fbd_fail(why, size, -EINVAL, "the URL's host is too long");
	} else {
		port = memchr(host, ':', (size_t)(path - host));
		if (port)
			host_end = port++;
		if (!copy(c->host, sizeof(c->host), host, (size_t)(host_end - host)))
			return fbd_fail(why, size, -EINVAL, "the URL's host is too long");
	}
	if (!c->host[0])
		return fbd_fail(why, size, -EINVAL, "'%s' has no host", url);
	if (port && !copy(c->port, sizeof(c->port), port, (size_t)(path - port)))
		return fbd_fail(why, size, -EINVAL, "the URL's port is too long");
	if (!port || !c->port[0])
		strcpy(c->port, "554");
	if (snprintf(c->url, sizeof(c->url), "rtsp://%.*s%.*s", (int)(path - host), host, path_len,
		     path) >= (int)sizeof(c->url))
		return fbd_fail(why, size, -EINVAL, "the URL is over %d bytes", FBD_RTSP_MAX_URL);
	return 0;
}

/* Wait for fd to be ready for events, POLL_MS at a time. */
static int wait_fd(struct fbd_rtsp *c, short events, char *why, size_t size)
{
	for (;;) {
		if (atomic_load(c->stop))
			return fbd_fail(why, size, -ECANCELED, "stopped");
		uint64_t now = fb_now_ns();
		atomic_store_explicit(c->alive_ns, now, memory_order_relaxed);
		if (now - c->last_rx_ns > c->stall_ns)
			return fbd_fail(why, size, -ETIMEDOUT, "nothing came for %.1f s",
					(double)c->stall_ns / 1e9);
		struct pollfd pfd = {.fd = c->fd, .events = events};
		int r = poll(&pfd, 1, POLL_MS);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return fbd_fail(why, size, -errno, "poll: %s", strerror(errno));
	}
}

static int connect_to(struct fbd_rtsp *c, char *why, size_t size)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *list = NULL;
	int r = getaddrinfo(c->host, c->port, &hints, &list);
	if (r)
		return fbd_fail(why, size, -EHOSTUNREACH, "%s: %s", c->host, gai_strerror(r));
	r = -ECONNREFUSED;
	for (struct addrinfo *a = list; a; a = a->ai_next) {
		c->fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			       a->ai_protocol);
		if (c->fd < 0) {
			r = -errno;
			continue;
		}
		c->last_rx_ns = fb_now_ns();
		if (connect(c->fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS)
			r = -errno;
		else if ((r = wait_fd(c, POLLOUT, why, size)) == 0) {
			int err = 0;
			socklen_t len = sizeof(err);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
			r = -err;
		}
		if (r == 0 || r == -ECANCELED)
			break;
		close(c->fd);
		c->fd = -1;
	}
	freeaddrinfo(list);
	if (r == 0) {
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		return 0;
	}
	if (r == -ECANCELED || r == -ETIMEDOUT)
		return r == -ETIMEDOUT ? fbd_fail(why, size, r, "connecting to %s:%s timed out",
						  c->host, c->port)
				       : r;
	return fbd_fail(why, size, r, "cannot connect to %s:%s: %s", c->host, c->port,
			strerror(-r));
}

static int send_all(struct fbd_rtsp *c, const char *buf, size_t len, char *why, size_t size)
{
	while (len) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			uint64_t rx = c->last_rx_ns; /* a full socket is no silence */
			c->last_rx_ns = fb_now_ns();
			int r = wait_fd(c, POLLOUT, why, size);
			c->last_rx_ns = rx;
			if (r < 0)
				return r;
			continue;
		}
		if (n < 0)
			return fbd_fail(why, size, -errno, "sending to the camera: %s",
					strerror(errno));
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The MD5 of a text, in hex; false if the text would be cut (over the
 * URL's limit and those of the challenge's fields and the credentials). */
__attribute__((format(printf, 2, 3))) static bool md5_hex(char out[33], const char *fmt, ...)
{
	char text[FBD_RTSP_MAX_URL + 1024];
	uint8_t sum[16];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof(text))
		return false;
	av_md5_sum(sum, (const uint8_t *)text, (size_t)n);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", sum[i]);
	return true;
}

int fbd_rtsp_digest_authorization(const struct fbd_rtsp_digest *d, const char *user,
				  const char *password, const char *method, const char *uri,
				  uint32_t nc, const char *cnonce, char *out, size_t out_size,
				  char *why, size_t size)
{
	char ha1[33], ha2[33], response[33], opaque[sizeof(d->opaque) + 16] = "";
	if (!md5_hex(ha1, "%s:%s:%s", user, d->realm, password) ||
	    !md5_hex(ha2, "%s:%s", method, uri) ||
	    !(d->qop_auth
		  ? md5_hex(response, "%s:%s:%08x:%s:auth:%s", ha1, d->nonce, nc, cnonce, ha2)
		  : md5_hex(response, "%s:%s:%s", ha1, d->nonce, ha2)))
		return fbd_fail(why, size, -EINVAL,
				"the Digest answer to %s %.80s... would be cut: its user, realm, "
				"nonce or URL is too long",
				method, uri);
	if (d->opaque[0])
		snprintf(opaque, sizeof(opaque), ", opaque=\"%s\"", d->opaque);
	int n;
	if (d->qop_auth)
		n = snprintf(out, out_size,
			     "Authorization: Digest username=\"%s\", realm=\"%s\", nonce=\"%s\", "
			     "uri=\"%s\", response=\"%s\", qop=auth, nc=%08x, cnonce=\"%s\"%s\r\n",
			     user, d->realm, d->nonce, uri, response, nc, cnonce, opaque);
	else
		n = snprintf(out, out_size,
			     "Authorization: Digest username=\"%s\", realm=\"%s\", "
			     "nonce=\"%s\", uri=\"%s\", response=\"%s\"%s\r\n",
			     user, d->realm, d->nonce, uri, response, opaque);
	if (n < 0 || (size_t)n >= out_size)
		return fbd_fail(why, size, -EINVAL,
				"the Authorization header for %s %.80s... is over %zu bytes",
				method, uri, out_size - 1);
	return 0;
}

/* The Authorization header for a request, "" without one. */
static int authorization(struct fbd_rtsp *c, const char *method, const char *url, char *out,
			 size_t out_size, char *why, size_t size)
{
	out[0] = 0;
	if (c->auth == AUTH_BASIC) {
		char plain[sizeof(c->user) + sizeof(c->password)],
		    b64[AV_BASE64_SIZE(sizeof(plain))];
		int n = snprintf(plain, sizeof(plain), "%s:%s", c->user, c->password);
		av_base64_encode(b64, sizeof(b64), (const uint8_t *)plain, n);
		snprintf(out, out_size, "Authorization: Basic %s\r\n", b64);
	} else if (c->auth == AUTH_DIGEST) {
		char cnonce[17] = "";
		uint32_t nonce[2];
		if (c->digest.qop_auth) {
			/* Not to be guessed (random() was never seeded: every
			 * framebusd sent the same ones). */
			if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
				return fbd_fail(why, size, -EIO, "getrandom: %s", strerror(errno));
			snprintf(cnonce, sizeof(cnonce), "%08x%08x", nonce[0], nonce[1]);
			c->nc++;
		}
		return fbd_rtsp_digest_authorization(&c->digest, c->user, c->password, method, url,
						     c->nc, cnonce, out, out_size, why, size);
	}
	return 0;
}

static int send_request(struct fbd_rtsp *c, const char *method, const char *url, const char *extra,
			char *why, size_t size)
{
	char auth[FBD_RTSP_MAX_AUTHORIZATION], session[300] = "";
	char text[sizeof(auth) + sizeof(session) + 2 * FBD_RTSP_MAX_URL];
	int r = authorization(c, method, url, auth, sizeof(auth), why, size);
	if (r < 0)
		return r;
	if (c->session[0])
		snprintf(session, sizeof(session), "Session: %s\r\n", c->session);
	int n = snprintf(text, sizeof(text),
			 "%s %s RTSP/1.0\r\nCSeq: %d\r\nUser-Agent: " USER_AGENT "\r\n%s%s%s\r\n",
			 method, url, ++c->cseq, auth, session, extra);
	if (n >= (int)sizeof(text))
		return fbd_fail(why, size, -EINVAL, "an RTSP request over %zu bytes", sizeof(text));
	return send_all(c, text, (size_t)n, why, size);
}

static const char *keepalive_method(const struct fbd_rtsp *c)
{
	return c->get_parameter ? "GET_PARAMETER" : "OPTIONS";
}

static int send_keepalive(struct fbd_rtsp *c, char *why, size_t size)
{
	int r = send_request(c, keepalive_method(c), c->session_url, "", why, size);
	c->keepalive_cseq = c->cseq;
	return r;
}

/* A keepalive's answer: a Digest camera's stale nonce (stale=true) is
 * replaced and the keepalive sent again, once; any other refusal (a 401
 * to that too, a 454 Session Not Found...) is a notice, once per status. */
static int keepalive_answered(struct fbd_rtsp *c, const struct fbd_rtsp_response *resp, char *why,
			      size_t size)
{
	struct fbd_rtsp_digest d;
	char text[256];
	if (resp->status >= 200 && resp->status < 300) {
		c->refused_status = 0;
		return 0;
	}
	if (resp->status == 401 && c->auth == AUTH_DIGEST && !c->keepalive_again &&
	    resp->digest[0] && fbd_rtsp_parse_digest(resp->digest, &d, text, sizeof(text)) == 0 &&
	    d.stale) {
		c->digest = d;
		c->nc = 0;
		c->keepalive_again = true;
		return send_keepalive(c, why, size);
	}
	if (resp->status == c->refused_status)
		return 0;
	c->refused_status = resp->status;
	snprintf(c->notice, sizeof(c->notice),
		 "the camera answered a keepalive (%s) %d%s: the session may time out",
		 keepalive_method(c), resp->status,
		 resp->status == 401   ? " Unauthorized"
		 : resp->status == 454 ? " Session Not Found"
				       : "");
	return 0;
}

/* A request from the server, answered: 200 to OPTIONS and GET_PARAMETER
 * (servers send them to see the client is alive, and may end a session
 * they get no answer for), 501 Not Implemented to anything else (nothing
 * the client could do with ANNOUNCE, REDIRECT, SET_PARAMETER...). */
static int answer_server(struct fbd_rtsp *c, const struct fbd_rtsp_response *req, char *why,
			 size_t size)
{
	bool ok = !strcmp(req->method, "OPTIONS") || !strcmp(req->method, "GET_PARAMETER");
	char text[128], cseq[32] = "";
	if (req->cseq >= 0)
		snprintf(cseq, sizeof(cseq), "CSeq: %d\r\n", req->cseq);
	int n = snprintf(text, sizeof(text), "RTSP/1.0 %s\r\n%sUser-Agent: " USER_AGENT "\r\n\r\n",
			 ok ? "200 OK" : "501 Not Implemented", cseq);
	return send_all(c, text, (size_t)n, why, size);
}

/* The next message in, read as needed: an interleaved frame (returns its
 * channel, 0-255, and payload) or a response (returns 256, its headers
 * parsed, its body in ret_data).  Requests from the server are answered
 * (answer_server()) and skipped. */
static int next_message(struct fbd_rtsp *c, struct fbd_rtsp_response *resp,
			const uint8_t **ret_data, size_t *ret_len, char *why, size_t size)
{
	for (;;) {
		const uint8_t *p = c->in + c->in_off;
		size_t have = c->in_len - c->in_off;
		if (have >= 4 && p[0] == '$') {
			size_t len = (size_t)p[2] << 8 | p[3];
			if (have >= 4 + len) {
				c->in_off += 4 + len;
				*ret_data = p + 4;
				*ret_len = len;
				return p[1];
			}
		} else if (have && p[0] != '$') {
			size_t head = fbd_rtsp_head_size(
			    p, have < FBD_RTSP_MAX_MESSAGE ? have : FBD_RTSP_MAX_MESSAGE);
			if (!head && have >= FBD_RTSP_MAX_MESSAGE)
				return fbd_fail(why, size, -EPROTO,
						"an RTSP message's headers are over %d bytes",
						FBD_RTSP_MAX_MESSAGE);
			if (head) {
				int r =
				    fbd_rtsp_parse_response((const char *)p, head, resp, why, size);
				if (r < 0)
					return r;
				if (have >= head + resp->content_length) {
					c->in_off += head + resp->content_length;
					*ret_data = p + head;
					*ret_len = resp->content_length;
					if (!resp->method[0])
						return 256;
					if ((r = answer_server(c, resp, why, size)) < 0)
						return r;
					continue;
				}
			}
		}
		/* More bytes: move what is left to the front first. */
		if (c->in_off) {
			memmove(c->in, c->in + c->in_off, have);
			c->in_len = have;
			c->in_off = 0;
		}
		for (;;) {
			if (c->keepalive_ns && fb_now_ns() >= c->next_keepalive_ns) {
				c->next_keepalive_ns = fb_now_ns() + c->keepalive_ns;
				c->keepalive_again = false;
				int r = send_keepalive(c, why, size);
				if (r < 0)
					return r;
			}
			ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
			if (n > 0) {
				c->in_len += (size_t)n;
				c->last_rx_ns = fb_now_ns();
				break;
			}
			if (n == 0)
				return fbd_fail(why, size, -ECONNRESET,
						"the camera closed the connection");
			if (errno != EAGAIN && errno != EINTR)
				return fbd_fail(why, size, -errno, "reading from the camera: %s",
						strerror(errno));
			int r = wait_fd(c, POLLIN, why, size);
			if (r < 0)
				return r;
		}
	}
}

/* How to answer a 401 with the URL's credentials: 1 to send the request
 * again (Digest if offered in a way the client can answer, else Basic; a
 * Digest camera's stale nonce replaced), 0 if they were refused, or -EACCES
 * for a challenge the client cannot answer and no Basic. */
static int authenticate(struct fbd_rtsp *c, const struct fbd_rtsp_response *resp,
			const char *method, char *why, size_t size)
{
	struct fbd_rtsp_digest d;
	char text[256];
	int r =
	    resp->digest[0] ? fbd_rtsp_parse_digest(resp->digest, &d, text, sizeof(text)) : -EPROTO;
	if (r == -ENOTSUP && !(resp->basic && c->auth == AUTH_NONE))
		return fbd_fail(why, size, -EACCES, "%s: 401 Unauthorized: %s", method, text);
	if (r == 0 && (c->auth != AUTH_DIGEST || d.stale)) {
		c->digest = d;
		c->auth = AUTH_DIGEST;
		c->nc = 0;
		return 1;
	}
	if (r < 0 && resp->basic && c->auth == AUTH_NONE) {
		c->auth = AUTH_BASIC;
		return 1;
	}
	return 0;
}

/* Keep a video packet that came before PLAY's answer; past
 * MAX_EARLY bytes, it is not kept (the depacketizer sees a gap). */
static int keep(struct fbd_rtsp *c, const uint8_t *packet, size_t len)
{
	if (c->early_len + 2 + len > MAX_EARLY)
		return 0;
	uint8_t *early = realloc(c->early, c->early_len + 2 + len);
	if (!early)
		return -ENOMEM;
	c->early = early;
	early[c->early_len] = (uint8_t)(len >> 8);
	early[c->early_len + 1] = (uint8_t)len;
	memcpy(early + c->early_len + 2, packet, len);
	c->early_len += 2 + len;
	return 0;
}

/* Send a request and wait for its response (2xx; 401 answered once with
 * the URL's credentials).  The response's body is valid until the next
 * read. */
static int request(struct fbd_rtsp *c, const char *method, const char *url, const char *extra,
		   struct fbd_rtsp_response *resp, const uint8_t **ret_body, size_t *ret_len,
		   char *why, size_t size)
{
	const uint8_t *body;
	size_t len;
	for (int attempt = 0;; attempt++) {
		int r = send_request(c, method, url, extra, why, size);
		if (r < 0)
			return r;
		do {
			r = next_message(c, resp, &body, &len, why, size);
			if (r < 0)
				return r;
			if (r == c->channel && !strcmp(method, "PLAY") && keep(c, body, len) < 0)
				return fbd_fail(why, size, -ENOMEM,
						"out of memory for the video before PLAY's answer");
		} while (r != 256 || (resp->cseq != c->cseq && resp->cseq != -1));
		if (resp->status == 401 && attempt == 0 && c->user[0]) {
			r = authenticate(c, resp, method, why, size);
			if (r < 0)
				return r;
			if (r > 0)
				continue;
		}
		if (resp->status == 401 && c->user[0])
			return fbd_fail(why, size, -EACCES,
					"401 Unauthorized: wrong user or password for %s (%s)",
					c->url, method);
		if (resp->status == 401)
			return fbd_fail(why, size, -EACCES,
					"401 Unauthorized: %s wants a user and password "
					"(rtsp://USER:PASSWORD@HOST/...) (%s)",
					c->url, method);
		if (resp->status >= 300 && resp->status < 400)
			return fbd_fail(
			    why, size, -EPROTO,
			    "%s: %d: the camera redirects to %s; framebusd's RTSP client "
			    "does not follow redirects: put that URL in url",
			    method, resp->status, resp->location[0] ? resp->location : "?");
		if (resp->status == 461)
			return fbd_fail(
			    why, size, -ENOTSUP,
			    "the camera refuses RTP over TCP (461 Unsupported Transport)");
		if (resp->status < 200 || resp->status >= 300)
			return fbd_fail(why, size, -EIO, "%s %s: the camera answered %d", method,
					url, resp->status);
		if (ret_body) {
			*ret_body = body;
			*ret_len = len;
		}
		return 0;
	}
}

static int start(struct fbd_rtsp *c, const char *url, char *why, size_t size)
{
	struct fbd_rtsp_response resp;
	const uint8_t *sdp;
	size_t sdp_len;
	char base[FBD_RTSP_MAX_URL], setup[FBD_RTSP_MAX_URL], transport[128];
	int r = parse_url(c, url, why, size);
	if (r >= 0)
		r = connect_to(c, why, size);
	if (r >= 0)
		r = request(c, "OPTIONS", c->url, "", &resp, NULL, NULL, why, size);
	if (r < 0)
		return r;
	c->get_parameter = strstr(resp.public_methods, "GET_PARAMETER") != NULL;
	r = request(c, "DESCRIBE", c->url, "Accept: application/sdp\r\n", &resp, &sdp, &sdp_len,
		    why, size);
	if (r < 0)
		return r;
	copy(base, sizeof(base), resp.content_base[0] ? resp.content_base : c->url,
	     strlen(resp.content_base[0] ? resp.content_base : c->url));
	r = fbd_rtsp_parse_sdp((const char *)sdp, sdp_len, &c->video, why, size);
	if (r < 0)
		return r;
	if (!resolve(setup, base, c->video.control) ||
	    !resolve(c->session_url, base, c->video.session_control))
		return fbd_fail(why, size, -EPROTO, "a control URL over %d bytes",
				FBD_RTSP_MAX_URL);
	r = request(c, "SETUP", setup, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n", &resp,
		    NULL, NULL, why, size);
	if (r < 0)
		return r;
	char channels[16];
	if (!strcasestr(resp.transport, "/TCP") ||
	    !param(resp.transport, ';', "interleaved", channels, sizeof(channels)))
		return fbd_fail(why, size, -ENOTSUP, "the camera's SETUP answered Transport: %s",
				resp.transport);
	c->channel = atoi(channels);
	if (c->channel < 0 || c->channel > 255 || !resp.session[0])
		return fbd_fail(why, size, -EPROTO, "the camera's SETUP answered %s (Session: %s)",
				resp.transport, resp.session);
	memcpy(c->session, resp.session, sizeof(resp.session));
	uint32_t timeout = resp.session_timeout ? resp.session_timeout : DEFAULT_SESSION_TIMEOUT;
	snprintf(transport, sizeof(transport), "Range: npt=0.000-\r\n");
	r = request(c, "PLAY", c->session_url, transport, &resp, NULL, NULL, why, size);
	if (r < 0)
		return r;
	c->keepalive_ns = (uint64_t)timeout * 1000000000ull / 2;
	c->next_keepalive_ns = fb_now_ns() + c->keepalive_ns;
	return 0;
}

int fbd_rtsp_open(const char *url, const atomic_bool *stop, _Atomic uint64_t *alive_ns,
		  uint64_t stall_timeout_ns, struct fbd_rtsp **ret_client, char *why, size_t size)
{
	struct fbd_rtsp *c = calloc(1, sizeof(*c));
	if (!c)
		return fbd_fail(why, size, -ENOMEM, "out of memory");
	c->fd = -1;
	c->stop = stop;
	c->alive_ns = alive_ns;
	c->stall_ns = stall_timeout_ns;
	int r = start(c, url, why, size);
	if (r < 0) {
		fbd_rtsp_close(c);
		return r;
	}
	*ret_client = c;
	return 0;
}

const struct fbd_rtsp_video *fbd_rtsp_video(const struct fbd_rtsp *c)
{
	return &c->video;
}

int fbd_rtsp_read(struct fbd_rtsp *c, const uint8_t **ret_packet, size_t *ret_len, char *why,
		  size_t size)
{
	struct fbd_rtsp_response resp;
	/* Only time spent reading counts as a stall, not time spent waiting
	 * for a slot or pacing (as source.c does with FFmpeg); and only video
	 * stops the clock: a camera whose encoder died may go on sending RTCP
	 * and answering keepalives. */
	uint64_t since = fb_now_ns();
	c->last_rx_ns = since;
	if (c->early && c->early_off < c->early_len) {
		const uint8_t *p = c->early + c->early_off;
		*ret_len = (size_t)p[0] << 8 | p[1];
		*ret_packet = p + 2;
		c->early_off += 2 + *ret_len;
		return 0;
	}
	free(c->early); /* the last one returned is no longer used */
	c->early = NULL;
	for (;;) {
		int r = next_message(c, &resp, ret_packet, ret_len, why, size);
		if (r < 0 || r == c->channel)
			return r < 0 ? r : 0;
		c->last_rx_ns = since;
		/* RTCP, another channel, or a keepalive's answer. */
		if (r == 256 && c->keepalive_cseq && resp.cseq == c->keepalive_cseq &&
		    (r = keepalive_answered(c, &resp, why, size)) < 0)
			return r;
	}
}

bool fbd_rtsp_take_notice(struct fbd_rtsp *c, char *text, size_t size)
{
	if (!c->notice[0])
		return false;
	snprintf(text, size, "%s", c->notice);
	c->notice[0] = 0;
	return true;
}

void fbd_rtsp_close(struct fbd_rtsp *c)
{
	if (!c)
		return;
	if (c->fd >= 0 && c->session[0]) {
		char why[8];
		/* Best effort: a camera that is gone times the session out. */
		c->last_rx_ns = fb_now_ns();
		send_request(c, "TEARDOWN", c->session_url, "", why, sizeof(why));
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c->early);
	free(c);
}
