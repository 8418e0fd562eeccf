/* SPDX-License-Identifier: MIT */
/*
 * wake-bench: how long a futex wake-up takes as a function of how long the
 * woken thread slept, and with a wake-ahead (the thread first sleeps until
 * LEAD before the wake, then sleeps again).  The measurement behind the
 * subscriber's wake-ahead (docs/ring.md, "Wake-ahead").
 *
 * Two threads: the waker sleeps for the interval, stamps CLOCK_MONOTONIC and
 * FUTEX_WAKEs; the waiter stamps when it returns.  No framebus code.
 *
 * Last line: wake-bench interval_us=I p50_us=A p99_us=B ahead_p50_us=C
 *            ahead_p99_us=D  (I = the longest interval measured)
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bench-clock.h"

#define ROUNDS 200

static _Atomic uint32_t word;
static uint64_t stamp[ROUNDS]; /* written before word counts the round */
static uint64_t interval_us, lead_us, start_ns;
static uint64_t latency[ROUNDS];

/* Sleep until at_ns (CLOCK_MONOTONIC). */
static void sleep_until(uint64_t at_ns)
{
	struct timespec ts = {.tv_sec = (time_t)(at_ns / 1000000000u),
			      .tv_nsec = (long)(at_ns % 1000000000u)};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
		;
}

/* When round i's wake-up is due. */
static uint64_t due_ns(int i)
{
	return start_ns + (uint64_t)(i + 1) * interval_us * 1000u;
}

static void *waiter(void *arg)
{
	(void)arg;
	for (int i = 0; i < ROUNDS; i++) {
		if (lead_us)
			sleep_until(due_ns(i) - lead_us * 1000u);
		uint32_t seen;
		while ((seen = atomic_load(&word)) <= (uint32_t)i)
			syscall(SYS_futex, &word, FUTEX_WAIT, seen, NULL, NULL, 0);
		latency[i] = bench_now_ns() - stamp[i];
	}
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* p50 and p99 in µs of ROUNDS wake-ups after interval_us of sleep. */
static void measure(double *p50, double *p99)
{
	pthread_t t;
	atomic_store(&word, 0);
	start_ns = bench_now_ns() + 10000000u;
	if (pthread_create(&t, NULL, waiter, NULL) != 0)
		exit(1);
	for (int i = 0; i < ROUNDS; i++) {
		sleep_until(due_ns(i));
		stamp[i] = bench_now_ns();
		atomic_store(&word, (uint32_t)i + 1);
		syscall(SYS_futex, &word, FUTEX_WAKE, 1, NULL, NULL, 0);
	}
	pthread_join(t, NULL);
	qsort(latency, ROUNDS, sizeof(latency[0]), cmp);
	*p50 = latency[ROUNDS / 2] / 1e3;
	*p99 = latency[ROUNDS * 99 / 100] / 1e3;
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		fprintf(stderr,
			"usage: wake-bench (no options: it measures intervals of 0.1, 1, 3, "
			"10 and 33.3 ms, %d wake-ups each)\n",
			ROUNDS);
		return strcmp(argv[1], "--help") == 0 ? 0 : 2;
	}
	static const uint64_t intervals[] = {100, 1000, 3000, 10000, 33333};
	double p50 = 0, p99 = 0, a50 = 0, a99 = 0;

	printf("futex wake-up after sleeping, %d rounds each\n", ROUNDS);
	printf("%12s %10s %10s %16s %16s\n", "interval_us", "p50_us", "p99_us", "ahead300_p50_us",
	       "ahead300_p99_us");
	for (size_t i = 0; i < sizeof(intervals) / sizeof(intervals[0]); i++) {
		interval_us = intervals[i];
		lead_us = 0;
		measure(&p50, &p99);
		printf("%12llu %10.1f %10.1f", (unsigned long long)interval_us, p50, p99);
		if (interval_us > 1000) {
			lead_us = 300;
			measure(&a50, &a99);
			printf(" %16.1f %16.1f", a50, a99);
		}
		printf("\n");
	}
	printf("wake-bench interval_us=%llu p50_us=%.1f p99_us=%.1f ahead_p50_us=%.1f "
	       "ahead_p99_us=%.1f\n",
	       (unsigned long long)interval_us, p50, p99, a50, a99);
	return 0;
}
