/* SPDX-License-Identifier: MIT */
/*
 * The iceoryx 2 producer of bench/compare (PROTOCOL.md), with the C binding:
 *
 *   iox-producer --frames N --fps F (0: flat out) --consumers K
 *
 * RouDi must run (iox-roudi -c bench/compare/roudi.toml).  Publishes 1920x1080
 * bgr24 frames on ("framebus", "compare", "frames"), zero-copy: each frame is
 * a chunk loaned from RouDi's mempool, stamped and published.
 *
 * Lossless: the publisher waits for a full subscriber queue (WAIT_FOR_CONSUMER,
 * and iox-consumer asks for BLOCK_PRODUCER) instead of dropping.
 *
 * Start: iceoryx connects subscribers only when the publisher offers, and
 * iox_pub_has_subscribers() cannot count them.  So each iox-consumer, once its
 * subscriber is connected, offers an empty "ack" service ("framebus",
 * "compare-ack", its runtime name); this producer counts those in RouDi's
 * service registry and sends frame 1 only when K are there: no consumer misses
 * a frame.
 *
 * End: after frame N a 16-byte chunk with seq 0 tells the consumers the stream
 * ended; queued chunks stay valid after the publisher left (RouDi owns them).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/service_discovery.h>
#include <iceoryx_binding_c/wait_set.h>

#include "../bench-clock.h"

#define WIDTH 1920
#define HEIGHT 1080
#define FRAME_SIZE ((uint32_t)WIDTH * HEIGHT * 3)
#define FRAME_ALIGN 64
#define HEADER_SIZE 16
#define START_TIMEOUT_S 15

static void die(const char *what, const char *why)
{
	fprintf(stderr, "iox-producer: %s: %s\n", what, why);
	exit(1);
}

/* Each frame gets new pixels in the chunk it was loaned, then its stamp
 * (PROTOCOL.md). */
static void stamp(uint8_t *p, uint64_t seq)
{
	memset(p + HEADER_SIZE, (int)(seq & 0xff), FRAME_SIZE - HEADER_SIZE);
	uint64_t t = bench_now_ns();
	memcpy(p, &seq, 8);
	memcpy(p + 8, &t, 8);
}

/* Sleep until frame seq's turn at fps frames a second (none when 0). */
static void pace(double fps, uint64_t start_ns, uint64_t seq)
{
	if (fps <= 0)
		return;
	uint64_t at = start_ns + (uint64_t)((double)(seq - 1) * 1e9 / fps);
	struct timespec ts = {.tv_sec = (time_t)(at / 1000000000u),
			      .tv_nsec = (long)(at % 1000000000u)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static uint64_t count_acks(iox_service_discovery_t sd)
{
	iox_service_description_t found[1];
	uint64_t missed = 0;
	uint64_t n = iox_service_discovery_find_service(sd, "framebus", "compare-ack", NULL, found,
							1, &missed, MessagingPattern_PUB_SUB);
	return n + missed;
}

/* Block on RouDi's service-registry updates until k consumers said they are
 * connected. */
static void wait_for_consumers(uint64_t k)
{
	static iox_service_discovery_storage_t sd_storage;
	static iox_ws_storage_t ws_storage;
	iox_service_discovery_t sd = iox_service_discovery_init(&sd_storage);
	iox_ws_t ws = iox_ws_init(&ws_storage);
	iox_notification_info_t events[1];
	uint64_t missed, deadline = bench_now_ns() + START_TIMEOUT_S * 1000000000ull;

	if (iox_ws_attach_service_discovery_event(ws, sd,
						  ServiceDiscoveryEvent_SERVICE_REGISTRY_CHANGED, 0,
						  NULL) != WaitSetResult_SUCCESS)
		die("waitset", "cannot watch the service registry");
	while (count_acks(sd) < k) {
		uint64_t now = bench_now_ns();
		if (now >= deadline)
			die("waiting for consumers", "not all of them connected");
		struct timespec left = {.tv_sec = (time_t)((deadline - now) / 1000000000u),
					.tv_nsec = (long)((deadline - now) % 1000000000u)};
		iox_ws_timed_wait(ws, left, events, 1, &missed);
	}
	iox_ws_deinit(ws);
	iox_service_discovery_deinit(sd);
}

static void *loan(iox_pub_t pub, uint32_t size, uint32_t align)
{
	void *p;
	enum iox_AllocationResult r = iox_pub_loan_aligned_chunk(pub, &p, size, align);
	if (r != AllocationResult_SUCCESS) {
		char why[64];
		snprintf(why, sizeof(why), "iox_AllocationResult %d (see roudi.toml)", (int)r);
		die("cannot loan a chunk", why);
	}
	return p;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"frames", required_argument, NULL, 'n'},
	    {"fps", required_argument, NULL, 'f'},
	    {"consumers", required_argument, NULL, 'k'},
	    {0},
	};
	static iox_pub_storage_t pub_storage;
	uint64_t frames = 0, consumers = 1;
	double fps = 30;
	char name[64];
	int ch;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch == 'n')
			frames = strtoull(optarg, NULL, 10);
		else if (ch == 'f')
			fps = strtod(optarg, NULL);
		else if (ch == 'k')
			consumers = strtoull(optarg, NULL, 10);
		else
			return 2;
	}
	if (optind != argc || !frames || !consumers) {
		fprintf(stderr, "usage: iox-producer --frames N --fps F --consumers K\n");
		return 2;
	}

	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	snprintf(name, sizeof(name), "iox-producer-%d", (int)getpid());
	iox_runtime_init(name);

	iox_pub_options_t opts;
	iox_pub_options_init(&opts);
	opts.historyCapacity = 0; /* nobody may join late: we wait for all K */
	opts.offerOnCreate = true;
	opts.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
	iox_pub_t pub = iox_pub_init(&pub_storage, "framebus", "compare", "frames", &opts);

	printf("ready\n");
	fflush(stdout);
	wait_for_consumers(consumers);

	uint64_t start = bench_now_ns();
	for (uint64_t seq = 1; seq <= frames; seq++) {
		pace(fps, start, seq);
		uint8_t *p = loan(pub, FRAME_SIZE, FRAME_ALIGN);
		stamp(p, seq);
		iox_pub_publish_chunk(pub, p);
	}
	uint64_t *end = loan(pub, HEADER_SIZE, 8); /* from the small mempool */
	end[0] = 0;                                /* seq 0: the end of the stream */
	end[1] = bench_now_ns();
	iox_pub_publish_chunk(pub, end);

	iox_pub_deinit(pub);
	iox_runtime_shutdown();
	return 0;
}
