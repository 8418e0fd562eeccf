/* SPDX-License-Identifier: MIT */
/* daemon/rtsp.c's parsers of what a camera answers: a 401's Digest
 * challenge, read from the response as the client reads it (a stale nonce
 * is told from refused credentials; what the client cannot answer is an
 * error naming it); where a message's head ends; SDP as cameras write it. */
#include <criterion/criterion.h>
#include <libavutil/md5.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rtp.h"
#include "rtsp.h"

/* The Digest challenge of a 401 response whose WWW-Authenticate lines are
 * those given. */
static int challenge(const char *headers, struct fbd_rtsp_digest *ret, char *why, size_t size)
{
	char head[2048];
	struct fbd_rtsp_response r;
	int n =
	    snprintf(head, sizeof(head), "RTSP/1.0 401 Unauthorized\r\nCSeq: 7\r\n%s\r\n", headers);
	cr_assert_eq(fbd_rtsp_parse_response(head, (size_t)n, &r, why, size), 0, "%s", why);
	cr_assert_eq(r.status, 401);
	cr_assert_eq(r.cseq, 7);
	return fbd_rtsp_parse_digest(r.digest, ret, why, size);
}

Test(rtsp, a_stale_nonce_is_told_from_refused_credentials)
{
	struct fbd_rtsp_digest d;
	char why[256] = "";

	cr_assert_eq(challenge("WWW-Authenticate: Digest realm=\"cam\", nonce=\"n2\", "
			       "stale=true, qop=\"auth\"\r\n",
			       &d, why, sizeof(why)),
		     0, "%s", why);
	cr_assert_str_eq(d.realm, "cam");
	cr_assert_str_eq(d.nonce, "n2");
	cr_assert(d.stale && d.qop_auth);

	/* Quoted and in capitals (RFC 2617: case-insensitive), as cameras send it. */
	cr_assert_eq(challenge("WWW-Authenticate: Digest realm=\"cam\",nonce=\"n3\",stale=\"TRUE\""
			       "\r\n",
			       &d, why, sizeof(why)),
		     0, "%s", why);
	cr_assert(d.stale && !d.qop_auth);
	cr_assert_str_eq(d.nonce, "n3");

	cr_assert_eq(challenge("WWW-Authenticate: Digest realm=\"cam\", nonce=\"n4\", stale=false"
			       "\r\n",
			       &d, why, sizeof(why)),
		     0, "%s", why);
	cr_assert(!d.stale);
	cr_assert_eq(challenge("WWW-Authenticate: Digest realm=\"cam\", nonce=\"n5\", "
			       "opaque=\"xyz\"\r\n",
			       &d, why, sizeof(why)),
		     0, "%s", why);
	cr_assert(!d.stale);
	cr_assert_str_eq(d.opaque, "xyz");
}

Test(rtsp, the_first_digest_challenge_is_taken_next_to_basic)
{
	struct fbd_rtsp_digest d;
	char why[256] = "";
	cr_assert_eq(challenge("WWW-Authenticate: Basic realm=\"cam\"\r\n"
			       "WWW-Authenticate: Digest realm=\"cam\", nonce=\"a\", stale=TRUE\r\n"
			       "WWW-Authenticate: Digest realm=\"other\", nonce=\"b\"\r\n",
			       &d, why, sizeof(why)),
		     0, "%s", why);
	cr_assert_str_eq(d.nonce, "a");
	cr_assert(d.stale);
}

Test(rtsp, a_challenge_the_client_cannot_answer_says_why)
{
	struct fbd_rtsp_digest d;
	char why[256] = "";

	cr_assert_eq(fbd_rtsp_parse_digest("realm=\"cam\", nonce=\"n\", algorithm=SHA-256", &d, why,
					   sizeof(why)),
		     -ENOTSUP);
	cr_assert(strstr(why, "algorithm SHA-256"), "%s", why);
	cr_assert_eq(fbd_rtsp_parse_digest("realm=\"cam\", nonce=\"n\", qop=\"auth-int\"", &d, why,
					   sizeof(why)),
		     -ENOTSUP);
	cr_assert(strstr(why, "qop=auth-int"), "%s", why);
	cr_assert_eq(fbd_rtsp_parse_digest("realm=\"cam\", nonce=\"n\", qop=\"auth-int,auth\"", &d,
					   why, sizeof(why)),
		     0, "%s", why);
	cr_assert(d.qop_auth);
	cr_assert_eq(fbd_rtsp_parse_digest("realm=\"cam\", stale=true", &d, why, sizeof(why)),
		     -EPROTO);
	cr_assert_eq(
	    fbd_rtsp_parse_digest("realm=\"cam\", nonce, stale=true", &d, why, sizeof(why)),
	    -EPROTO);
	cr_assert(strstr(why, "no realm or nonce"), "%s", why);
	cr_assert_eq(fbd_rtsp_parse_digest("realm=\"cam\", nonce=", &d, why, sizeof(why)), -EPROTO);
	cr_assert_eq(fbd_rtsp_parse_digest("realm=\"\", nonce=\"n\"", &d, why, sizeof(why)),
		     -EPROTO);
	cr_assert(strstr(why, "no realm or nonce (or an empty one"), "%s", why);
}

Test(rtsp, the_first_md5_digest_challenge_is_taken_after_sha256_ones)
{
	struct fbd_rtsp_digest d;
	char why[256] = "";

	/* RFC 7616 servers list SHA-256 first. */
	cr_assert_eq(challenge("WWW-Authenticate: Digest realm=\"cam\", nonce=\"s\", "
			       "algorithm=SHA-256, qop=\"auth\"\r\n"
			       "WWW-Authenticate: Digest realm=\"cam\", nonce=\"m\", "
			       "algorithm=MD5, qop=\"auth\"\r\n"
			       "WWW-Authenticate: Digest realm=\"cam\", nonce=\"x\"\r\n",
			       &d, why, sizeof(why)),
		     0, "%s", why);
	cr_assert_str_eq(d.nonce, "m");
	cr_assert(d.qop_auth);

	/* No algorithm is MD5 (RFC 2617); one the client cannot answer is passed. */
	cr_assert_eq(challenge("WWW-Authenticate: Digest realm=\"cam\", nonce=\"i\", "
			       "qop=\"auth-int\"\r\n"
			       "WWW-Authenticate: Digest realm=\"cam\", nonce=\"p\"\r\n",
			       &d, why, sizeof(why)),
		     0, "%s", why);
	cr_assert_str_eq(d.nonce, "p");

	/* Only what the client cannot do: the first says why. */
	cr_assert_eq(challenge("WWW-Authenticate: Digest realm=\"cam\", nonce=\"a\", "
			       "algorithm=MD5-sess\r\n"
			       "WWW-Authenticate: Digest realm=\"cam\", nonce=\"b\", "
			       "algorithm=SHA-256\r\n",
			       &d, why, sizeof(why)),
		     -ENOTSUP);
	cr_assert(strstr(why, "algorithm MD5-sess (framebusd's RTSP client does MD5 only"), "%s",
		  why);
}

Test(rtsp, a_head_ends_at_its_first_empty_line_with_lf_or_crlf)
{
	/* Bare LF line ends, then an RTP frame whose bytes hold CRLF CRLF:
	 * the head is the response's alone. */
	static const char lf[] = "RTSP/1.0 200 OK\nCSeq: 3\n\n$\0\0\6\r\n\r\nab";
	size_t want = strlen("RTSP/1.0 200 OK\nCSeq: 3\n\n");
	cr_assert_eq(fbd_rtsp_head_size((const uint8_t *)lf, sizeof(lf) - 1), want);

	static const char crlf[] = "RTSP/1.0 200 OK\r\nCSeq: 3\r\n\r\n$\0\0\2\n\n";
	want = strlen("RTSP/1.0 200 OK\r\nCSeq: 3\r\n\r\n");
	cr_assert_eq(fbd_rtsp_head_size((const uint8_t *)crlf, sizeof(crlf) - 1), want);

	/* Mixed: CRLF lines, then an empty line of LF alone, and the reverse. */
	static const char mixed[] = "RTSP/1.0 200 OK\r\nCSeq: 3\r\n\nbody";
	cr_assert_eq(fbd_rtsp_head_size((const uint8_t *)mixed, sizeof(mixed) - 1),
		     sizeof(mixed) - 1 - 4);
	static const char mixed2[] = "RTSP/1.0 200 OK\nCSeq: 3\n\r\nbody";
	cr_assert_eq(fbd_rtsp_head_size((const uint8_t *)mixed2, sizeof(mixed2) - 1),
		     sizeof(mixed2) - 1 - 4);

	/* Not all come yet. */
	static const char part[] = "RTSP/1.0 200 OK\r\nCSeq: 3\r\n\r";
	cr_assert_eq(fbd_rtsp_head_size((const uint8_t *)part, sizeof(part) - 1), 0);
	cr_assert_eq(fbd_rtsp_head_size((const uint8_t *)part, 0), 0);
}

#define SDP_HEAD "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=cam\r\nt=0 0\r\n"
#define SDP_VIDEO                                                                                  \
	"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"                                       \
	"a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAHpWoLQSZ,aM48gA==\r\n"            \
	"a=control:trackID=1\r\n"

Test(rtsp, stray_bytes_in_an_sdp_are_passed_over)
{
	struct fbd_rtsp_video v;
	char why[256] = "";

	/* A trailing NUL (and blanks), as some cameras count it in
	 * Content-Length, and a line that is no "x=". */
	static const char sdp[] = SDP_HEAD "garbage without an equals sign\r\n"
					   "a=tool:x\0y\r\n" SDP_VIDEO "\r\n \n";
	cr_assert_eq(fbd_rtsp_parse_sdp(sdp, sizeof(sdp), &v, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(v.codec, FBD_RTP_H264);
	cr_assert_eq(v.payload_type, 96);
	cr_assert_eq(v.clock_rate, 90000);
	cr_assert_str_eq(v.control, "trackID=1");
	cr_assert_eq(v.extradata_size, 4 + 9 + 4 + 4, "%zu", v.extradata_size);

	/* No video the client takes stays FFmpeg's turn, stray bytes or not. */
	static const char audio[] = SDP_HEAD "m=audio 0 RTP/AVP 0\r\nbad line\r\n";
	cr_assert_eq(fbd_rtsp_parse_sdp(audio, sizeof(audio), &v, why, sizeof(why)), -ENOTSUP);
	cr_assert(strstr(why, "no video"), "%s", why);
	static const char jpeg[] = SDP_HEAD "m=video 0 RTP/AVP 26\r\n\r\n\0";
	cr_assert_eq(fbd_rtsp_parse_sdp(jpeg, sizeof(jpeg), &v, why, sizeof(why)), -ENOTSUP);
	cr_assert(strstr(why, "no a=rtpmap"), "%s", why);
}

static void md5_of(char out[33], const char *text)
{
	uint8_t sum[16];
	av_md5_sum(sum, (const uint8_t *)text, strlen(text));
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", sum[i]);
}

Test(rtsp, a_digest_answer_is_whole_or_an_error)
{
	/* RFC 2617 3.5's example. */
	struct fbd_rtsp_digest d = {.realm = "testrealm@host.com",
				    .nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093",
				    .opaque = "5ccc069c403ebaf9f0171e9517f40e41",
				    .qop_auth = true};
	char out[FBD_RTSP_MAX_AUTHORIZATION], why[256] = "";
	cr_assert_eq(fbd_rtsp_digest_authorization(&d, "Mufasa", "Circle Of Life", "GET",
						   "/dir/index.html", 1, "0a4f113b", out,
						   sizeof(out), why, sizeof(why)),
		     0, "%s", why);
	cr_assert_str_eq(out,
			 "Authorization: Digest username=\"Mufasa\", "
			 "realm=\"testrealm@host.com\", "
			 "nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", "
			 "response=\"6629fae49393a05397450978507c4ef1\", qop=auth, nc=00000001, "
			 "cnonce=\"0a4f113b\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"\r\n");

	/* A URL at the client's limit, every challenge field at its own: the
	 * whole URL is hashed and the header ends with its CRLF. */
	char url[FBD_RTSP_MAX_URL], text[2 * FBD_RTSP_MAX_URL], ha1[33], ha2[33], want[33];
	memset(url, 'x', sizeof(url) - 1);
	url[sizeof(url) - 1] = 0;
	memcpy(url, "rtsp://10.0.0.2/", 16);
	cr_assert_eq(strlen(url), FBD_RTSP_MAX_URL - 1);
	memset(d.realm, 'r', sizeof(d.realm) - 1);
	memset(d.nonce, 'n', sizeof(d.nonce) - 1);
	memset(d.opaque, 'o', sizeof(d.opaque) - 1);
	char user[128] = "", password[128] = "";
	memset(user, 'u', sizeof(user) - 1);
	memset(password, 'p', sizeof(password) - 1);
	cr_assert_eq(fbd_rtsp_digest_authorization(&d, user, password, "GET_PARAMETER", url, 2,
						   "00c0ffee00000002", out, sizeof(out), why,
						   sizeof(why)),
		     0, "%s", why);
	snprintf(text, sizeof(text), "%s:%s:%s", user, d.realm, password);
	md5_of(ha1, text);
	snprintf(text, sizeof(text), "GET_PARAMETER:%s", url);
	md5_of(ha2, text);
	snprintf(text, sizeof(text), "%s:%s:00000002:00c0ffee00000002:auth:%s", ha1, d.nonce, ha2);
	md5_of(want, text);
	cr_assert(strstr(out, want), "%s", out);
	snprintf(text, sizeof(text), "uri=\"%s\"", url);
	cr_assert(strstr(out, text));
	size_t n = strlen(out);
	cr_assert(n > 2 && !strcmp(out + n - 2, "\r\n"));

	/* A buffer one byte too small: an error naming the request, no cut
	 * header. */
	cr_assert_eq(fbd_rtsp_digest_authorization(&d, user, password, "GET_PARAMETER", url, 2,
						   "00c0ffee00000002", out, n, why, sizeof(why)),
		     -EINVAL);
	cr_assert(strstr(why, "Authorization header for GET_PARAMETER rtsp://10.0.0.2/"), "%s",
		  why);
}

Test(rtsp, a_request_from_the_server_is_read_as_a_response_is)
{
	struct fbd_rtsp_response r;
	char why[256] = "";
	static const char req[] = "GET_PARAMETER rtsp://10.0.0.2/cam RTSP/1.0\r\n"
				  "cseq: 41\r\ncontent-LENGTH: 12\r\n"
				  "Content-Type: text/parameters\r\n\r\n";
	cr_assert_eq(fbd_rtsp_parse_response(req, sizeof(req) - 1, &r, why, sizeof(why)), 0, "%s",
		     why);
	cr_assert_str_eq(r.method, "GET_PARAMETER");
	cr_assert_eq(r.status, 0);
	cr_assert_eq(r.cseq, 41);
	cr_assert_eq(r.content_length, 12);

	static const char resp[] = "RTSP/1.0 200 OK\r\nCSeq: 2\r\n\r\n";
	cr_assert_eq(fbd_rtsp_parse_response(resp, sizeof(resp) - 1, &r, why, sizeof(why)), 0, "%s",
		     why);
	cr_assert_str_eq(r.method, "");
	cr_assert_eq(r.status, 200);

	static const char *const bad[] = {"HTTP/1.1 200 OK\r\n\r\n",
					  "get_parameter * RTSP/1.0\r\n\r\n",
					  "GET_PARAMETER RTSP/1.0\r\n\r\n",
					  "OPTIONS * HTTP/1.1\r\n\r\n", "RTSP/1.0 2x0 OK\r\n\r\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(fbd_rtsp_parse_response(bad[i], strlen(bad[i]), &r, why, sizeof(why)),
			     -EPROTO, "%s", bad[i]);
		cr_assert(strstr(why, "bytes that are no RTSP from the camera: '"), "%s", why);
	}
}

Test(rtsp, a_folded_header_is_one_value)
{
	struct fbd_rtsp_response r;
	char why[256] = "";
	static const char head[] =
	    "RTSP/1.0 200 OK\r\nCSeq: 4\r\n"
	    "Transport: RTP/AVP/TCP;unicast;\r\n \tinterleaved=0-1;\r\n  ssrc=1234ABCD\r\n"
	    "Public: OPTIONS,\r\n DESCRIBE\r\n"
	    "Session: 5B9A\r\n\r\n";
	cr_assert_eq(fbd_rtsp_parse_response(head, sizeof(head) - 1, &r, why, sizeof(why)), 0, "%s",
		     why);
	cr_assert_str_eq(r.transport, "RTP/AVP/TCP;unicast; interleaved=0-1; ssrc=1234ABCD");
	cr_assert_str_eq(r.public_methods, "OPTIONS, DESCRIBE");
	cr_assert_str_eq(r.session, "5B9A");
	cr_assert_eq(r.cseq, 4);

	static const char orphan[] = "RTSP/1.0 200 OK\r\n CSeq: 4\r\n\r\n";
	cr_assert_eq(fbd_rtsp_parse_response(orphan, sizeof(orphan) - 1, &r, why, sizeof(why)),
		     -EPROTO);
	cr_assert(strstr(why, "continuation line without a header"), "%s", why);

	/* Folded past every field's size: too long, not cut. */
	char big[8192];
	int n = snprintf(big, sizeof(big), "RTSP/1.0 200 OK\r\nSession: 1");
	for (int i = 0; i < 30; i++)
		n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n %0100d", i);
	n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\n\r\n");
	cr_assert_eq(fbd_rtsp_parse_response(big, (size_t)n, &r, why, sizeof(why)), -EPROTO);
	cr_assert(strstr(why, "Session is too long"), "%s", why);
}

Test(rtsp, a_url_whose_credentials_would_split_a_header_is_refused)
{
	static const struct {
		const char *url, *why;
	} bad[] = {
	    {"rtsp://us%0D%0AX-Injected:%201@127.0.0.1:9/cam",
	     "the URL's user has %00, %0D or %0A"},
	    {"rtsp://user:pass%00word@127.0.0.1:9/cam", "the URL's password has %00, %0D or %0A"},
	    {"rtsp://user:pass%0aword@127.0.0.1:9/cam", "the URL's password has"},
	    {"rtsp://127.0.0.1:9/cam\r\nX-Injected: 1", "the URL has a control character (0x0d)"},
	};
	atomic_bool stop = false;
	_Atomic uint64_t alive = 0;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct fbd_rtsp *c = NULL;
		char why[256] = "";
		cr_assert_eq(
		    fbd_rtsp_open(bad[i].url, &stop, &alive, 1000000000, &c, why, sizeof(why)),
		    -EINVAL, "%s", bad[i].url);
		cr_assert(strstr(why, bad[i].why), "%s: %s", bad[i].url, why);
		cr_assert_null(c);
	}
}
