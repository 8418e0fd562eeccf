/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <syslog.h>

#include "config.h"
#include "inifile.h"

#define DEFAULT_SOCKET_MODE 0660
#define NS_PER_S 1000000000ull
/* A stream section without scale_threads or hold_timeout takes [daemon]'s,
 * which may come after it. */
#define SCALE_THREADS_UNSET UINT32_MAX
#define HOLD_TIMEOUT_UNSET UINT64_MAX

struct parser {
	struct fbd_config *config;
	struct fbd_stream_config *stream; /* the [stream] section being read, or NULL */
	struct fbd_access_rule *rule;     /* the [access] section being read, or NULL */
	bool in_daemon;
	struct fbd_ini_file ini;
	/* Keys of the current section so far: a key given twice is an error
	 * (and the only sign of a section repeated right after itself). */
	char section[80];
	char seen[64][48];
	unsigned n_seen;
};

void fbd_stream_config_defaults(struct fbd_stream_config *s)
{
	*s = (struct fbd_stream_config){
	    .format = FB_FORMAT_BGR24,
	    .slots = 8,
	    .policy = FB_POLICY_DROP,
	    .meta_max = 4096,
	    .retry_min_ns = NS_PER_S / 2,
	    .retry_max_ns = 30 * NS_PER_S,
	    .stall_timeout_ns = 10 * NS_PER_S,
	    .block_timeout_ns = FBD_DEFAULT_BLOCK_TIMEOUT_NS,
	    .scale_threads = 1,
	};
}

static struct fbd_config *config_new(void)
{
	struct fbd_config *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->socket_mode = DEFAULT_SOCKET_MODE;
	c->log_level = LOG_INFO;
	c->max_clients = 256;
	c->max_subscriptions_per_client = 64;
	c->default_max_holds = 2;
	c->max_streams_per_client = 8;
	c->max_ring_memory_per_client = 1ull << 30;
	c->max_derived_per_client = 4;
	c->max_derived_memory = 256ull << 20;
	c->scale_threads = 1;
	c->max_connections_per_user = 64;
	c->max_subscriptions_per_user = 256;
	c->max_streams_per_user = 16;
	c->max_memory_per_user = 2ull << 30;
	c->socket_path = strdup(FB_DEFAULT_SOCKET);
	if (!c->socket_path) {
		free(c);
		return NULL;
	}
	return c;
}

/* Reads one line for inih and counts lines, so errors can name them
 * (Debian builds inih without INI_HANDLER_LINENO). */
static char *read_line(char *str, int num, void *stream)
{
	struct parser *p = stream;
	return fbd_ini_read_line(&p->ini, str, num);
}

/* hold_timeout's value, in [daemon] or a stream's section: off or a
 * duration. */
static int hold_timeout(struct parser *p, const char *section, const char *key, const char *v,
			uint64_t *ret_ns)
{
	uint64_t ns = 0;
	if (strcmp(v, "off") && (!fbd_ini_duration(v, &ns) || ns == 0))
		return fbd_ini_fail(&p->ini, section, key,
				    "'%s' is neither off nor a duration such as 500ms, 2s or 1m",
				    v);
	*ret_ns = ns;
	return 1;
}

static int daemon_key(struct parser *p, const char *section, const char *key, const char *v)
{
	struct fbd_config *c = p->config;
	static const char *const levels[] = {[LOG_ERR] = "error",
					     [LOG_WARNING] = "warning",
					     [LOG_NOTICE] = "notice",
					     [LOG_INFO] = "info",
					     [LOG_DEBUG] = "debug"};
	uint64_t n;
	uint32_t e;

	if (!strcmp(key, "socket")) {
		if (v[0] != '/' || strlen(v) >= 108)
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not an absolute path of at most 107 bytes", v);
		return fbd_ini_set_string(&c->socket_path, v)
			   ? 1
			   : fbd_ini_fail(&p->ini, section, key, "out of memory");
	}
	if (!strcmp(key, "metrics")) {
		if (!strcmp(v, "off")) {
			free(c->metrics);
			c->metrics = NULL;
			return 1;
		}
		if (!fbd_ini_address(v, &c->metrics_addr))
			return fbd_ini_fail(
			    &p->ini, section, key,
			    "'%s' is not ADDRESS:PORT (127.0.0.1:9464, [::1]:9464) or off", v);
		return fbd_ini_set_string(&c->metrics, v)
			   ? 1
			   : fbd_ini_fail(&p->ini, section, key, "out of memory");
	}
	if (!strcmp(key, "socket_group"))
		return fbd_ini_set_string(&c->socket_group, v)
			   ? 1
			   : fbd_ini_fail(&p->ini, section, key, "out of memory");
	if (!strcmp(key, "socket_mode")) {
		char *end;
		unsigned long mode = strtoul(v, &end, 8);
		if (*v == '\0' || *end || mode > 0777)
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not an octal mode such as 0660", v);
		c->socket_mode = (uint32_t)mode;
		return 1;
	}
	if (!strcmp(key, "log_level")) {
		if (!fbd_ini_enum(v, levels, sizeof(levels) / sizeof(levels[0]), &e))
			return fbd_ini_fail(
			    &p->ini, section, key,
			    "'%s' is not one of error, warning, notice, info, debug", v);
		c->log_level = (int)e;
		return 1;
	}
	if (!strcmp(key, "max_clients")) {
		if (!fbd_ini_uint(v, 1, 100000, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 1 to 100000", v);
		c->max_clients = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "max_subscriptions_per_client")) {
		if (!fbd_ini_uint(v, 1, 4096, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 1 to 4096", v);
		c->max_subscriptions_per_client = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "default_max_holds")) {
		if (!fbd_ini_uint(v, 1, FB_MAX_SLOTS - 1, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 1 to %d", v,
					    FB_MAX_SLOTS - 1);
		c->default_max_holds = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "max_streams_per_client")) {
		if (!fbd_ini_uint(v, 0, FBD_MAX_STREAMS, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 0 to %d", v,
					    FBD_MAX_STREAMS);
		c->max_streams_per_client = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "max_ring_memory_per_client")) {
		if (!fbd_ini_size(v, &c->max_ring_memory_per_client))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a size such as 512M or 2G", v);
		return 1;
	}
	if (!strcmp(key, "max_derived_per_client")) {
		if (!fbd_ini_uint(v, 0, FBD_MAX_STREAMS, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 0 to %d", v,
					    FBD_MAX_STREAMS);
		c->max_derived_per_client = (uint32_t)n;
		return 1;
	}
	const struct {
		const char *key;
		uint32_t *value;
		uint32_t min, max;
	} per_user[] = {
	    {"max_connections_per_user", &c->max_connections_per_user, 1, 100000},
	    {"max_subscriptions_per_user", &c->max_subscriptions_per_user, 1, 65536},
	    {"max_streams_per_user", &c->max_streams_per_user, 0, FBD_MAX_STREAMS},
	};
	for (size_t i = 0; i < sizeof(per_user) / sizeof(per_user[0]); i++)
		if (!strcmp(key, per_user[i].key)) {
			if (!fbd_ini_uint(v, per_user[i].min, per_user[i].max, &n))
				return fbd_ini_fail(&p->ini, section, key,
						    "'%s' is not a number from %u to %u", v,
						    per_user[i].min, per_user[i].max);
			*per_user[i].value = (uint32_t)n;
			return 1;
		}
	if (!strcmp(key, "max_memory_per_user")) {
		if (!fbd_ini_size(v, &c->max_memory_per_user))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a size such as 512M or 2G", v);
		return 1;
	}
	if (!strcmp(key, "scale_threads")) {
		if (!fbd_ini_uint(v, 0, 64, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 0 to 64", v);
		c->scale_threads = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "hold_timeout"))
		return hold_timeout(p, section, key, v, &c->hold_timeout_ns);
	if (!strcmp(key, "max_derived_memory")) {
		if (!fbd_ini_size(v, &c->max_derived_memory))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a size such as 512M or 2G", v);
		return 1;
	}
	return fbd_ini_fail(&p->ini, section, key, "unknown key");
}

static const char *const scales[] = {[FBD_SCALE_BILINEAR] = "bilinear",
				     [FBD_SCALE_FAST_BILINEAR] = "fast_bilinear",
				     [FBD_SCALE_AREA] = "area",
				     [FBD_SCALE_BICUBIC] = "bicubic"};

const char *fbd_scale_name(uint32_t scale)
{
	return scale < sizeof(scales) / sizeof(scales[0]) ? scales[scale] : "?";
}

static int stream_key(struct parser *p, const char *section, const char *key, const char *v)
{
	struct fbd_stream_config *s = p->stream;
	static const char *const policies[] = {
	    [FB_POLICY_DROP] = "drop", [FB_POLICY_BLOCK] = "block"};
	static const char *const pacings[] = {
	    [FBD_PACING_AUTO] = "auto", [FBD_PACING_NATIVE] = "native", [FBD_PACING_FAST] = "fast"};
	static const char *const on_stalls[] = {
	    [FBD_ON_STALL_LATEST] = "latest", [FBD_ON_STALL_DROP] = "drop"};
	static const char *const on_ends[] = {
	    [FBD_ON_END_AUTO] = "auto", [FBD_ON_END_RETRY] = "retry", [FBD_ON_END_END] = "end"};
	static const char *const rtsp_clients[] = {
	    [FBD_RTSP_CLIENT_BUILTIN] = "builtin", [FBD_RTSP_CLIENT_FFMPEG] = "ffmpeg"};
	uint64_t n;
	uint32_t e;
	int f;

	if (!strcmp(key, "url")) {
		if (!*v)
			return fbd_ini_fail(&p->ini, section, key, "empty url");
		return fbd_ini_set_string(&s->url, v)
			   ? 1
			   : fbd_ini_fail(&p->ini, section, key, "out of memory");
	}
	if (!strcmp(key, "from")) {
		if (!fbd_ini_stream_name(v))
			return fbd_ini_fail(&p->ini, section, key, "'%s' is not a stream name", v);
		return fbd_ini_set_string(&s->from, v)
			   ? 1
			   : fbd_ini_fail(&p->ini, section, key, "out of memory");
	}
	if (!strcmp(key, "crop")) {
		uint32_t c[4];
		int used = 0;
		if (sscanf(v, "%u , %u , %u , %u %n", &c[0], &c[1], &c[2], &c[3], &used) != 4 ||
		    v[used] || v[0] == '-' || !c[2] || !c[3] || c[0] >= FB_MAX_DIMENSION ||
		    c[1] >= FB_MAX_DIMENSION || c[2] > FB_MAX_DIMENSION - c[0] ||
		    c[3] > FB_MAX_DIMENSION - c[1])
			return fbd_ini_fail(
			    &p->ini, section, key,
			    "'%s' is not X,Y,WIDTH,HEIGHT (a rectangle of at least 1x1 "
			    "within %d pixels)",
			    v, FB_MAX_DIMENSION);
		memcpy(s->crop, c, sizeof(c));
		return 1;
	}
	if (!strcmp(key, "fps")) {
		char *end;
		double fps = strtod(v, &end);
		if (end == v || *end || !(fps >= 0.1 && fps <= 1000))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a rate from 0.1 to 1000", v);
		s->fps_milli = (uint32_t)(fps * 1000 + 0.5);
		return 1;
	}
	if (!strcmp(key, "input_format"))
		return fbd_ini_set_string(&s->input_format, v)
			   ? 1
			   : fbd_ini_fail(&p->ini, section, key, "out of memory");
	if (!strcmp(key, "width") || !strcmp(key, "height")) {
		if (!fbd_ini_uint(v, 1, FB_MAX_DIMENSION, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 1 to %d", v,
					    FB_MAX_DIMENSION);
		*(key[0] == 'w' ? &s->width : &s->height) = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "format")) {
		if ((f = fb_format_from_name(v)) < 0)
			return fbd_ini_fail(
			    &p->ini, section, key,
			    "'%s' is not one of gray8, gray16, bgr24, rgb24, bgra, rgba, "
			    "nv12, yuv420p, yuyv422",
			    v);
		if (f == FB_FORMAT_RESULTS)
			return fbd_ini_fail(
			    &p->ini, section, key,
			    "'results' streams carry no pixels: clients publish them "
			    "(fb_client_publish_results)");
		s->format = (uint32_t)f;
		return 1;
	}
	if (!strcmp(key, "slots")) {
		if (!fbd_ini_uint(v, FB_MIN_SLOTS, FB_MAX_SLOTS, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from %d to %d", v, FB_MIN_SLOTS,
					    FB_MAX_SLOTS);
		s->slots = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "policy")) {
		if (!fbd_ini_enum(v, policies, 2, &s->policy))
			return fbd_ini_fail(&p->ini, section, key, "'%s' is not drop or block", v);
		return 1;
	}
	if (!strcmp(key, "pacing")) {
		if (!fbd_ini_enum(v, pacings, 3, &e))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not auto, native or fast", v);
		s->pacing = e;
		return 1;
	}
	if (!strcmp(key, "rtsp_client")) {
		if (!fbd_ini_enum(v, rtsp_clients, 2, &s->rtsp_client))
			return fbd_ini_fail(&p->ini, section, key, "'%s' is not builtin or ffmpeg",
					    v);
		return 1;
	}
	if (!strcmp(key, "scale")) {
		if (!fbd_ini_enum(v, scales, 4, &s->scale))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not bilinear, fast_bilinear, area or bicubic",
					    v);
		return 1;
	}
	if (!strcmp(key, "on_end")) {
		if (!fbd_ini_enum(v, on_ends, 3, &s->on_end))
			return fbd_ini_fail(&p->ini, section, key, "'%s' is not auto, retry or end",
					    v);
		return 1;
	}
	if (!strcmp(key, "loop"))
		return fbd_ini_bool(v, &s->loop)
			   ? 1
			   : fbd_ini_fail(&p->ini, section, key, "'%s' is not true or false", v);
	if (!strcmp(key, "decoder_threads")) {
		if (!fbd_ini_uint(v, 0, 64, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 0 to 64", v);
		s->decoder_threads = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "scale_threads")) {
		if (!fbd_ini_uint(v, 0, 64, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 0 to 64", v);
		s->scale_threads = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "meta_max")) {
		if (!fbd_ini_uint(v, 0, FB_MAX_META, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 0 to %d", v, FB_MAX_META);
		s->meta_max = (uint32_t)n;
		return 1;
	}
	if (!strcmp(key, "retry_min") || !strcmp(key, "retry_max") ||
	    !strcmp(key, "stall_timeout") || !strcmp(key, "block_timeout")) {
		uint64_t ns;
		if (!fbd_ini_duration(v, &ns) || ns == 0)
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a duration such as 500ms, 2s or 1m", v);
		*(!strcmp(key, "retry_min")       ? &s->retry_min_ns
		  : !strcmp(key, "retry_max")     ? &s->retry_max_ns
		  : !strcmp(key, "stall_timeout") ? &s->stall_timeout_ns
						  : &s->block_timeout_ns) = ns;
		return 1;
	}
	if (!strcmp(key, "hold_timeout"))
		return hold_timeout(p, section, key, v, &s->hold_timeout_ns);
	if (!strcmp(key, "on_stall")) {
		if (!fbd_ini_enum(v, on_stalls, 2, &s->on_stall))
			return fbd_ini_fail(&p->ini, section, key, "'%s' is not latest or drop", v);
		return 1;
	}
	if (!strncmp(key, "option.", 7) && key[7]) {
		if (s->n_options == FBD_MAX_OPTIONS)
			return fbd_ini_fail(&p->ini, section, key, "more than %d FFmpeg options",
					    FBD_MAX_OPTIONS);
		s->option_keys[s->n_options] = strdup(key + 7);
		s->option_values[s->n_options] = strdup(v);
		s->n_options++;
		return 1;
	}
	return fbd_ini_fail(&p->ini, section, key, "unknown key");
}

/* A pattern of stream names: a name's characters and fnmatch's. */
static bool pattern_ok(const char *pattern)
{
	size_t len = strlen(pattern);
	if (len == 0 || len > FB_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((pattern[i] >= 'a' && pattern[i] <= 'z') ||
		      (pattern[i] >= 'A' && pattern[i] <= 'Z') ||
		      (pattern[i] >= '0' && pattern[i] <= '9') || strchr("._-*?[]!", pattern[i])))
			return false;
	return true;
}

/* A numeric id, or -1. */
static int64_t parse_id(const char *v)
{
	uint64_t n;
	return fbd_ini_uint(v, 0, UINT32_MAX - 1, &n) ? (int64_t)n : -1;
}

/* "@video alice 1001 @2000": users and groups (@), by name or number; names
 * are resolved now, an unknown one is an error. */
static int access_ids(struct parser *p, const char *section, const char *key, const char *v,
		      struct fbd_access_ids *ids)
{
	char copy[1024], *save = NULL;
	if (strlen(v) >= sizeof(copy))
		return fbd_ini_fail(&p->ini, section, key, "longer than %zu bytes",
				    sizeof(copy) - 1);
	strcpy(copy, v);
	ids->given = true;
	for (char *w = strtok_r(copy, " \t,", &save); w; w = strtok_r(NULL, " \t,", &save)) {
		bool group = w[0] == '@';
		const char *name = w + group;
		int64_t id = parse_id(name);
		if (id < 0 && group) {
			struct group *g = getgrnam(name);
			if (!g)
				return fbd_ini_fail(&p->ini, section, key, "no group '%s'", name);
			id = g->gr_gid;
		} else if (id < 0) {
			struct passwd *u = getpwnam(name);
			if (!u)
				return fbd_ini_fail(&p->ini, section, key, "no user '%s'", name);
			id = u->pw_uid;
		}
		uint32_t *n = group ? &ids->n_gids : &ids->n_uids;
		if (*n == FBD_MAX_ACCESS_IDS)
			return fbd_ini_fail(&p->ini, section, key, "more than %d %s",
					    FBD_MAX_ACCESS_IDS, group ? "groups" : "users");
		(group ? ids->gids : ids->uids)[(*n)++] = (uint32_t)id;
	}
	return 1;
}

static int access_key(struct parser *p, const char *section, const char *key, const char *v)
{
	struct fbd_access_rule *a = p->rule;

	if (!strcmp(key, "streams")) {
		char copy[(FB_NAME_MAX + 1) * FBD_MAX_ACCESS_PATTERNS], *save = NULL;
		if (strlen(v) >= sizeof(copy))
			return fbd_ini_fail(&p->ini, section, key, "longer than %zu bytes",
					    sizeof(copy) - 1);
		strcpy(copy, v);
		for (char *w = strtok_r(copy, " \t,", &save); w;
		     w = strtok_r(NULL, " \t,", &save)) {
			if (!pattern_ok(w))
				return fbd_ini_fail(
				    &p->ini, section, key,
				    "'%s' is not a stream name or pattern (letters, "
				    "digits, '.', '_', '-' and * ? [ ] !)",
				    w);
			if (a->n_patterns == FBD_MAX_ACCESS_PATTERNS)
				return fbd_ini_fail(&p->ini, section, key, "more than %d patterns",
						    FBD_MAX_ACCESS_PATTERNS);
			strcpy(a->patterns[a->n_patterns++], w);
		}
		return a->n_patterns
			   ? 1
			   : fbd_ini_fail(&p->ini, section, key, "no stream name or pattern");
	}
	if (!strcmp(key, "subscribe"))
		return access_ids(p, section, key, v, &a->subscribe);
	if (!strcmp(key, "publish"))
		return access_ids(p, section, key, v, &a->publish);
	return fbd_ini_fail(&p->ini, section, key,
			    "unknown key (expected streams, subscribe or publish)");
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parser *p = user;

	if (p->ini.failed)
		return 0;
	if (strcmp(p->section, section)) {
		snprintf(p->section, sizeof(p->section), "%s", section);
		p->n_seen = 0;
	}
	for (unsigned i = 0; i < p->n_seen; i++)
		if (!strcmp(p->seen[i], key))
			return fbd_ini_fail(&p->ini, section, key,
					    "given twice (or the section appears twice)");
	if (p->n_seen < sizeof(p->seen) / sizeof(p->seen[0]))
		snprintf(p->seen[p->n_seen++], sizeof(p->seen[0]), "%s", key);
	if (!strcmp(section, "daemon"))
		return daemon_key(p, section, key, value);
	if (!strncmp(section, "stream ", 7)) {
		const char *name = section + 7;
		if (!p->stream || strcmp(p->stream->name, name)) {
			if (!fbd_ini_stream_name(name))
				return fbd_ini_fail(
				    &p->ini, section, key,
				    "stream name '%s' must be 1-%d letters, digits, '.', "
				    "'_' or '-'",
				    name, FB_NAME_MAX);
			for (uint32_t i = 0; i < p->config->n_streams; i++)
				if (!strcmp(p->config->streams[i].name, name))
					return fbd_ini_fail(&p->ini, section, key,
							    "stream '%s' is defined twice", name);
			if (p->config->n_streams == FBD_MAX_STREAMS)
				return fbd_ini_fail(&p->ini, section, key, "more than %d streams",
						    FBD_MAX_STREAMS);
			p->stream = &p->config->streams[p->config->n_streams++];
			fbd_stream_config_defaults(p->stream);
			/* [daemon]'s, below */
			p->stream->scale_threads = SCALE_THREADS_UNSET;
			p->stream->hold_timeout_ns = HOLD_TIMEOUT_UNSET;
			strcpy(p->stream->name, name);
		}
		return stream_key(p, section, key, value);
	}
	if (!strncmp(section, "access ", 7)) {
		const char *name = section + 7;
		if (!p->rule || strcmp(p->rule->name, name)) {
			if (!fbd_ini_stream_name(name))
				return fbd_ini_fail(
				    &p->ini, section, key,
				    "rule name '%s' must be 1-%d letters, digits, '.', "
				    "'_' or '-'",
				    name, FB_NAME_MAX);
			for (uint32_t i = 0; i < p->config->n_access; i++)
				if (!strcmp(p->config->access[i].name, name))
					return fbd_ini_fail(&p->ini, section, key,
							    "rule '%s' is defined twice", name);
			if (p->config->n_access == FBD_MAX_ACCESS_RULES)
				return fbd_ini_fail(&p->ini, section, key,
						    "more than %d [access] rules",
						    FBD_MAX_ACCESS_RULES);
			p->rule = &p->config->access[p->config->n_access++];
			strcpy(p->rule->name, name);
		}
		return access_key(p, section, key, value);
	}
	return fbd_ini_fail(&p->ini, section, key,
			    "unknown section (expected [daemon], [stream NAME] or [access NAME])");
}

static const char *check_stream(const struct fbd_stream_config *s)
{
	static char why[160];
	struct fb_layout l;
	if (!s->url && !s->from)
		return "no url (or from, for a derived stream)";
	if (s->url && s->from)
		return "url and from both given: a stream has one source";
	if (s->fps_milli && !s->from)
		return "fps limits a derived stream (one with from)";
	if (s->crop[2] && !s->from)
		return "crop takes part of a parent's picture: a derived stream (one with from)";
	if ((s->width == 0) != (s->height == 0))
		return "width and height must be given together";
	if (s->width && fb_layout_compute(s->width, s->height, s->format, &l) < 0) {
		snprintf(why, sizeof(why),
			 "%ux%u is not a valid size for %s (nv12 and yuv420p need even sizes, "
			 "yuyv422 an even width)",
			 s->width, s->height, fb_format_name(s->format));
		return why;
	}
	if (s->retry_min_ns > s->retry_max_ns)
		return "retry_min is longer than retry_max";
	return NULL;
}

static const struct fbd_stream_config *find(const struct fbd_config *c, const char *name)
{
	for (uint32_t i = 0; i < c->n_streams; i++)
		if (!strcmp(c->streams[i].name, name))
			return &c->streams[i];
	return NULL;
}

/* A derived stream's parent is in the file, and no chain of parents comes
 * back to it. */
static const char *check_parent(const struct fbd_config *c, const struct fbd_stream_config *s)
{
	static char why[320];
	const struct fbd_stream_config *at = s;
	size_t n = (size_t)snprintf(why, sizeof(why), "from: a cycle: %s", s->name);

	if (!s->from)
		return NULL;
	for (uint32_t hops = 0; at->from && hops <= c->n_streams; hops++) {
		const struct fbd_stream_config *parent = find(c, at->from);
		if (!parent) {
			snprintf(why, sizeof(why), "from: no stream '%s' in this file", at->from);
			return at == s ? why : NULL; /* (said for the stream that names it) */
		}
		if (n < sizeof(why))
			n += (size_t)snprintf(why + n, sizeof(why) - n, " -> %s", parent->name);
		if (parent == s)
			return why;
		at = parent;
	}
	return NULL;
}

int fbd_config_load(const char *path, struct fbd_config **ret_config, char *error, size_t size)
{
	struct parser p = {.ini = {.path = path, .error = error, .error_size = size}};
	int r;

	p.ini.file = fopen(path, "re");
	if (!p.ini.file) {
		r = -errno;
		snprintf(error, size, "%s: %s", path, strerror(-r));
		return r;
	}
	p.config = config_new();
	if (!p.config) {
		fclose(p.ini.file);
		return -ENOMEM;
	}
	r = ini_parse_stream(read_line, &p, handler, &p);
	fclose(p.ini.file);
	if (r > 0 && !p.ini.failed) {
		snprintf(error, size,
			 "%s:%d: syntax error (expected [section], key = value or a comment)", path,
			 r);
		p.ini.failed = true;
	}
	for (uint32_t i = 0; i < p.config->n_streams; i++) {
		struct fbd_stream_config *s = &p.config->streams[i];
		if (s->scale_threads == SCALE_THREADS_UNSET)
			s->scale_threads = p.config->scale_threads;
		if (s->hold_timeout_ns == HOLD_TIMEOUT_UNSET)
			s->hold_timeout_ns = p.config->hold_timeout_ns;
	}
	for (uint32_t i = 0; !p.ini.failed && i < p.config->n_streams; i++) {
		const char *why = check_stream(&p.config->streams[i]);
		if (!why)
			why = check_parent(p.config, &p.config->streams[i]);
		if (why) {
			snprintf(error, size, "%s: [stream %s]: %s", path,
				 p.config->streams[i].name, why);
			p.ini.failed = true;
		}
	}
	for (uint32_t i = 0; !p.ini.failed && i < p.config->n_access; i++)
		if (!p.config->access[i].n_patterns) {
			snprintf(error, size, "%s: [access %s]: no streams (the names it covers)",
				 path, p.config->access[i].name);
			p.ini.failed = true;
		}
	if (p.ini.failed) {
		fbd_config_free(p.config);
		return -EINVAL;
	}
	*ret_config = p.config;
	return 0;
}

int fbd_config_default(struct fbd_config **ret_config)
{
	struct fbd_config *c = config_new();
	if (!c)
		return -ENOMEM;
	struct fbd_stream_config *s = &c->streams[c->n_streams++];
	fbd_stream_config_defaults(s);
	strcpy(s->name, "cam0");
	s->url = strdup("testsrc2=size=1280x720:rate=30");
	s->input_format = strdup("lavfi");
	s->width = 1280;
	s->height = 720;
	if (!s->url || !s->input_format) {
		fbd_config_free(c);
		return -ENOMEM;
	}
	*ret_config = c;
	return 0;
}

static void stream_config_clear(struct fbd_stream_config *s)
{
	free(s->url);
	free(s->from);
	free(s->input_format);
	for (uint32_t i = 0; i < s->n_options; i++) {
		free(s->option_keys[i]);
		free(s->option_values[i]);
	}
}

void fbd_config_free(struct fbd_config *c)
{
	if (!c)
		return;
	for (uint32_t i = 0; i < c->n_streams; i++)
		stream_config_clear(&c->streams[i]);
	free(c->socket_path);
	free(c->socket_group);
	free(c->metrics);
	free(c);
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

void fbd_url_shown(const char *url, char *out, size_t size)
{
	/* Only a URL has a user and password: a file's name is shown whole. */
	const char *scheme = strstr(url, "://");
	const char *userinfo = scheme ? scheme + 3 : url;
	size_t authority = scheme ? strcspn(userinfo, "/?#") : 0;
	const char *at = memrchr(userinfo, '@', authority);
	const char *colon = at ? memchr(userinfo, ':', (size_t)(at - userinfo)) : NULL;
	if (!colon)
		snprintf(out, size, "%s", url);
	else
		snprintf(out, size, "%.*s%s", (int)(colon - url), url, at);
}

bool fbd_stream_config_live(const struct fbd_stream_config *cfg)
{
	if (!cfg->url)
		return false; /* derived */
	if (cfg->input_format)
		return strcmp(cfg->input_format, "lavfi") != 0;
	return strstr(cfg->url, "://") && strncmp(cfg->url, "file://", 7) != 0;
}

bool fbd_stream_config_equal(const struct fbd_stream_config *a, const struct fbd_stream_config *b)
{
	if (strcmp(a->name, b->name) || !str_eq(a->url, b->url) || !str_eq(a->from, b->from) ||
	    a->fps_milli != b->fps_milli || memcmp(a->crop, b->crop, sizeof(a->crop)) ||
	    !str_eq(a->input_format, b->input_format) || a->width != b->width ||
	    a->height != b->height || a->format != b->format || a->slots != b->slots ||
	    a->policy != b->policy || a->meta_max != b->meta_max || a->pacing != b->pacing ||
	    a->rtsp_client != b->rtsp_client || a->on_end != b->on_end || a->scale != b->scale ||
	    a->loop != b->loop || a->decoder_threads != b->decoder_threads ||
	    a->scale_threads != b->scale_threads || a->retry_min_ns != b->retry_min_ns ||
	    a->retry_max_ns != b->retry_max_ns || a->stall_timeout_ns != b->stall_timeout_ns ||
	    a->block_timeout_ns != b->block_timeout_ns || a->on_stall != b->on_stall ||
	    a->hold_timeout_ns != b->hold_timeout_ns || a->n_options != b->n_options)
		return false;
	for (uint32_t i = 0; i < a->n_options; i++)
		if (!str_eq(a->option_keys[i], b->option_keys[i]) ||
		    !str_eq(a->option_values[i], b->option_values[i]))
			return false;
	return true;
}

struct fbd_stream_config *fbd_stream_config_dup(const struct fbd_stream_config *c)
{
	struct fbd_stream_config *d = malloc(sizeof(*d));
	if (!d)
		return NULL;
	*d = *c;
	d->url = c->url ? strdup(c->url) : NULL;
	d->from = c->from ? strdup(c->from) : NULL;
	d->input_format = c->input_format ? strdup(c->input_format) : NULL;
	for (uint32_t i = 0; i < c->n_options; i++) {
		d->option_keys[i] = strdup(c->option_keys[i]);
		d->option_values[i] = strdup(c->option_values[i]);
	}
	return d;
}

void fbd_stream_config_free(struct fbd_stream_config *c)
{
	if (!c)
		return;
	stream_config_clear(c);
	free(c);
}
