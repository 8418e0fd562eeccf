/* SPDX-License-Identifier: MIT */
/*
 * The C consumer of bench/compare's wake-up floor (floor.h, PROTOCOL.md):
 *
 *   floor-consumer --name /NAME --frames N --out PATH [--sched-slice NS]
 *
 * Sleeps in FUTEX_WAIT on the floor page's seq; each wake-up's record is
 * (seq, t_pub, t_recv) with t_recv taken the moment FUTEX_WAIT returned with
 * a new seq.  There is no frame to touch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/futex.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <framebus/framebus.h>

#include "../bench-clock.h"
#include "floor.h"

#define NS 1000000000ull
#define IDLE_BEFORE_NS (15 * NS)
#define IDLE_AFTER_NS (3 * NS)

static void die(const char *what, const char *why)
{
	fprintf(stderr, "floor-consumer: %s: %s\n", what, why);
	exit(1);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"frames", required_argument, NULL, 'n'},
	    {"out", required_argument, NULL, 'o'},
	    {"sched-slice", required_argument, NULL, 'S'},
	    {"name", required_argument, NULL, 'N'},
	    {0},
	};
	const char *out = NULL, *name = NULL;
	uint64_t frames = 0, n = 0, slice_ns = 0;
	int ch;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch == 'n')
			frames = strtoull(optarg, NULL, 10);
		else if (ch == 'o')
			out = optarg;
		else if (ch == 'S')
			slice_ns = strtoull(optarg, NULL, 10);
		else if (ch == 'N')
			name = optarg;
		else
			return 2;
	}
	uint64_t(*records)[3] = calloc(frames ? frames : 1, sizeof(*records));
	if (optind != argc || !out || !name || !frames || !records) {
		fprintf(stderr, "usage: floor-consumer --name /NAME --frames N --out PATH "
				"[--sched-slice NS]\n");
		return 2;
	}
	/* The consumer thread's fair-scheduler slice (compare.py's TRANSPORT+slice),
	 * set with framebus's helper whatever the transport. */
	int slice_r = slice_ns ? fb_thread_set_sched_slice(slice_ns, NULL) : 0;
	if (slice_r < 0) {
		fprintf(stderr, "floor-consumer: --sched-slice: %s\n", fb_strerror(slice_r));
		return 1;
	}
	int fd = shm_open(name, O_RDWR, 0);
	if (fd < 0)
		die(name, strerror(errno));
	struct floor_page *page =
	    mmap(NULL, FLOOR_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (page == MAP_FAILED)
		die("mmap", strerror(errno));
	close(fd);
	char sem_name[128];
	snprintf(sem_name, sizeof(sem_name), "%s-attached0", name);
	sem_t *attached = sem_open(sem_name, 0);
	if (attached == SEM_FAILED)
		die(sem_name, strerror(errno));
	uint32_t last = atomic_load(&page->seq);
	sem_post(attached);
	printf("ready\n");
	fflush(stdout);

	while (n < frames) {
		uint64_t idle = n ? IDLE_AFTER_NS : IDLE_BEFORE_NS;
		struct timespec ts = {.tv_sec = (time_t)(idle / NS), .tv_nsec = (long)(idle % NS)};
		uint32_t seq;
		while ((seq = atomic_load_explicit(&page->seq, memory_order_acquire)) == last) {
			if (syscall(SYS_futex, &page->seq, FUTEX_WAIT, last, &ts, NULL, 0) < 0 &&
			    errno == ETIMEDOUT)
				goto done;
		}
		records[n][2] = bench_now_ns();
		records[n][0] = seq;
		records[n][1] = page->t_pub[seq % FLOOR_STAMPS];
		last = seq;
		n++;
	}
done:;
	FILE *fp = fopen(out, "wb");
	if (!fp || fwrite(records, sizeof(*records), n, fp) != n || fclose(fp) != 0)
		die(out, "cannot write it");
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("cpu=%.3f\n", (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
				 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	free(records);
	return 0;
}
