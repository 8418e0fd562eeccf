/* SPDX-License-Identifier: MIT */
/* framebusd: arguments -> configuration -> loop -> signals -> streams ->
 * socket -> READY=1 -> run -> one teardown. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <libavdevice/avdevice.h>
#include <libavutil/log.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"

#define DEFAULT_CONFIG FBD_DEFAULT_CONFIG
#define STATUS_INTERVAL_MS 1000

struct options {
	const char *config;
	bool config_given;
	const char *socket;
	bool verbose;
};

static struct fbd_daemon daemon_state = {.listen_fd = -1};
static uv_signal_t sigterm, sigint, sighup;
static uv_timer_t status_timer, watchdog_timer;

static void usage(FILE *out)
{
	fprintf(out,
		"usage: framebusd [--config FILE] [--socket PATH] [--verbose]\n"
		"  -c, --config FILE   configuration (default " DEFAULT_CONFIG "; without one,\n"
		"                      a test-pattern stream cam0)\n"
		"  -s, --socket PATH   listen here instead of the configured socket\n"
		"  -v, --verbose       log debug messages too\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"socket", required_argument, NULL, 's'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int c;

	*o = (struct options){.config = DEFAULT_CONFIG};
	while ((c = getopt_long(argc, argv, "c:s:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->config = optarg;
			o->config_given = true;
			break;
		case 's':
			o->socket = optarg;
			break;
		case 'v':
			o->verbose = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "framebusd: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

/* The configured file, the default file if it exists, else the embedded
 * default. */
static int load_config(const struct options *o, struct fbd_config **ret, const char **ret_path)
{
	char error[512];
	int r;

	if (!o->config_given && access(o->config, F_OK) < 0) {
		*ret_path = NULL;
		return fbd_config_default(ret);
	}
	r = fbd_config_load(o->config, ret, error, sizeof(error));
	if (r < 0) {
		fbd_error("%s", error);
		return r;
	}
	*ret_path = o->config;
	return 0;
}

static void update_status(struct fbd_daemon *d)
{
	char line[1024];
	fbd_streams_status(d, line, sizeof(line));
	sd_notifyf(0, "STATUS=%s", line);
}

static void on_status_timer(uv_timer_t *t)
{
	fbd_streams_watch(t->data);
	fbd_server_sample(t->data);
	update_status(t->data);
}

/* The loop runs (this timer fires) and no stream thread is stuck beyond
 * help: the daemon works. */
static void on_watchdog_timer(uv_timer_t *t)
{
	struct fbd_daemon *d = t->data;
	if (!d->wedged)
		sd_notify(0, "WATCHDOG=1");
}

static void reload(struct fbd_daemon *d)
{
	struct fbd_config *config;
	char error[512];

	if (!d->config_path) {
		fbd_info("reload: no configuration file, keeping the default");
		return;
	}
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		   (unsigned long long)(uv_hrtime() / 1000u));
	int r = fbd_config_load(d->config_path, &config, error, sizeof(error));
	if (r < 0) {
		fbd_error("reload refused, keeping the running configuration: %s", error);
	} else {
		fbd_info("reloading %s", d->config_path);
		fbd_log_set_level(config->log_level > d->config->log_level ? config->log_level
									   : d->config->log_level);
		fbd_streams_apply(d, config);
		fbd_metrics_apply(d);
	}
	update_status(d);
	sd_notify(0, "READY=1");
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct fbd_daemon *d = s->data;
	if (signum == SIGHUP) {
		reload(d);
		return;
	}
	fbd_info("%s: stopping", strsignal(signum));
	uv_stop(d->loop);
}

static int watch_signals(struct fbd_daemon *d)
{
	uv_signal_t *sigs[] = {&sigterm, &sigint, &sighup};
	int nums[] = {SIGTERM, SIGINT, SIGHUP};
	for (int i = 0; i < 3; i++) {
		int r = uv_signal_init(d->loop, sigs[i]);
		if (r < 0)
			return r;
		sigs[i]->data = d;
		r = uv_signal_start(sigs[i], on_signal, nums[i]);
		if (r < 0)
			return r;
		uv_unref((uv_handle_t *)sigs[i]);
	}
	return 0;
}

static int start_timers(struct fbd_daemon *d)
{
	uint64_t usec = 0;
	uv_timer_init(d->loop, &status_timer);
	status_timer.data = d;
	uv_timer_start(&status_timer, on_status_timer, STATUS_INTERVAL_MS, STATUS_INTERVAL_MS);
	uv_timer_init(d->loop, &watchdog_timer);
	watchdog_timer.data = d;
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		uint64_t ms = usec / 2000u ? usec / 2000u : 1;
		uv_timer_start(&watchdog_timer, on_watchdog_timer, ms, ms);
		fbd_info("watchdog: pinging every %llu ms", (unsigned long long)ms);
	}
	return 0;
}

static void close_handle(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int main(int argc, char **argv)
{
	struct fbd_daemon *d = &daemon_state;
	struct options o;
	int r;

	if (parse_args(argc, argv, &o) < 0)
		return 2;
	fbd_log_init();
	signal(SIGPIPE, SIG_IGN);
	av_log_set_level(o.verbose ? AV_LOG_WARNING : AV_LOG_ERROR);
	avdevice_register_all();

	r = load_config(&o, &d->config, &d->config_path);
	if (r < 0)
		return 1;
	fbd_log_set_level(o.verbose ? LOG_DEBUG : d->config->log_level);
	d->socket_override = o.socket;
	d->loop = uv_default_loop();

	fbd_fdstore_load(d);
	r = watch_signals(d);
	if (r >= 0)
		r = fbd_streams_start(d);
	if (r >= 0)
		r = fbd_server_start(d);
	if (r < 0) {
		fbd_error("cannot start: %s", r < -4096 ? uv_strerror(r) : strerror(-r));
		goto out;
	}
	start_timers(d);
	fbd_metrics_apply(d);
	fbd_info("ready: %u streams from %s", d->n_streams,
		 d->config_path ? d->config_path : "the embedded default");
	update_status(d);
	sd_notify(0, "READY=1");

	uv_run(d->loop, UV_RUN_DEFAULT);

	sd_notify(0, "STOPPING=1");
	fbd_fdstore_save(d);
out:
	/* Streams first: their subscribers are told the daemon is stopping
	 * (an event) before their connections go.  No ring ends: subscribers
	 * read what is left, see their producer go (-EOWNERDEAD) and subscribe
	 * again to the next daemon, as after a crash. */
	fbd_metrics_stop(d);
	fbd_streams_stop(d);
	fbd_server_stop(d);
	uv_walk(d->loop, close_handle, NULL);
	uv_run(d->loop, UV_RUN_DEFAULT);
	uv_loop_close(d->loop);
	fbd_config_free(d->config);
	fbd_info("stopped");
	return r < 0 ? 1 : 0;
}
