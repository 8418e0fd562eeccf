/* SPDX-License-Identifier: MIT */
/*
 * The iceoryx 2 consumer of bench/compare (PROTOCOL.md), with the C binding:
 *
 *   iox-consumer --frames N --out PATH [--sched-slice NS]
 *
 * RouDi must run.  Subscribes to ("framebus", "compare", "frames") with a
 * BLOCK_PRODUCER queue, so that iox-producer waits for it rather than dropping.
 *
 * "ready" comes once RouDi registered the subscription (WAIT_FOR_OFFER, or
 * SUBSCRIBED if a publisher already offers): a subscriber cannot be connected
 * before the publisher offers, and the runner starts the producer only after
 * every "ready".  When the connection is made, this consumer offers the empty
 * service ("framebus", "compare-ack", its runtime name), and iox-producer
 * publishes frame 1 only when it sees K of those: no frame is missed.
 *
 * A chunk with seq 0 marks the end of the stream.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>

#include <framebus/framebus.h>

#include "../bench-clock.h"

#define FRAME_SIZE ((size_t)1920 * 1080 * 3)
#define QUEUE_CAPACITY 8
#define NS 1000000000ull
#define IDLE_BEFORE_NS (15 * NS)
#define IDLE_AFTER_NS (3 * NS)
/* How often the connection is checked until it is made: iceoryx has no
 * event for it, and no frame can come before it anyway. */
#define CONNECT_POLL_NS 2000000ull

static struct timespec duration(uint64_t ns)
{
	return (struct timespec){.tv_sec = (time_t)(ns / NS), .tv_nsec = (long)(ns % NS)};
}

static void die(const char *what)
{
	fprintf(stderr, "iox-consumer: %s\n", what);
	exit(1);
}

/* Until RouDi has seen the subscription, a publisher that offers now would
 * not connect it. */
static void wait_registered(iox_sub_t sub)
{
	uint64_t deadline = bench_now_ns() + IDLE_BEFORE_NS;
	struct timespec tick = duration(CONNECT_POLL_NS);

	for (;;) {
		enum iox_SubscribeState s = iox_sub_get_subscription_state(sub);
		if (s == SubscribeState_WAIT_FOR_OFFER || s == SubscribeState_SUBSCRIBED)
			return;
		if (bench_now_ns() >= deadline)
			die("RouDi did not register the subscription");
		nanosleep(&tick, NULL);
	}
}

/* Tells iox-producer that this subscriber is connected: a service it counts. */
static iox_pub_t offer_ack(const char *name)
{
	static iox_pub_storage_t storage;
	iox_pub_options_t opts;

	iox_pub_options_init(&opts); /* offered on creation */
	return iox_pub_init(&storage, "framebus", "compare-ack", name, &opts);
}

/* Reads the header of the frame in hand and touches every cache line of it;
 * false for the end-of-stream marker. */
static bool record(const uint8_t *p, uint64_t t_recv, uint64_t rec[3], uint64_t *touched)
{
	memcpy(&rec[0], p, 8);
	if (rec[0] == 0)
		return false;
	memcpy(&rec[1], p + 8, 8);
	rec[2] = t_recv;
	for (size_t i = 0; i < FRAME_SIZE; i += 64)
		*touched += p[i];
	return true;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"frames", required_argument, NULL, 'n'},
	    {"out", required_argument, NULL, 'o'},
	    {"sched-slice", required_argument, NULL, 'S'},
	    {0},
	};
	static iox_sub_storage_t sub_storage;
	static iox_ws_storage_t ws_storage;
	const char *out = NULL;
	uint64_t frames = 0, n = 0, slice_ns = 0, touched = 0;
	iox_pub_t ack = NULL;
	bool ended = false;
	char name[64];
	int ch;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch == 'n')
			frames = strtoull(optarg, NULL, 10);
		else if (ch == 'o')
			out = optarg;
		else if (ch == 'S')
			slice_ns = strtoull(optarg, NULL, 10);
		else
			return 2;
	}
	uint64_t(*records)[3] = calloc(frames ? frames : 1, sizeof(*records));
	if (optind != argc || !out || !frames || !records) {
		fprintf(stderr, "usage: iox-consumer --frames N --out PATH [--sched-slice NS]\n");
		return 2;
	}
	/* The consumer thread's fair-scheduler slice (compare.py's TRANSPORT+slice),
	 * set with framebus's helper whatever the transport. */
	int slice_r = slice_ns ? fb_thread_set_sched_slice(slice_ns, NULL) : 0;
	if (slice_r < 0) {
		fprintf(stderr, "iox-consumer: --sched-slice: %s\n", fb_strerror(slice_r));
		return 1;
	}

	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	snprintf(name, sizeof(name), "iox-consumer-%d", (int)getpid());
	iox_runtime_init(name);

	iox_sub_options_t opts;
	iox_sub_options_init(&opts);
	opts.queueCapacity = QUEUE_CAPACITY;
	opts.historyRequest = 0;
	opts.subscribeOnCreate = true;
	opts.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
	iox_sub_t sub = iox_sub_init(&sub_storage, "framebus", "compare", "frames", &opts);

	iox_ws_t ws = iox_ws_init(&ws_storage);
	if (iox_ws_attach_subscriber_event(ws, sub, SubscriberEvent_DATA_RECEIVED, 0, NULL) !=
	    WaitSetResult_SUCCESS)
		die("cannot attach the subscriber to a waitset");

	wait_registered(sub);
	printf("ready\n");
	fflush(stdout);

	uint64_t last = bench_now_ns(); /* the start, then the last frame */
	for (;;) {
		const void *chunk;
		while (n < frames && !ended &&
		       iox_sub_take_chunk(sub, &chunk) == ChunkReceiveResult_SUCCESS) {
			uint64_t t = bench_now_ns();
			if (record(chunk, t, records[n], &touched)) {
				n++;
				last = t;
			} else {
				ended = true;
			}
			iox_sub_release_chunk(sub, chunk);
		}
		if (n == frames || ended)
			break;
		if (!ack && iox_sub_get_subscription_state(sub) == SubscribeState_SUBSCRIBED)
			ack = offer_ack(name);
		uint64_t now = bench_now_ns(), idle = n ? IDLE_AFTER_NS : IDLE_BEFORE_NS;
		if (now - last >= idle)
			break;
		uint64_t wait = last + idle - now;
		if (!ack && wait > CONNECT_POLL_NS)
			wait = CONNECT_POLL_NS;
		iox_notification_info_t events[1];
		uint64_t missed;
		iox_ws_timed_wait(ws, duration(wait), events, 1, &missed);
	}

	FILE *fp = fopen(out, "wb");
	if (!fp || fwrite(records, sizeof(*records), n, fp) != n || fclose(fp) != 0)
		die("cannot write the output file");
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("touched=%llu\ncpu=%.3f\n", (unsigned long long)touched,
	       (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
		   (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	fflush(stdout);

	iox_ws_deinit(ws);
	if (ack)
		iox_pub_deinit(ack);
	iox_sub_deinit(sub);
	iox_runtime_shutdown();
	free(records);
	return 0;
}
