/* SPDX-License-Identifier: MIT */
/*
 * framebus-mqtt: each frame's meta of chosen streams (a results stream's
 * records, gray.py's JSON) to an MQTT broker, for Home Assistant and the
 * like: PREFIX/STREAM/result per frame, PREFIX/STREAM/state (retained) once
 * a second, PREFIX/availability (retained, with a last will).
 *
 * Two threads that share only a bounded queue.  The main thread reads the
 * streams (queue mode: every record) and the daemon; it never waits on the
 * network: a full queue loses its oldest message, counted.  The network
 * thread owns the mosquitto handle, drives it from its own poll loop,
 * connects again with a backoff and hands libmosquitto at most WINDOW
 * messages not yet confirmed, across connections, so the queue, not
 * libmosquitto, holds what waits.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <limits.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <stddef.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-id128.h>

#include "framebus/framebus.h"
#include "inifile.h"
#include "meta.h"

#define MAX_STREAMS 64
/* Messages handed to libmosquitto and not yet written (QoS 0) or
 * acknowledged (QoS 1, 2): the rest wait in our queue. */
#define WINDOW 64
#define KEEPALIVE_S 30
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
/* A connection that lasted this long sets the backoff back to its least:
 * one that a broker ends at once (another client with our id) does not. */
#define STABLE_MS 30000
/* Exit status when the client id is another's (systemd does not restart). */
#define EXIT_ID_TAKEN 3
/* On stopping, how long what was handed over may take to be confirmed. */
#define FLUSH_MS 3000
/* ... and how long the network thread may take to end, in all: it may be
 * stuck resolving the broker's name (libmosquitto's getaddrinfo() blocks).
 * Less than the unit's TimeoutStopSec=. */
#define STOP_S 6
/* The main thread's tick: subscribing again, and every TICKS_PER_STATE
 * ticks each stream's state. */
#define TICK_MS 250
#define TICKS_PER_STATE 4

struct config {
	char *broker; /* as given, for messages */
	char *host;
	int port;
	bool tls;
	char *credentials_file;
	char *ca_file;
	char *client_id;
	char *prefix;
	int qos;
	size_t queue;
	size_t queue_bytes;
	char *username, *password;
};

struct stream {
	char name[FB_NAME_MAX + 1];
	char *topic; /* the STREAM part of its topics (default: its name) */
	int qos;     /* -1: [mqtt] qos */
	char *result_topic, *state_topic;
	/* The main thread's: */
	fb_subscriber *sub;
	fb_subscriber *lost; /* ended because framebusd went away: resubscribe */
	bool ended;          /* its producer ended it; subscribe anew if it returns */
	bool seen;           /* subscribed once */
	uint64_t seq, frames, missed;
	/* Shared, under bridge.lock: */
	char *state_sent; /* the last state posted, published again on connecting */
	char *state;      /* to publish (retained), NULL: nothing new */
	/* sent: acknowledged by the broker (QoS 1, 2) or written to the
	 * connection (QoS 0); dropped: lost from a full queue, with a broken
	 * connection (QoS 0) or refused by the broker. */
	uint64_t dropped, sent;
	/* Counted once both threads ended: still in the queue, or handed to
	 * libmosquitto and not confirmed, when we stopped. */
	uint64_t unsent;
};

/* One result waiting for the broker. */
struct message {
	struct stream *stream;
	uint64_t seq, source_seq;
	char *payload;
	size_t len;
};

/* A message handed to libmosquitto and not yet confirmed (on_publish). */
struct inflight {
	int mid;
	int qos;
	struct stream *stream; /* NULL: a state */
};

struct bridge {
	struct config cfg;
	const char *config_path;
	struct stream streams[MAX_STREAMS];
	size_t n_streams;
	char *availability_topic;
	struct mosquitto *mosq;
	int net_wake;  /* eventfd: the queue has work, or stop */
	int main_wake; /* eventfd: the network thread ended */

	pthread_mutex_t lock;
	struct message *queue; /* a ring of cfg.queue */
	size_t head, count;
	size_t bytes; /* the payloads in the queue, at most cfg.queue_bytes */
	bool stopping;
	int net_status; /* the exit status the network thread ended with */

	/* The network thread's: */
	bool connected;
	bool leaving;         /* saying goodbye: a disconnection is ours */
	bool refused;         /* the broker refused the connection, and we said so */
	bool disconnected;    /* on_disconnect() said why */
	char last_error[256]; /* libmosquitto's first error log since connecting */
	/* At most WINDOW, kept across connections: libmosquitto sends its
	 * QoS 1 and 2 messages again on the next one. */
	struct inflight inflight[WINDOW];
	size_t n_inflight;
	bool publishing;    /* in mosquitto_publish_v5(), from pump() */
	bool published_now; /* ... and that message was written already */
	int backoff_ms;
	uint64_t connected_at;
	bool taken_over;
};

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

struct parser {
	struct bridge *b;
	struct fbd_ini_file ini;
};

static struct stream *find_stream(struct bridge *b, const char *name)
{
	for (size_t i = 0; i < b->n_streams; i++)
		if (!strcmp(b->streams[i].name, name))
			return &b->streams[i];
	return NULL;
}

/* A stream named in the configuration; NULL (and the parser failed) for a
 * bad name, one named twice or one too many. */
static struct stream *add_stream(struct parser *p, const char *section, const char *key,
				 const char *name)
{
	struct bridge *b = p->b;
	if (!fbd_ini_stream_name(name)) {
		fbd_ini_fail(&p->ini, section, key,
			     "stream name '%s' must be 1-%d letters, digits, '.', '_' or '-'", name,
			     FB_NAME_MAX);
		return NULL;
	}
	if (find_stream(b, name)) {
		fbd_ini_fail(&p->ini, section, key, "stream '%s' is named twice", name);
		return NULL;
	}
	if (b->n_streams == MAX_STREAMS) {
		fbd_ini_fail(&p->ini, section, key, "more than %d streams", MAX_STREAMS);
		return NULL;
	}
	struct stream *s = &b->streams[b->n_streams++];
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->qos = -1;
	return s;
}

static bool parse_int(const char *v, long min, long max, long *ret)
{
	char *end;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < min || n > max)
		return false;
	*ret = n;
	return true;
}

/* A topic level of ours: no wildcards, and for a stream's part no '/'. */
static bool topic_ok(const char *t, bool levels)
{
	return t[0] && !strpbrk(t, levels ? "+#" : "+#/") && t[0] != '/' &&
	       t[strlen(t) - 1] != '/' && mosquitto_pub_topic_check(t) == MOSQ_ERR_SUCCESS;
}

/* broker = mqtt://HOST[:PORT] or mqtts://HOST[:PORT], HOST an IPv6 address
 * in brackets. */
static const char *parse_broker(struct config *c, const char *url)
{
	const char *rest;
	if (!strncmp(url, "mqtt://", 7))
		rest = url + 7, c->tls = false;
	else if (!strncmp(url, "mqtts://", 8))
		rest = url + 8, c->tls = true;
	else
		return "must start with mqtt:// or mqtts:// (TLS)";
	const char *end, *colon;
	if (rest[0] == '[') {
		end = strchr(rest, ']');
		if (!end)
			return "an IPv6 address needs its closing ']'";
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] && !colon)
			return "only a port may follow the host";
		rest++;
	} else {
		colon = strchr(rest, ':');
		end = colon ? colon : rest + strlen(rest);
	}
	if (end == rest)
		return "no host";
	if (memchr(rest, '/', (size_t)(end - rest)))
		return "a broker URL has no path";
	long port = c->tls ? 8883 : 1883;
	if (colon && !parse_int(colon + 1, 1, 65535, &port))
		return "the port must be a number from 1 to 65535";
	free(c->host);
	c->host = strndup(rest, (size_t)(end - rest));
	c->port = (int)port;
	return NULL;
}

static int mqtt_key(struct parser *p, const char *section, const char *key, const char *v)
{
	struct config *c = &p->b->cfg;
	long n;
	if (!strcmp(key, "broker")) {
		const char *why = parse_broker(c, v);
		if (why)
			return fbd_ini_fail(&p->ini, section, key, "'%s' %s", v, why);
		return fbd_ini_set_string(&c->broker, v);
	}
	if (!strcmp(key, "credentials_file") || !strcmp(key, "ca_file")) {
		if (v[0] != '/')
			return fbd_ini_fail(&p->ini, section, key, "'%s' is not an absolute path",
					    v);
		return fbd_ini_set_string(
		    key[0] == 'c' && key[1] == 'r' ? &c->credentials_file : &c->ca_file, v);
	}
	if (!strcmp(key, "client_id")) {
		if (!v[0] || strlen(v) > 64)
			return fbd_ini_fail(&p->ini, section, key, "must be 1 to 64 characters");
		return fbd_ini_set_string(&c->client_id, v);
	}
	if (!strcmp(key, "prefix")) {
		if (!topic_ok(v, true))
			return fbd_ini_fail(
			    &p->ini, section, key,
			    "'%s' is not a topic prefix (no '+' or '#', no '/' at either end)", v);
		return fbd_ini_set_string(&c->prefix, v);
	}
	if (!strcmp(key, "qos")) {
		if (!parse_int(v, 0, 2, &n))
			return fbd_ini_fail(&p->ini, section, key, "'%s' is not 0, 1 or 2", v);
		c->qos = (int)n;
		return 1;
	}
	if (!strcmp(key, "queue")) {
		if (!parse_int(v, 1, 1000000, &n))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not a number from 1 to 1000000", v);
		c->queue = (size_t)n;
		return 1;
	}
	if (!strcmp(key, "queue_bytes")) {
		uint64_t bytes;
		if (!fbd_ini_size(v, &bytes) || bytes < 65536 || bytes > (uint64_t)1 << 30)
			return fbd_ini_fail(
			    &p->ini, section, key,
			    "'%s' is not a size from 64K to 1G (bytes, or with K, M or G)", v);
		c->queue_bytes = (size_t)bytes;
		return 1;
	}
	if (!strcmp(key, "streams")) {
		char *list = strdup(v), *save = NULL;
		for (char *t = strtok_r(list, ", \t", &save); t && !p->ini.failed;
		     t = strtok_r(NULL, ", \t", &save))
			add_stream(p, section, key, t);
		free(list);
		return p->ini.failed ? 0 : 1;
	}
	return fbd_ini_fail(&p->ini, section, key, "unknown key");
}

static int stream_key(struct parser *p, struct stream *s, const char *section, const char *key,
		      const char *v)
{
	long n;
	if (!strcmp(key, "qos")) {
		if (!parse_int(v, 0, 2, &n))
			return fbd_ini_fail(&p->ini, section, key, "'%s' is not 0, 1 or 2", v);
		s->qos = (int)n;
		return 1;
	}
	if (!strcmp(key, "topic")) {
		if (!topic_ok(v, false))
			return fbd_ini_fail(&p->ini, section, key,
					    "'%s' is not one topic level (no '/', '+' or '#')", v);
		return fbd_ini_set_string(&s->topic, v);
	}
	return fbd_ini_fail(&p->ini, section, key, "unknown key");
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parser *p = user;
	if (p->ini.failed)
		return 0;
	if (!strcmp(section, "mqtt"))
		return mqtt_key(p, section, key, value);
	if (!strncmp(section, "stream ", 7)) {
		struct stream *s = find_stream(p->b, section + 7);
		return s ? stream_key(p, s, section, key, value) : 0; /* read_line failed */
	}
	return fbd_ini_fail(&p->ini, section[0] ? section : NULL, key,
			    "unknown section (expected [mqtt] or [stream NAME])");
}

/* Reads one line for inih and counts lines, so errors can name them.  A
 * [stream NAME] header adds the stream here: inih says nothing of a section
 * without keys, and "[stream cam0.people]" alone is a complete one.  A
 * line longer than inih's buffer is refused here: inih would read its rest
 * as another line. */
static char *read_line(char *str, int num, void *stream)
{
	struct parser *p = stream;
	char *r = fbd_ini_read_line(&p->ini, str, num);
	if (!r)
		return NULL;
	char name[128];
	if (!fbd_ini_header(r, "stream", name, sizeof(name)))
		return r;
	if (find_stream(p->b, name))
		fbd_ini_fail(&p->ini, "stream", name, "defined twice (or also in streams =)");
	else
		add_stream(p, "stream", name, name);
	return r;
}

static int parse_file(struct parser *p)
{
	p->ini.file = fopen(p->ini.path, "r");
	if (!p->ini.file) {
		snprintf(p->ini.error, p->ini.error_size, "%s: %s", p->ini.path, strerror(errno));
		return -1;
	}
	int r = ini_parse_stream(read_line, p, handler, p);
	fclose(p->ini.file);
	if (p->ini.failed)
		return -1;
	if (r != 0) {
		snprintf(p->ini.error, p->ini.error_size,
			 "%s:%d: syntax error (expected [section], key = value or a comment)",
			 p->ini.path, r);
		return -1;
	}
	return 0;
}

/* The credentials file, not read by inih: it would end a password at a
 * ';' after white space (a comment) and at 199 characters.  Lines are
 * "username = VALUE" and "password = VALUE", blank, or comments starting
 * with '#' or ';'.  VALUE is the rest of the line, everything kept but the
 * spaces and tabs at either end (and the line's CR LF or LF). */
static int read_credentials(struct parser *p)
{
	struct config *c = &p->b->cfg;
	char *line = NULL;
	size_t size = 0;
	ssize_t n;

	p->ini.file = fopen(p->ini.path, "r");
	if (!p->ini.file) {
		snprintf(p->ini.error, p->ini.error_size, "%s: %s", p->ini.path, strerror(errno));
		return -1;
	}
	while (!p->ini.failed && (n = getline(&line, &size, p->ini.file)) >= 0) {
		p->ini.line++;
		while (n > 0 && strchr("\r\n \t", line[n - 1]))
			line[--n] = 0;
		char *key = line + strspn(line, " \t");
		if (!key[0] || key[0] == '#' || key[0] == ';')
			continue;
		char *eq = strchr(key, '=');
		if (key[0] == '[' || !eq) {
			snprintf(p->ini.error, p->ini.error_size,
				 "%s:%u: expected username = or password = (or a comment)",
				 p->ini.path, p->ini.line);
			p->ini.failed = true;
			break;
		}
		char *value = eq + 1 + strspn(eq + 1, " \t");
		while (eq > key && (eq[-1] == ' ' || eq[-1] == '\t'))
			eq--;
		*eq = 0;
		char **field = !strcmp(key, "username")   ? &c->username
			       : !strcmp(key, "password") ? &c->password
							  : NULL;
		if (!field)
			fbd_ini_fail(&p->ini, NULL, key,
				     "unknown key (expected username or password)");
		else if (*field)
			fbd_ini_fail(&p->ini, NULL, key, "given twice");
		else if (!fbd_ini_set_string(field, value))
			fbd_ini_fail(&p->ini, NULL, key, "%s", strerror(ENOMEM));
	}
	free(line);
	fclose(p->ini.file);
	return p->ini.failed ? -1 : 0;
}

static int load_config(struct bridge *b, char *error, size_t size)
{
	struct config *c = &b->cfg;
	struct parser p = {.b = b,
			   .ini = {.path = b->config_path, .error = error, .error_size = size}};
	char host[HOST_NAME_MAX + 1] = "localhost";

	c->qos = 0;
	c->queue = 1000;
	c->queue_bytes = 16 << 20;
	if (parse_file(&p) < 0)
		return -1;
	if (!c->broker) {
		snprintf(error, size, "%s: [mqtt] broker: missing (e.g. mqtt://127.0.0.1:1883)",
			 b->config_path);
		return -1;
	}
	if (b->n_streams == 0) {
		snprintf(error, size,
			 "%s: no stream to publish: name them in [mqtt] streams = or in "
			 "[stream NAME] sections",
			 b->config_path);
		return -1;
	}
	if (c->ca_file && !c->tls) {
		snprintf(error, size,
			 "%s: [mqtt] ca_file: is for mqtts:// brokers, and broker is %s",
			 b->config_path, c->broker);
		return -1;
	}
	if (c->ca_file && access(c->ca_file, R_OK) < 0) {
		snprintf(error, size, "%s: [mqtt] ca_file: %s: %s", b->config_path, c->ca_file,
			 strerror(errno));
		return -1;
	}
	if (c->credentials_file) {
		struct parser cp = {
		    .b = b,
		    .ini = {.path = c->credentials_file, .error = error, .error_size = size}};
		struct stat st;
		if (read_credentials(&cp) < 0)
			return -1;
		if (!c->username) {
			snprintf(error, size, "%s: no username", c->credentials_file);
			return -1;
		}
		if (stat(c->credentials_file, &st) == 0 && (st.st_mode & S_IROTH))
			fprintf(stderr,
				"framebus-mqtt: warning: %s is readable by every user: chmod o-r "
				"it\n",
				c->credentials_file);
	}
	/* One id per machine by default: the same after a restart, so the
	 * broker ends the previous session (and its will says offline) instead
	 * of keeping two.  From the machine id, as systemd would have an
	 * application's (a hash: the machine id itself stays private), since
	 * hosts cloned from one image often share a host name; the host name
	 * where there is no machine id. */
	if (!c->client_id) {
		/* systemd-id128 new: framebus-mqtt's application id */
		const sd_id128_t app =
		    SD_ID128_MAKE(ed, aa, df, 7c, b5, 62, 4f, 15, b6, d7, 31, 34, ae, 63, 52, c1);
		sd_id128_t id;
		int r;
		if (sd_id128_get_machine_app_specific(app, &id) == 0) {
			r = asprintf(&c->client_id, "framebus-mqtt-%016llx",
				     (unsigned long long)be64toh(id.qwords[0]));
		} else {
			gethostname(host, sizeof(host) - 1);
			r = asprintf(&c->client_id, "framebus-mqtt-%.50s", host);
		}
		if (r < 0)
			return -1;
	}
	if (!c->prefix && !(c->prefix = strdup("framebus")))
		return -1;
	if (asprintf(&b->availability_topic, "%s/availability", c->prefix) < 0)
		return -1;
	for (size_t i = 0; i < b->n_streams; i++) {
		struct stream *s = &b->streams[i];
		const char *t = s->topic ? s->topic : s->name;
		if (s->qos < 0)
			s->qos = c->qos;
		if (asprintf(&s->result_topic, "%s/%s/result", c->prefix, t) < 0 ||
		    asprintf(&s->state_topic, "%s/%s/state", c->prefix, t) < 0)
			return -1;
	}
	return 0;
}

static void free_config(struct bridge *b)
{
	struct config *c = &b->cfg;
	free(c->broker);
	free(c->host);
	free(c->credentials_file);
	free(c->ca_file);
	free(c->client_id);
	free(c->prefix);
	free(c->username);
	free(c->password);
	free(b->availability_topic);
	for (size_t i = 0; i < b->n_streams; i++) {
		struct stream *s = &b->streams[i];
		free(s->topic);
		free(s->result_topic);
		free(s->state_topic);
		free(s->state_sent);
		free(s->state);
	}
}

/* ------------------------------------------------------------------------ */
/* The queue between the threads                                             */
/* ------------------------------------------------------------------------ */

static void wake(int fd)
{
	uint64_t one = 1;
	if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		abort(); /* an eventfd that cannot be written is a bug */
}

/* Add a result; a full queue (cfg.queue messages, or cfg.queue_bytes)
 * loses its oldest ones. */
static void enqueue(struct bridge *b, struct message *m)
{
	pthread_mutex_lock(&b->lock);
	size_t n = b->cfg.queue;
	while (b->count == n || (b->count && b->bytes + m->len > b->cfg.queue_bytes)) {
		struct message *old = &b->queue[b->head];
		old->stream->dropped++;
		b->bytes -= old->len;
		free(old->payload);
		b->head = (b->head + 1) % n;
		b->count--;
	}
	b->queue[(b->head + b->count++) % n] = *m;
	b->bytes += m->len;
	pthread_mutex_unlock(&b->lock);
	wake(b->net_wake);
}

/* A stream's new state, to publish once (retained) unless it says what the
 * last one did; a newer one replaces one not yet published. */
static void post_state(struct bridge *b, struct stream *s, char *state)
{
	pthread_mutex_lock(&b->lock);
	bool same = s->state_sent && !strcmp(s->state_sent, state);
	if (!same) {
		free(s->state);
		free(s->state_sent);
		s->state_sent = state;
		s->state = strdup(state);
	}
	pthread_mutex_unlock(&b->lock);
	if (same)
		free(state);
	else
		wake(b->net_wake);
}

/* ------------------------------------------------------------------------ */
/* The network thread                                                        */
/* ------------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
	return fb_now_ns() / 1000000u;
}

/* What a libmosquitto result or an MQTT reason code means. */
static const char *describe(int rc, int err)
{
	if (rc >= 128)
		return mosquitto_reason_string(rc);
	if (rc == MOSQ_ERR_ERRNO)
		return strerror(err);
	return mosquitto_strerror(rc);
}

static void on_connect(struct mosquitto *mosq, void *userdata, int rc, int flags,
		       const mosquitto_property *props)
{
	struct bridge *b = userdata;
	if (rc != 0) {
		fprintf(
		    stderr,
		    "framebus-mqtt: broker %s refused the connection: %s (next try in %.1f s)\n",
		    b->cfg.broker,
		    rc >= 128 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc),
		    b->backoff_ms / 1e3);
		b->refused = true; /* said: the disconnection that follows is no news */
		return;
	}
	fprintf(stderr, "framebus-mqtt: connected to %s as %s\n", b->cfg.broker, b->cfg.client_id);
	b->connected = true;
	b->connected_at = now_ms();
	/* Not in the window: one message per connection. */
	mosquitto_publish_v5(mosq, NULL, b->availability_topic, 6, "online", 1, true, NULL);
	/* Each state again: a broker that restarted may have lost them. */
	pthread_mutex_lock(&b->lock);
	for (size_t i = 0; i < b->n_streams; i++) {
		struct stream *s = &b->streams[i];
		if (!s->state && s->state_sent)
			s->state = strdup(s->state_sent);
	}
	pthread_mutex_unlock(&b->lock);
}

static void on_disconnect(struct mosquitto *mosq, void *userdata, int rc,
			  const mosquitto_property *props)
{
	struct bridge *b = userdata;
	int err = errno;
	bool was = b->connected;
	b->disconnected = true;
	b->connected = false;
	/* QoS 0 messages not written are gone; QoS 1, 2 go again. */
	pthread_mutex_lock(&b->lock);
	for (size_t i = 0; i < b->n_inflight;) {
		struct inflight *f = &b->inflight[i];
		if (f->qos > 0) {
			i++;
			continue;
		}
		if (f->stream)
			f->stream->dropped++;
		*f = b->inflight[--b->n_inflight];
	}
	pthread_mutex_unlock(&b->lock);
	if (b->leaving || b->refused) {
		b->refused = false;
		return;
	}
	if (rc == MQTT_RC_SESSION_TAKEN_OVER) {
		fprintf(stderr,
			"framebus-mqtt: another client connected to %s with client id '%s': "
			"each framebus-mqtt needs its own (client_id in [mqtt]); stopping\n",
			b->cfg.broker, b->cfg.client_id);
		b->taken_over = true;
		return;
	}
	uint64_t lasted = was ? now_ms() - b->connected_at : 0;
	if (was && lasted >= STABLE_MS)
		b->backoff_ms = BACKOFF_MIN_MS;
	fprintf(stderr, "framebus-mqtt: %s %s: %s (next try in %.1f s)",
		was ? "lost the broker" : "cannot connect to broker", b->cfg.broker,
		describe(rc, err), b->backoff_ms / 1e3);
	if (was && lasted < STABLE_MS)
		fprintf(stderr,
			"; connected for %.1f s only: if this repeats, another client may have "
			"client id '%s'",
			lasted / 1e3, b->cfg.client_id);
	fputc('\n', stderr);
}

static void on_log(struct mosquitto *mosq, void *userdata, int level, const char *text)
{
	struct bridge *b = userdata;
	if (level == MOSQ_LOG_ERR && !b->last_error[0])
		snprintf(b->last_error, sizeof(b->last_error), "%s", text);
}

/* A message written (QoS 0) or acknowledged (QoS 1, 2); rc, a reason
 * code, 128 or more when the broker refused it. */
static void on_publish(struct mosquitto *mosq, void *userdata, int mid, int rc,
		       const mosquitto_property *props)
{
	struct bridge *b = userdata;
	size_t i = 0;
	while (i < b->n_inflight && b->inflight[i].mid != mid)
		i++;
	if (i == b->n_inflight) {
		/* Not ours (availability), or the one pump() is handing over,
		 * written before mosquitto_publish_v5() returned its mid. */
		if (b->publishing)
			b->published_now = true;
		return;
	}
	pthread_mutex_lock(&b->lock);
	struct stream *s = b->inflight[i].stream;
	if (s && rc >= 128)
		s->dropped++;
	else if (s)
		s->sent++;
	b->inflight[i] = b->inflight[--b->n_inflight];
	pthread_mutex_unlock(&b->lock);
}

static int publish_result(struct bridge *b, const struct message *m, int *mid)
{
	mosquitto_property *props = NULL;
	char seq[24], source_seq[24];
	snprintf(seq, sizeof(seq), "%llu", (unsigned long long)m->seq);
	snprintf(source_seq, sizeof(source_seq), "%llu", (unsigned long long)m->source_seq);
	int rc = mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "seq", seq);
	if (!rc && m->source_seq)
		rc = mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY,
							"source_seq", source_seq);
	if (!rc)
		rc = mosquitto_publish_v5(b->mosq, mid, m->stream->result_topic, (int)m->len,
					  m->payload, m->stream->qos, false, props);
	mosquitto_property_free_all(&props);
	return rc;
}

/* Hand the broker what waits, states first, while the window has room. */
static void pump(struct bridge *b)
{
	while (b->connected && b->n_inflight < WINDOW) {
		struct stream *state_of = NULL;
		char *state = NULL;
		struct message m = {0};
		pthread_mutex_lock(&b->lock);
		for (size_t i = 0; i < b->n_streams && !state; i++)
			if (b->streams[i].state) {
				state_of = &b->streams[i];
				state = state_of->state;
				state_of->state = NULL;
			}
		if (!state && b->count) {
			m = b->queue[b->head];
			b->head = (b->head + 1) % b->cfg.queue;
			b->count--;
			b->bytes -= m.len;
		}
		pthread_mutex_unlock(&b->lock);
		if (!state && !m.stream)
			return;
		int qos = state ? 1 : m.stream->qos, mid = 0;
		b->publishing = true;
		b->published_now = false;
		int rc = state ? mosquitto_publish_v5(b->mosq, &mid, state_of->state_topic,
						      (int)strlen(state), state, 1, true, NULL)
			       : publish_result(b, &m, &mid);
		int err = errno;
		b->publishing = false;
		/* A QoS 1 or 2 message that got its mid is libmosquitto's even
		 * when sending it failed: it goes again on the next connection. */
		bool kept = rc == MOSQ_ERR_SUCCESS || (qos > 0 && mid && rc != MOSQ_ERR_NOMEM);
		pthread_mutex_lock(&b->lock);
		if (kept && b->published_now) {
			if (m.stream)
				m.stream->sent++;
		} else if (kept) {
			b->inflight[b->n_inflight++] = (struct inflight){mid, qos, m.stream};
		} else if (state && !state_of->state) {
			state_of->state = state, state = NULL; /* again, later */
		} else if (m.stream) {
			m.stream->dropped++;
		}
		pthread_mutex_unlock(&b->lock);
		free(state);
		free(m.payload);
		if (rc != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "framebus-mqtt: cannot publish to %s: %s%s\n",
				b->cfg.broker, describe(rc, err),
				kept ? " (libmosquitto sends it again on connecting)" : "");
			return;
		}
	}
}

/* Read, write and keep alive the connection for at most timeout ms.
 * Returns libmosquitto's result. */
static int serve(struct bridge *b, struct pollfd *p, int timeout)
{
	int sock = mosquitto_socket(b->mosq), rc = MOSQ_ERR_SUCCESS;
	p->fd = sock;
	p->events = POLLIN | (mosquitto_want_write(b->mosq) ? POLLOUT : 0);
	p->revents = 0;
	if (poll(p, 1, timeout) < 0)
		return errno == EINTR ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ERRNO;
	if (p->revents & (POLLIN | POLLERR | POLLHUP))
		rc = mosquitto_loop_read(b->mosq, 1);
	if (!rc && mosquitto_socket(b->mosq) >= 0 && (p->revents & POLLOUT))
		rc = mosquitto_loop_write(b->mosq, 1);
	if (!rc && mosquitto_socket(b->mosq) >= 0)
		rc = mosquitto_loop_misc(b->mosq);
	return rc;
}

static bool all_confirmed(struct bridge *b)
{
	pthread_mutex_lock(&b->lock);
	bool none = b->count == 0;
	pthread_mutex_unlock(&b->lock);
	return none && b->n_inflight == 0;
}

/* Hand over what waits and wait for it to be confirmed, for FLUSH_MS at
 * most; then say offline twice over.  At QoS 0, so that it is not held
 * behind QoS 1 messages libmosquitto keeps back for want of
 * acknowledgements (it sends at most 20 unacknowledged); and by
 * disconnecting with reason 4, which has the broker publish our will
 * (offline) where a plain DISCONNECT would discard it. */
static void say_goodbye(struct bridge *b)
{
	uint64_t deadline = now_ms() + FLUSH_MS;
	struct pollfd p;
	while (b->connected && !all_confirmed(b) && now_ms() < deadline) {
		if (serve(b, &p, 100) != MOSQ_ERR_SUCCESS)
			break;
		pump(b);
	}
	if (!b->connected)
		return; /* the will says offline */
	b->leaving = true;
	mosquitto_publish_v5(b->mosq, NULL, b->availability_topic, 7, "offline", 0, true, NULL);
	mosquitto_disconnect_v5(b->mosq, MQTT_RC_DISCONNECT_WITH_WILL_MSG, NULL);
	deadline = now_ms() + 1000;
	while (mosquitto_socket(b->mosq) >= 0 && mosquitto_want_write(b->mosq) &&
	       now_ms() < deadline)
		if (serve(b, &p, 100) != MOSQ_ERR_SUCCESS)
			break;
}

/* Why a connection could not be made: OpenSSL's reason, if any, is in
 * libmosquitto's log. */
static void connect_failed(struct bridge *b, int rc, int err)
{
	const char *why = strstr(b->last_error, "error:");
	fprintf(stderr,
		"framebus-mqtt: cannot connect to broker %s: %s%s%s%s (next try in %.1f s)\n",
		b->cfg.broker, describe(rc, err), why ? " (" : "", why ? why : "", why ? ")" : "",
		b->backoff_ms / 1e3);
}

static void *network(void *userdata)
{
	struct bridge *b = userdata;
	uint64_t retry_at = 0;
	bool started = false;

	const char *failed = NULL; /* what failed, with failed_errno */
	int failed_errno = 0;

	b->backoff_ms = BACKOFF_MIN_MS;
	for (;;) {
		pthread_mutex_lock(&b->lock);
		bool stopping = b->stopping;
		pthread_mutex_unlock(&b->lock);
		if (stopping || b->taken_over)
			break;
		int sock = mosquitto_socket(b->mosq);
		if (sock < 0 && now_ms() >= retry_at) {
			b->last_error[0] = 0;
			int rc = started
				     ? mosquitto_reconnect_async(b->mosq)
				     : mosquitto_connect_bind_async(b->mosq, b->cfg.host,
								    b->cfg.port, KEEPALIVE_S, NULL);
			int err = errno;
			started = true;
			retry_at = now_ms() + (uint64_t)b->backoff_ms;
			if (rc != MOSQ_ERR_SUCCESS)
				connect_failed(b, rc, err);
			/* Grows until a connection lasts (on_disconnect). */
			b->backoff_ms =
			    b->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b->backoff_ms * 2;
			sock = mosquitto_socket(b->mosq);
		}
		struct pollfd fds[2] = {{b->net_wake, POLLIN, 0}, {sock, POLLIN, 0}};
		if (sock >= 0 && mosquitto_want_write(b->mosq))
			fds[1].events |= POLLOUT;
		uint64_t now = now_ms();
		int timeout = sock >= 0 ? 1000 : (int)(retry_at > now ? retry_at - now : 0);
		if (poll(fds, sock >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR) {
			failed = "poll", failed_errno = errno;
			break;
		}
		if (fds[0].revents & POLLIN) {
			uint64_t n;
			if (read(b->net_wake, &n, sizeof(n)) < 0 && errno != EAGAIN) {
				failed = "eventfd", failed_errno = errno;
				break;
			}
		}
		if (sock >= 0) {
			int rc = MOSQ_ERR_SUCCESS;
			b->disconnected = false;
			if (fds[1].revents & (POLLIN | POLLERR | POLLHUP))
				rc = mosquitto_loop_read(b->mosq, 1);
			if (!rc && mosquitto_socket(b->mosq) >= 0 && (fds[1].revents & POLLOUT))
				rc = mosquitto_loop_write(b->mosq, 1);
			if (!rc && mosquitto_socket(b->mosq) >= 0)
				rc = mosquitto_loop_misc(b->mosq);
			if (mosquitto_socket(b->mosq) < 0 && !b->connected) {
				retry_at = now_ms() + (uint64_t)b->backoff_ms;
				/* A TLS handshake that failed closes without a callback. */
				if (rc && !b->disconnected)
					connect_failed(b, rc, errno);
			}
		}
		pump(b);
	}
	say_goodbye(b);
	if (failed)
		fprintf(stderr, "framebus-mqtt: the network thread's %s failed: %s; stopping\n",
			failed, strerror(failed_errno));
	/* The main thread, unless it stopped us, must not go on filling a
	 * queue that nobody empties. */
	pthread_mutex_lock(&b->lock);
	b->net_status = b->taken_over ? EXIT_ID_TAKEN : 1;
	pthread_mutex_unlock(&b->lock);
	wake(b->main_wake);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* The main thread: streams and states                                       */
/* ------------------------------------------------------------------------ */

/* One frame as a message: its meta when that is JSON, else an envelope
 * with the meta as text or base64 (json_meta). */
static int make_message(struct stream *s, const struct fb_frame *f, struct message *ret)
{
	struct message m = {s, f->seq, f->source_seq, NULL, 0};
	if (f->meta_size && json_valid(f->meta, f->meta_size)) {
		m.payload = malloc(f->meta_size);
		if (!m.payload)
			return -ENOMEM;
		memcpy(m.payload, f->meta, f->meta_size);
		m.len = f->meta_size;
	} else {
		FILE *out = open_memstream(&m.payload, &m.len);
		if (!out)
			return -ENOMEM;
		fprintf(out,
			"{\"stream\":\"%s\",\"seq\":%llu,\"source_seq\":%llu,\"realtime_ns\":%llu,"
			"\"capture_realtime_ns\":%llu,",
			s->name, (unsigned long long)f->seq, (unsigned long long)f->source_seq,
			(unsigned long long)f->realtime_ns,
			(unsigned long long)f->trace->capture_realtime_ns);
		json_meta(out, f->meta, f->meta_size);
		fputc('}', out);
		if (fclose(out) != 0) {
			free(m.payload);
			return -ENOMEM;
		}
	}
	*ret = m;
	return 0;
}

/* Every record waiting in the stream's ring, to the queue. */
static void drain(struct bridge *b, fb_client *client, struct stream *s)
{
	const struct fb_frame *f;
	for (;;) {
		int r = fb_subscriber_acquire(s->sub, 0, &f);
		if (r == -EAGAIN || r == -EINTR)
			return;
		if (r == -EOWNERDEAD || r == -ECANCELED) {
			s->lost = s->sub; /* fb_client_resubscribe() at the next tick */
			s->sub = NULL;
			return;
		}
		if (r < 0) {
			if (r != -EPIPE)
				fprintf(stderr, "framebus-mqtt: %s: %s\n", s->name, fb_strerror(r));
			else
				fprintf(stderr, "framebus-mqtt: %s ended\n", s->name);
			s->ended = true;
			fb_client_unsubscribe(client, s->sub);
			s->sub = NULL;
			return;
		}
		struct message m;
		s->seq = f->seq;
		s->frames++;
		s->missed += f->missed;
		r = make_message(s, f, &m);
		fb_subscriber_release(s->sub, f);
		if (r == 0)
			enqueue(b, &m);
	}
}

/* Subscribe whatever is not: streams not there yet or ended (anew), and
 * those framebusd's restart ended (again). */
static void subscribe_all(struct bridge *b, fb_client *client)
{
	for (size_t i = 0; i < b->n_streams; i++) {
		struct stream *s = &b->streams[i];
		int r;
		if (s->sub)
			continue;
		if (s->lost) {
			r = fb_client_resubscribe(client, s->lost, &s->sub);
			if (r == -EAGAIN)
				continue;
			fb_subscriber_free(s->lost);
			s->lost = NULL;
			if (r == 0) {
				fprintf(stderr, "framebus-mqtt: subscribed to %s again\n", s->name);
				continue;
			}
		}
		struct fb_stream_info info;
		if (fb_client_check(client) < 0 ||
		    (s->ended && fb_client_get_stream(client, s->name, &info) == 0 &&
		     info.state == FB_STREAM_ENDED))
			continue; /* not before it runs again */
		r = fb_client_subscribe(client, s->name, FB_MODE_QUEUE, 0, &s->sub);
		if (r == 0) {
			fprintf(stderr, "framebus-mqtt: publishing %s to %s\n", s->name,
				s->result_topic);
			s->ended = false;
			s->seen = true;
		} else if (r != -ENOENT && r != -ECONNRESET && !s->ended) {
			fprintf(stderr, "framebus-mqtt: cannot subscribe to %s: %s\n", s->name,
				fb_client_last_error(client)[0] ? fb_client_last_error(client)
								: fb_strerror(r));
			s->ended = true; /* said once; tried again each tick */
		}
	}
}

/* The stream's state as JSON: what framebusd says of it and what we did. */
static void update_state(struct bridge *b, fb_client *client, struct stream *s)
{
	struct fb_stream_info info = {0};
	struct fb_subscription_info *subs = NULL;
	size_t n = 0;
	const char *state;
	int r = fb_client_check(client) < 0 ? -ECONNRESET
					    : fb_client_inspect(client, s->name, &info, &subs, &n);
	free(subs);
	if (r == -ENOENT)
		state = s->seen ? "ended" : "absent";
	else if (r < 0)
		state = "daemon-gone";
	else
		state = fb_stream_state_name(info.state);
	if (r < 0)
		info = (struct fb_stream_info){0};

	pthread_mutex_lock(&b->lock);
	uint64_t dropped = s->dropped, sent = s->sent;
	pthread_mutex_unlock(&b->lock);
	char *text;
	if (asprintf(&text,
		     "{\"state\":\"%s\",\"fps\":%.2f,\"fps_10s\":%.2f,\"published\":%llu,"
		     "\"seq\":%llu,\"frames\":%llu,\"missed\":%llu,\"dropped\":%llu,"
		     "\"sent\":%llu}",
		     state, info.fps, (double)info.fps_10s, (unsigned long long)info.published,
		     (unsigned long long)s->seq, (unsigned long long)s->frames,
		     (unsigned long long)s->missed, (unsigned long long)dropped,
		     (unsigned long long)sent) < 0)
		return;
	post_state(b, s, text);
}

static void on_connection(void *userdata, bool connected, const char *detail)
{
	fprintf(stderr, "framebus-mqtt: %s\n", detail);
}

static int run(struct bridge *b, fb_client *client, int signal_fd)
{
	int tick_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	struct itimerspec every = {{0, TICK_MS * 1000000L}, {0, TICK_MS * 1000000L}};
	unsigned ticks = 0;
	int status = 0;

	if (tick_fd < 0 || timerfd_settime(tick_fd, 0, &every, NULL) < 0) {
		fprintf(stderr, "framebus-mqtt: timerfd: %s\n", strerror(errno));
		return 1;
	}
	subscribe_all(b, client);
	for (size_t i = 0; i < b->n_streams; i++)
		update_state(b, client, &b->streams[i]);
	for (;;) {
		struct pollfd fds[4 + MAX_STREAMS] = {
		    {signal_fd, POLLIN, 0},
		    {b->main_wake, POLLIN, 0},
		    {tick_fd, POLLIN, 0},
		    {fb_client_get_fd(client), POLLIN, 0},
		};
		struct stream *of[MAX_STREAMS];
		nfds_t n = 4;
		for (size_t i = 0; i < b->n_streams; i++)
			if (b->streams[i].sub) {
				of[n - 4] = &b->streams[i];
				fds[n++] = (struct pollfd){fb_subscriber_get_fd(b->streams[i].sub),
							   POLLIN, 0};
			}
		if (poll(fds, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "framebus-mqtt: poll: %s\n", strerror(errno));
			status = 1;
			break;
		}
		if (fds[0].revents) {
			struct signalfd_siginfo si;
			if (read(signal_fd, &si, sizeof(si)) == sizeof(si))
				fprintf(stderr, "framebus-mqtt: %s\n",
					si.ssi_signo == SIGINT ? "interrupted" : "terminated");
			break;
		}
		if (fds[1].revents) { /* the network thread ended, and said why */
			pthread_mutex_lock(&b->lock);
			status = b->net_status;
			pthread_mutex_unlock(&b->lock);
			break;
		}
		if (fds[3].revents)
			fb_client_process(client);
		for (nfds_t i = 4; i < n; i++)
			if (fds[i].revents && of[i - 4]->sub)
				drain(b, client, of[i - 4]);
		if (fds[2].revents) {
			uint64_t expired;
			if (read(tick_fd, &expired, sizeof(expired)) < 0)
				continue;
			subscribe_all(b, client);
			if (++ticks % TICKS_PER_STATE == 0)
				for (size_t i = 0; i < b->n_streams; i++)
					update_state(b, client, &b->streams[i]);
		}
	}
	close(tick_fd);
	return status;
}

/* ------------------------------------------------------------------------ */

static void usage(FILE *out)
{
	fprintf(out, "usage: framebus-mqtt [--config FILE] [--socket PATH]\n"
		     "Publish each frame's meta of the streams FILE names to an MQTT broker:\n"
		     "PREFIX/STREAM/result per frame, PREFIX/STREAM/state (retained) and\n"
		     "PREFIX/availability (retained, online or offline).\n"
		     "  --config FILE  the configuration (default " FBM_DEFAULT_CONFIG ")\n"
		     "  --socket PATH  framebusd's socket (default $FRAMEBUS_SOCKET, else\n"
		     "                 " FB_DEFAULT_SOCKET ")\n");
}

/* Hold the client id on this host (an abstract socket named after it, gone
 * with the process): a second framebus-mqtt with the same id would take the
 * broker's session from the first, and the first take it back, for ever.
 * Returns the socket, or -errno once said why not.  Across hosts a broker
 * that says so (MQTT v5 "session taken over") stops the one it replaced. */
static int claim_client_id(const char *id)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "framebus-mqtt/%s", id);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd >= 0 &&
	    bind(fd, (struct sockaddr *)&a,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)) == 0)
		return fd;
	if (errno == EADDRINUSE)
		fprintf(
		    stderr,
		    "framebus-mqtt: another framebus-mqtt on this host has client id '%s': give "
		    "each its own (client_id in [mqtt])\n",
		    id);
	else
		fprintf(stderr, "framebus-mqtt: cannot hold client id '%s': %s\n", id,
			strerror(errno));
	int r = -errno;
	if (fd >= 0)
		close(fd);
	return r;
}

static int setup_mqtt(struct bridge *b)
{
	struct config *c = &b->cfg;
	int rc;
	b->mosq = mosquitto_new(c->client_id, true, b);
	if (!b->mosq) {
		fprintf(stderr, "framebus-mqtt: mosquitto_new: %s\n", strerror(errno));
		return -1;
	}
	mosquitto_int_option(b->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_connect_v5_callback_set(b->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(b->mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(b->mosq, on_publish);
	mosquitto_log_callback_set(b->mosq, on_log);
	rc = mosquitto_will_set_v5(b->mosq, b->availability_topic, 7, "offline", 1, true, NULL);
	if (!rc && c->username)
		rc = mosquitto_username_pw_set(b->mosq, c->username, c->password);
	if (rc) {
		fprintf(stderr, "framebus-mqtt: %s\n", mosquitto_strerror(rc));
		return -1;
	}
	if (c->tls) {
		rc = mosquitto_tls_set(b->mosq, c->ca_file, c->ca_file ? NULL : "/etc/ssl/certs",
				       NULL, NULL, NULL);
		if (rc) {
			fprintf(stderr, "framebus-mqtt: TLS for %s (ca_file %s): %s\n", c->broker,
				c->ca_file ? c->ca_file : "none: /etc/ssl/certs",
				mosquitto_strerror(rc));
			return -1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"socket", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct bridge b = {.config_path = FBM_DEFAULT_CONFIG, .net_wake = -1, .main_wake = -1};
	const char *socket_path = NULL;
	fb_client *client = NULL;
	char error[512];
	int ch, status = 1, id_fd = -1;
	pthread_t thread;
	sigset_t signals;

	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			b.config_path = optarg;
			break;
		case 's':
			socket_path = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	mosquitto_lib_init();
	if (load_config(&b, error, sizeof(error)) < 0) {
		fprintf(stderr, "framebus-mqtt: %s\n", error);
		status = 2;
		goto out;
	}
	id_fd = claim_client_id(b.cfg.client_id);
	if (id_fd < 0) {
		status = id_fd == -EADDRINUSE ? EXIT_ID_TAKEN : 1;
		goto out;
	}
	b.queue = calloc(b.cfg.queue, sizeof(*b.queue));
	b.net_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	b.main_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!b.queue || b.net_wake < 0 || b.main_wake < 0) {
		fprintf(stderr, "framebus-mqtt: %s\n", strerror(errno));
		goto out;
	}
	int r = fb_client_connect(socket_path, "framebus-mqtt", &client);
	if (r < 0) {
		fprintf(stderr, "framebus-mqtt: cannot connect to framebusd: %s\n", fb_strerror(r));
		goto out;
	}
	fb_client_set_connection_callback(client, on_connection, &b);
	if (setup_mqtt(&b) < 0)
		goto out;

	/* libmosquitto write()s to its socket: a broker that went away must
	 * give EPIPE, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	/* Signals arrive in the main loop; the network thread has them blocked. */
	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	sigprocmask(SIG_BLOCK, &signals, NULL);
	int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
	pthread_mutex_init(&b.lock, NULL);
	if (signal_fd < 0 || pthread_create(&thread, NULL, network, &b) != 0) {
		fprintf(stderr, "framebus-mqtt: cannot start: %s\n", strerror(errno));
		goto out;
	}
	fprintf(stderr,
		"framebus-mqtt: %zu streams to %s, prefix %s, qos %d, queue %zu (%zu KiB)\n",
		b.n_streams, b.cfg.broker, b.cfg.prefix, b.cfg.qos, b.cfg.queue,
		b.cfg.queue_bytes >> 10);
	status = run(&b, client, signal_fd);

	pthread_mutex_lock(&b.lock);
	b.stopping = true;
	pthread_mutex_unlock(&b.lock);
	wake(b.net_wake);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += STOP_S;
	if (pthread_timedjoin_np(thread, NULL, &until) != 0) {
		/* It holds libmosquitto's handle: nothing can be freed. */
		fprintf(stderr,
			"framebus-mqtt: the network thread did not end within %d s (resolving "
			"the broker's name?): exiting without it\n",
			STOP_S);
		_exit(1);
	}
	close(signal_fd);
	pthread_mutex_destroy(&b.lock);
	for (size_t i = 0; i < b.n_inflight; i++)
		if (b.inflight[i].stream)
			b.inflight[i].stream->unsent++;
	for (size_t i = 0; i < b.count; i++)
		b.queue[(b.head + i) % b.cfg.queue].stream->unsent++;
	for (size_t i = 0; i < b.n_streams; i++) {
		struct stream *s = &b.streams[i];
		fprintf(stderr,
			"framebus-mqtt: %s: %llu frames, %llu sent, %llu dropped, %llu unsent at "
			"stop, %llu missed\n",
			s->name, (unsigned long long)s->frames, (unsigned long long)s->sent,
			(unsigned long long)s->dropped, (unsigned long long)s->unsent,
			(unsigned long long)s->missed);
		if (s->sub)
			fb_client_unsubscribe(client, s->sub);
		fb_subscriber_free(s->lost);
	}
out:
	for (size_t i = 0; b.queue && i < b.count; i++)
		free(b.queue[(b.head + i) % b.cfg.queue].payload);
	free(b.queue);
	if (b.net_wake >= 0)
		close(b.net_wake);
	if (b.main_wake >= 0)
		close(b.main_wake);
	if (id_fd >= 0)
		close(id_fd);
	fb_client_free(client);
	mosquitto_destroy(b.mosq);
	mosquitto_lib_cleanup();
	free_config(&b);
	return status;
}
