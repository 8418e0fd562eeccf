/* SPDX-License-Identifier: MIT */
/* MEASUREMENT SCAFFOLD: sets the calling thread's fair-scheduler slice. */
#ifndef COMPARE_SLICE_H
#define COMPARE_SLICE_H

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

struct compare_sched_attr {
	uint32_t size, sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime, sched_deadline, sched_period;
	uint32_t sched_util_min, sched_util_max;
};

static inline void compare_slice(uint64_t ns)
{
	struct compare_sched_attr a = {0};
	if (!ns)
		return;
	if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0) < 0) {
		perror("sched_getattr");
		return;
	}
	a.size = sizeof(a);
	a.sched_flags &= 1;
	a.sched_runtime = ns;
	if (syscall(SYS_sched_setattr, 0, &a, 0) < 0)
		perror("sched_setattr");
}

/* MEASUREMENT SCAFFOLD: a short slice only while waiting. */
static uint64_t compare_wait_slice_ns;

static inline void compare_set_runtime(uint64_t ns)
{
	struct compare_sched_attr a = {0};
	if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0) < 0)
		return;
	a.size = sizeof(a);
	a.sched_flags &= 1;
	a.sched_runtime = ns;
	(void)syscall(SYS_sched_setattr, 0, &a, 0);
}

static inline void compare_wait_begin(void)
{
	if (compare_wait_slice_ns)
		compare_set_runtime(compare_wait_slice_ns);
}

static inline void compare_wait_end(void)
{
	if (compare_wait_slice_ns)
		compare_set_runtime(0);
}
#endif
