/* SPDX-License-Identifier: MIT */
/* CLOCK_MONOTONIC in nanoseconds, for the benchmark programs that must not
 * link libframebus (the peers it is compared with, and wake-bench, which
 * measures the kernel alone); the others use fb_now_ns(), the same clock. */
#ifndef BENCH_CLOCK_H
#define BENCH_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
