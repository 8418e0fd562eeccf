/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "framebus/framebus.h"
#include "inifile.h"

int fbd_ini_fail(struct fbd_ini_file *f, const char *section, const char *key, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (!f->failed) {
		if (section)
			snprintf(f->error, f->error_size, "%s:%u: [%s] %s: %s", f->path, f->line,
				 section, key, why);
		else
			snprintf(f->error, f->error_size, "%s:%u: %s: %s", f->path, f->line, key,
				 why);
	}
	f->failed = true;
	return 0;
}

bool fbd_ini_uint(const char *v, uint64_t min, uint64_t max, uint64_t *ret)
{
	char *end;
	errno = 0;
	if (*v == '-' || *v == '\0')
		return false;
	unsigned long long n = strtoull(v, &end, 0);
	if (errno || *end || n < min || n > max)
		return false;
	*ret = n;
	return true;
}

bool fbd_ini_bool(const char *v, bool *ret)
{
	if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") ||
	    !strcasecmp(v, "on"))
		*ret = true;
	else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0") ||
		 !strcasecmp(v, "off"))
		*ret = false;
	else
		return false;
	return true;
}

bool fbd_ini_duration(const char *v, uint64_t *ret_ns)
{
	char *end;
	double n = strtod(v, &end);
	double scale = 1.0;
	if (end == v || !isfinite(n) || n < 0)
		return false;
	if (!strcmp(end, "ms"))
		scale = 1e-3;
	else if (!strcmp(end, "m") || !strcmp(end, "min"))
		scale = 60;
	else if (*end && strcmp(end, "s"))
		return false;
	if (n * scale > 86400)
		return false;
	*ret_ns = (uint64_t)(n * scale * 1e9);
	return true;
}

bool fbd_ini_size(const char *v, uint64_t *ret)
{
	char *end;
	errno = 0;
	if (*v == '-' || !*v)
		return false;
	unsigned long long n = strtoull(v, &end, 10);
	unsigned shift = !strcmp(end, "K")   ? 10
			 : !strcmp(end, "M") ? 20
			 : !strcmp(end, "G") ? 30
					     : 0;
	if (errno || (*end && !shift) || n > (UINT64_MAX >> shift))
		return false;
	*ret = (uint64_t)n << shift;
	return true;
}

bool fbd_ini_enum(const char *v, const char *const *names, size_t n, uint32_t *ret)
{
	for (size_t i = 0; i < n; i++)
		if (names[i] && !strcmp(v, names[i])) {
			*ret = (uint32_t)i;
			return true;
		}
	return false;
}

bool fbd_ini_address(const char *v, struct sockaddr_storage *ret)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(v, ':');
	uint64_t port;
	if (!colon || (size_t)(colon - v) >= sizeof(host) ||
	    !fbd_ini_uint(colon + 1, 1, 65535, &port))
		return false;
	memcpy(host, v, (size_t)(colon - v));
	host[colon - v] = '\0';
	memset(ret, 0, sizeof(*ret));
	struct sockaddr_in *in = (struct sockaddr_in *)ret;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ret;
	size_t len = strlen(host);
	if (len > 2 && host[0] == '[' && host[len - 1] == ']') {
		host[len - 1] = '\0';
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		return inet_pton(AF_INET6, host + 1, &in6->sin6_addr) == 1;
	}
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &in->sin_addr) == 1;
}

char *fbd_ini_read_line(struct fbd_ini_file *f, char *str, int num)
{
	char *r = f->failed ? NULL : fgets(str, num, f->file);
	if (!r)
		return NULL;
	f->line++;
	size_t n = strlen(r);
	if (n && r[n - 1] != '\n') {
		int c = getc(f->file);
		if (c != EOF && c != '\n') {
			snprintf(f->error, f->error_size, "%s:%u: line longer than %d characters",
				 f->path, f->line, num - 1);
			f->failed = true;
			return NULL;
		}
	}
	return r;
}

bool fbd_ini_header(const char *line, const char *kind, char *name, size_t size)
{
	size_t k = strlen(kind);
	line += strspn(line, " \t");
	if (line[0] != '[' || strncmp(line + 1, kind, k) || line[1 + k] != ' ')
		return false;
	const char *n = line + 2 + k;
	size_t len = strcspn(n, "]");
	if (n[len] != ']' || len >= size)
		return false;
	snprintf(name, size, "%.*s", (int)len, n);
	return true;
}

bool fbd_ini_set_string(char **dst, const char *v)
{
	char *copy = strdup(v);
	if (!copy)
		return false;
	free(*dst);
	*dst = copy;
	return true;
}

bool fbd_ini_stream_name(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > FB_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		      (name[i] >= '0' && name[i] <= '9') || strchr("._-", name[i])))
			return false;
	return true;
}
