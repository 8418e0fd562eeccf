/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "meta.h"

/* The length of the UTF-8 character at s (at most n bytes there), or 0 if
 * it is not one (overlong, a surrogate, past U+10FFFF, cut short). */
static size_t utf8_length(const uint8_t *s, size_t n)
{
	size_t len = s[0] < 0x80                    ? 1
		     : s[0] >= 0xc2 && s[0] <= 0xdf ? 2
		     : s[0] >= 0xe0 && s[0] <= 0xef ? 3
		     : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
						    : 0;
	if (!len || len > n)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
	    (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
		return 0;
	return len;
}

/* A JSON text (RFC 8259) being checked: where, and how deep in it. */
struct json {
	const uint8_t *p, *end;
	int depth;
};

static void json_space(struct json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool json_take(struct json *j, char c)
{
	json_space(j);
	if (j->p < j->end && *j->p == c) {
		j->p++;
		return true;
	}
	return false;
}

static bool json_string(struct json *j)
{
	if (!json_take(j, '"'))
		return false;
	while (j->p < j->end) {
		uint8_t c = *j->p;
		if (c == '"') {
			j->p++;
			return true;
		}
		if (c < 0x20)
			return false;
		if (c == '\\') {
			if (++j->p >= j->end)
				return false;
			c = *j->p++;
			if (c == 'u') {
				for (int i = 0; i < 4; i++, j->p++)
					if (j->p >= j->end ||
					    !strchr("0123456789abcdefABCDEF", *j->p) || !*j->p)
						return false;
			} else if (!strchr("\"\\/bfnrt", c) || !c) {
				return false;
			}
			continue;
		}
		size_t len = utf8_length(j->p, (size_t)(j->end - j->p));
		if (!len)
			return false;
		j->p += len;
	}
	return false;
}

static bool json_digits(struct json *j)
{
	const uint8_t *start = j->p;
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
		j->p++;
	return j->p > start;
}

static bool json_number(struct json *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (!json_digits(j))
		return false;
	if (j->p < j->end && *j->p == '.' && (j->p++, !json_digits(j)))
		return false;
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		return json_digits(j);
	}
	return true;
}

static bool json_value(struct json *j);

/* The rest of an object or array after its opening bracket. */
static bool json_members(struct json *j, bool object)
{
	char close = object ? '}' : ']';
	if (json_take(j, close))
		return true;
	do {
		if (object && (!json_string(j) || !json_take(j, ':')))
			return false;
		if (!json_value(j))
			return false;
	} while (json_take(j, ','));
	return json_take(j, close);
}

static bool json_value(struct json *j)
{
	static const char *const words[] = {"true", "false", "null"};
	json_space(j);
	if (j->p >= j->end || ++j->depth > 64)
		return false;
	bool ok;
	if (*j->p == '{' || *j->p == '[') {
		bool object = *j->p++ == '{';
		ok = json_members(j, object);
	} else if (*j->p == '"') {
		ok = json_string(j);
	} else if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) {
		ok = json_number(j);
	} else {
		ok = false;
		for (size_t i = 0; i < 3 && !ok; i++) {
			size_t len = strlen(words[i]);
			if ((size_t)(j->end - j->p) >= len && !memcmp(j->p, words[i], len)) {
				j->p += len;
				ok = true;
			}
		}
	}
	j->depth--;
	return ok;
}

void json_text(FILE *out, const uint8_t *s, size_t n)
{
	fputc('"', out);
	for (size_t i = 0, len; i < n; i += len) {
		len = utf8_length(s + i, n - i);
		if (s[i] == '"' || s[i] == '\\')
			fprintf(out, "\\%c", s[i]);
		else if (s[i] < 0x20 || !len)
			fprintf(out, "\\u%04x", s[i]);
		else
			fwrite(s + i, 1, len, out);
		len = len ? len : 1;
	}
	fputc('"', out);
}

bool json_valid(const uint8_t *s, size_t n)
{
	struct json j = {s, s + n, 0};
	return json_value(&j) && (json_space(&j), j.p == j.end);
}

void json_meta(FILE *out, const uint8_t *s, size_t n)
{
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	if (n == 0) {
		fputs("\"meta\":null", out);
		return;
	}
	if (json_valid(s, n)) {
		fputs("\"meta\":", out);
		for (size_t i = 0; i < n; i++) /* one line: its line breaks are spaces */
			fputc(s[i] == '\n' || s[i] == '\r' ? ' ' : s[i], out);
		return;
	}
	size_t i = 0, len;
	while (i < n && (len = utf8_length(s + i, n - i)) > 0)
		i += len;
	if (i == n) {
		fputs("\"meta\":", out);
		json_text(out, s, n);
		return;
	}
	fputs("\"meta_base64\":\"", out);
	for (i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
			     (i + 2 < n ? s[i + 2] : 0);
		fputc(b64[v >> 18 & 63], out);
		fputc(b64[v >> 12 & 63], out);
		fputc(i + 1 < n ? b64[v >> 6 & 63] : '=', out);
		fputc(i + 2 < n ? b64[v & 63] : '=', out);
	}
	fputc('"', out);
}
