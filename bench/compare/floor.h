/* SPDX-License-Identifier: MIT */
/*
 * The wake-up floor of bench/compare (PROTOCOL.md, "The floor"): no frame,
 * only a futex wake-up of each sleeping consumer process, on the same host at
 * the same moments, from C (floor-consumer) and from Python (consumer.py
 * floor).  compare-producer floor --name /NAME makes this page, a POSIX shm
 * object of FLOOR_PAGE_SIZE bytes:
 *
 *   offset 0   uint32 seq    the last frame sent (1, 2, ...; 0: none yet),
 *                            the futex word every consumer waits on
 *   offset 8   uint64 t_pub[FLOOR_STAMPS]   t_pub[seq % FLOOR_STAMPS]: the
 *                            CLOCK_MONOTONIC ns of frame seq's wake-up
 *
 * The producer writes t_pub, stores seq (release), then FUTEX_WAKEs every
 * waiter.  Consumers post the semaphore /NAME-attached0 once mapped, as the
 * shm+sem consumers do.
 */
#ifndef COMPARE_FLOOR_H
#define COMPARE_FLOOR_H

#include <stdatomic.h>
#include <stdint.h>

#define FLOOR_STAMPS 64
#define FLOOR_PAGE_SIZE 4096

struct floor_page {
	_Atomic uint32_t seq;
	uint32_t reserved;
	uint64_t t_pub[FLOOR_STAMPS];
};

_Static_assert(sizeof(struct floor_page) <= FLOOR_PAGE_SIZE, "the floor's page");

#endif
