/* SPDX-License-Identifier: MIT */
/* The calling thread's slice under Linux's fair scheduler (sched_attr's
 * sched_runtime: EEVDF custom slices, Linux 6.12): fb_thread_set_sched_slice(),
 * for applications' consumer threads and the Python binding's event-loop
 * thread (docs/ring.md, "Short slice"). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ring-private.h"

#define RESET_ON_FORK 0x01 /* SCHED_FLAG_RESET_ON_FORK */

/* The kernel's struct sched_attr (SCHED_ATTR_SIZE_VER1): glibc before 2.41
 * has no declaration of it, and <linux/sched/types.h> clashes with
 * <sched.h>. */
struct sched_attr_v1 {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime;
	uint64_t sched_deadline;
	uint64_t sched_period;
	uint32_t sched_util_min;
	uint32_t sched_util_max;
};

FB_EXPORT int fb_thread_set_sched_slice(uint64_t slice_ns, uint64_t *ret_previous_ns)
{
	struct sched_attr_v1 attr = {0};

	if (slice_ns > FB_SCHED_SLICE_MAX_NS)
		return -EINVAL;
	if (syscall(SYS_sched_getattr, 0, &attr, sizeof(attr), 0) < 0)
		return -errno;
	if (attr.sched_policy != SCHED_OTHER && attr.sched_policy != SCHED_BATCH)
		return -EOPNOTSUPP;
	uint64_t previous = attr.sched_runtime;
	if (previous != slice_ns) {
		/* Its policy, nice value and reset-on-fork flag as they are. */
		attr.size = sizeof(attr);
		attr.sched_flags &= RESET_ON_FORK;
		attr.sched_runtime = slice_ns;
		if (syscall(SYS_sched_setattr, 0, &attr, 0) < 0)
			return -errno;
	}
	if (ret_previous_ns)
		*ret_previous_ns = previous;
	return 0;
}
