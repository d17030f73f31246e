// SPDX-License-Identifier: GPL-2.0
/*
 * bench_core.c - figures for the objhash core, measured side by side in one
 * run (no sanitizers, -O2):
 *   1. per-object cost of lookup_add and of a repeated lookup at 10^3..10^6
 *      objects, the seeds' fixed 1 << 10 buckets against autogrow; probes
 *      per lookup is the machine-independent figure, ns/op the felt one;
 *   2. the question Oren asked of seed 000: what clear costs before the
 *      tasks resume, against clear + kfree (free-upfront).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../ckpt_core.h"

static void grab(void *ptr)
{
	++*(int *)ptr;
}

static void drop(void *ptr)
{
	--*(int *)ptr;
}

static const struct ckpt_obj_ops ops = {
	.name = "bench", .type = CKPT_OBJ_TEST, .ref_grab = grab,
	.ref_drop = drop,
};

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int *objs;

static void fill(struct ckpt_obj_hash *h, long n, bool autogrow,
		 double *add_ns, double *find_ns, double *probes)
{
	double t0, t1, t2;
	bool first;
	long i;

	memset(h, 0, sizeof(*h));
	if (ckpt_obj_hash_alloc(h, CKPT_HASH_BITS_DEFAULT, autogrow))
		exit(1);
	t0 = now_ns();
	for (i = 0; i < n; i++)
		ckpt_obj_lookup_add(h, &objs[i], &ops, &first);
	t1 = now_ns();
	h->lookups = h->probes = 0;
	for (i = 0; i < n; i++)
		if (ckpt_obj_lookup(h, &objs[i], CKPT_OBJ_TEST) != i + 1)
			exit(2);
	t2 = now_ns();
	*add_ns = (t1 - t0) / n;
	*find_ns = (t2 - t1) / n;
	*probes = (double)h->probes / h->lookups;
}

int main(void)
{
	static const long sizes[] = { 1000, 10000, 100000, 1000000 };
	double add[2], find[2], probes[2], t0, t1, t2;
	struct ckpt_obj_hash h;
	size_t s;
	int a;

	objs = calloc(sizes[3], sizeof(*objs));
	printf("objhash lookup_add / lookup, 1 << %d buckets fixed vs autogrow\n",
	       CKPT_HASH_BITS_DEFAULT);
	printf("%9s | %9s %9s %7s | %9s %9s %7s | %s\n", "objects",
	       "add ns", "find ns", "probes", "add ns", "find ns", "probes",
	       "find fixed/grow");
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		for (a = 0; a < 2; a++) {
			fill(&h, sizes[s], a, &add[a], &find[a], &probes[a]);
			ckpt_obj_hash_free(&h);
		}
		printf("%9ld | %9.1f %9.1f %7.1f | %9.1f %9.1f %7.1f | %.1fx\n",
		       sizes[s], add[0], find[0], probes[0], add[1], find[1],
		       probes[1], find[0] / find[1]);
	}

	printf("\nseed 000: cost before the tasks resume, 10^5 objects\n");
	fill(&h, 100000, true, &add[0], &find[0], &probes[0]);
	t0 = now_ns();
	ckpt_obj_hash_clear(&h);	/* clear-early: this much before */
	t1 = now_ns();
	ckpt_obj_hash_free(&h);		/* ... and this much after */
	t2 = now_ns();
	printf("clear %.2f ms, kfree %.2f ms: free-upfront waits %.2fx as long "
	       "as clear-early\n", (t1 - t0) / 1e6, (t2 - t1) / 1e6,
	       (t2 - t0) / (t1 - t0));
	free(objs);
	return 0;
}
