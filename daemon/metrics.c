/* SPDX-License-Identifier: MIT */
/* Prometheus metrics over HTTP ([daemon] metrics = ADDRESS:PORT), served by
 * libmicrohttpd from a thread of its own (prometheus.c).  A scrape asks the
 * main loop for a fresh page (a uv_async_t) and waits for it, at most
 * WRITE_TIMEOUT_S (then it gets the last one): the loop writes the page only
 * when somebody asks, and no scraper, however slow or broken, holds the loop
 * up.
 * docs/tracing.md lists the metrics. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "log.h"
#include "prometheus.h"

/* How long a scrape waits for the loop to write the page. */
#define WRITE_TIMEOUT_S 2

struct fbd_metrics {
	struct fbd_daemon *d;
	struct fbd_prom_server *server;
	char *address;     /* as configured, to see a reload change it */
	uv_async_t wanted; /* a scrape asks the loop for a page */
	pthread_mutex_t lock;
	pthread_cond_t written; /* the loop wrote a page */
	char *text;             /* the newest page, under lock */
	size_t size;
	uint64_t pages; /* pages written so far */
	bool stopping;
};

/* The server's thread, for a scrape: ask the loop for a page and take a copy
 * of it (of the last one if the loop is late). */
static char *page(void *data, size_t *ret_size)
{
	struct fbd_metrics *m = data;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += WRITE_TIMEOUT_S;
	pthread_mutex_lock(&m->lock);
	uint64_t seen = m->pages;
	uv_async_send(&m->wanted);
	while (m->pages == seen && !m->stopping &&
	       pthread_cond_timedwait(&m->written, &m->lock, &until) == 0)
		;
	size_t size = m->text ? m->size : 0;
	char *text = malloc(size ? size : 1);
	if (text) {
		memcpy(text, m->text ? m->text : "", size);
		*ret_size = size;
	}
	pthread_mutex_unlock(&m->lock);
	return text;
}

static void mhd_log(const char *line)
{
	fbd_log_about(LOG_DEBUG, NULL, NULL, "metrics: %s", line);
}

static void metrics_free(uv_handle_t *h)
{
	struct fbd_metrics *m = h->data;
	pthread_cond_destroy(&m->written);
	pthread_mutex_destroy(&m->lock);
	free(m->address);
	free(m->text);
	free(m);
}

/* Stop serving; m is freed once the loop closed its handle. */
static void metrics_close(struct fbd_metrics *m)
{
	pthread_mutex_lock(&m->lock);
	m->stopping = true;
	pthread_cond_broadcast(&m->written);
	pthread_mutex_unlock(&m->lock);
	fbd_prom_stop(m->server); /* joins its thread */
	uv_close((uv_handle_t *)&m->wanted, metrics_free);
}

static void write_page(uv_async_t *async);

static struct fbd_metrics *metrics_start(struct fbd_daemon *d)
{
	const struct fbd_config *cfg = d->config;
	struct fbd_metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->d = d;
	m->wanted.data = m;
	pthread_mutex_init(&m->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->written, &ca);
	pthread_condattr_destroy(&ca);
	if (uv_async_init(d->loop, &m->wanted, write_page) < 0) {
		pthread_cond_destroy(&m->written);
		pthread_mutex_destroy(&m->lock);
		free(m);
		return NULL;
	}
	m->address = strdup(cfg->metrics);
	int r = !m->address
		    ? -ENOMEM
		    : fbd_prom_serve("framebusd", &cfg->metrics_addr, page, m, mhd_log, &m->server);
	if (r < 0) {
		fbd_error("metrics: cannot serve http://%s/metrics: %s (is the address this "
			  "host's, and the port free?); the bus goes on without them",
			  cfg->metrics, strerror(-r));
		metrics_close(m);
		return NULL;
	}
	fbd_info("metrics: serving http://%s/metrics", cfg->metrics);
	return m;
}

void fbd_metrics_apply(struct fbd_daemon *d)
{
	const char *want = d->config->metrics;
	const char *have = d->metrics ? d->metrics->address : NULL;
	if ((!want && !have) || (want && have && !strcmp(want, have)))
		return;
	fbd_metrics_stop(d);
	if (want)
		d->metrics = metrics_start(d);
}

void fbd_metrics_stop(struct fbd_daemon *d)
{
	if (!d->metrics)
		return;
	fbd_info("metrics: no longer serving http://%s/metrics", d->metrics->address);
	metrics_close(d->metrics);
	d->metrics = NULL;
}

void fbd_metric_histogram(FILE *out, const char *name, const char *labels, const uint32_t *buckets,
			  uint64_t sum_ns)
{
	/* Whole octaves of the half-octave buckets: le = 2^k us holds every
	 * bucket below bucket 2k + 1 (ring-private.h, fb__timing_bucket).  The
	 * bounds as text once: a page has thousands of these lines. */
	static char le[FB__TIMING_BUCKETS][24];
	if (!le[0][0])
		for (uint32_t b = 0; b + 1 < FB__TIMING_BUCKETS; b += 2)
			snprintf(le[b], sizeof(le[b]), "%.9g",
				 (double)fb__timing_bucket_floor_ns(b + 1) / 1e9);
	uint64_t count = 0;
	for (uint32_t b = 0; b < FB__TIMING_BUCKETS; b++) {
		count += buckets[b];
		if (b % 2 == 0 && b + 1 < FB__TIMING_BUCKETS)
			fprintf(out, "%s_bucket{%s,le=\"%s\"} %llu\n", name, labels, le[b],
				(unsigned long long)count);
	}
	fprintf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)count);
	fprintf(out, "%s_sum{%s} %.9f\n", name, labels, (double)sum_ns / 1e9);
	fprintf(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long)count);
}

/* The streams' part: one family after the other, each with a line per
 * stream. */
static void stream_metrics(struct fbd_daemon *d, FILE *out)
{
	enum field {
		PUBLISHED,
		DROPPED,
		SKIPPED,
		STALLS,
		HOLD_DROPS,
		SUBSCRIBERS,
		RETRIES,
		STATE,
		CAPTURE
	};
	static const struct {
		enum field field;
		const char *name, *type, *help;
	} families[] = {
	    {PUBLISHED, "framebus_stream_frames_published_total", "counter",
	     "Frames published into the stream's ring."},
	    {DROPPED, "framebus_stream_frames_dropped_total", "counter",
	     "Frames dropped because subscribers held every slot."},
	    {SKIPPED, "framebus_stream_parent_frames_skipped_total", "counter",
	     "A derived stream's parent frames it passed over: busy with an earlier one, or "
	     "by its fps limit."},
	    {STALLS, "framebus_stream_stalls_total", "counter",
	     "Queue subscribers that kept the block stream waiting past its block_timeout."},
	    {HOLD_DROPS, "framebus_stream_hold_drops_total", "counter",
	     "Subscriptions dropped for holding one frame past the stream's hold_timeout."},
	    {SUBSCRIBERS, "framebus_stream_subscribers", "gauge", "Subscribers of the stream."},
	    {RETRIES, "framebus_stream_retries", "gauge",
	     "Consecutive failures to open or read its source."},
	    {STATE, "framebus_stream_state", "gauge",
	     "1 for the stream's state (starting, running, retrying, ended)."},
	    {CAPTURE, "framebus_stream_capture_to_publish_seconds", "gauge",
	     "Its newest frame: from capture to publish (absent when unknown)."},
	};
	struct fb__msg_stream_detail *all = calloc(d->n_streams ? d->n_streams : 1, sizeof(*all));
	if (!all)
		return;
	for (uint32_t i = 0; i < d->n_streams; i++)
		fbd_stream_detail(d->streams[i], &all[i]);
	for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
		enum field field = families[f].field;
		fbd_metric_family(out, families[f].name, families[f].type, families[f].help);
		for (uint32_t i = 0; i < d->n_streams; i++) {
			const struct fb__msg_stream_detail *s = &all[i];
			if ((field == CAPTURE && !s->capture_latency_us) ||
			    (field == SKIPPED && !(s->flags & FB__STREAM_DERIVED)))
				continue;
			fprintf(out, "%s{", families[f].name);
			fbd_metric_label(out, "stream", d->streams[i]->name);
			if (field == STATE)
				fprintf(out, ",state=\"%s\"", fb_stream_state_name(s->info.state));
			switch (field) {
			case PUBLISHED:
				fprintf(out, "} %llu\n", (unsigned long long)s->info.published);
				break;
			case DROPPED:
				fprintf(out, "} %llu\n", (unsigned long long)s->info.dropped);
				break;
			case SKIPPED:
				fprintf(out, ",reason=\"busy\"} %llu\n%s{",
					(unsigned long long)s->parent_skipped_busy,
					families[f].name);
				fbd_metric_label(out, "stream", d->streams[i]->name);
				fprintf(out, ",reason=\"rate\"} %llu\n",
					(unsigned long long)s->parent_skipped_rate);
				break;
			case STALLS:
				fprintf(out, "} %u\n", s->stalls);
				break;
			case HOLD_DROPS:
				fprintf(out, "} %u\n", d->streams[i]->hold_drops);
				break;
			case SUBSCRIBERS:
				fprintf(out, "} %u\n", s->info.subscribers);
				break;
			case RETRIES:
				fprintf(out, "} %u\n", s->info.retries);
				break;
			case STATE:
				fputs("} 1\n", out);
				break;
			case CAPTURE:
				fprintf(out, "} %.6f\n", s->capture_latency_us / 1e6);
				break;
			}
		}
	}
	free(all);
}

/* The loop, when a scrape asked: write the page and hand it over. */
static void write_page(uv_async_t *async)
{
	struct fbd_metrics *m = async->data;
	struct fbd_daemon *d = m->d;
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);
	if (!out)
		return;
	fbd_metric_family(out, "framebus_build_info", "gauge", "framebusd's version.");
	fprintf(out, "framebus_build_info{version=\"%s\"} 1\n", fb_version());
	fbd_metric_family(out, "framebus_clients", "gauge", "Clients connected to framebusd.");
	fprintf(out, "framebus_clients %u\n", d->n_clients);
	stream_metrics(d, out);
	fbd_server_metrics(d, out);
	if (fclose(out) != 0) {
		free(text);
		return;
	}
	pthread_mutex_lock(&m->lock);
	char *old = m->text;
	m->text = text;
	m->size = size;
	m->pages++;
	pthread_cond_broadcast(&m->written);
	pthread_mutex_unlock(&m->lock);
	free(old);
}
