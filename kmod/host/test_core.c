// SPDX-License-Identifier: GPL-2.0
/*
 * test_core.c - the objhash and deferqueue cases, run on the host against
 * objhash.c and deferqueue.c compiled unchanged, under ASan and UBSan.
 * The same cases run against ckpt.ko in the VM (tests/vm); here, in
 * addition, every allocation is made to fail in turn.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/err.h>
#include <linux/errno.h>
#include <linux/limits.h>
#include "../ckpt_core.h"
#include "host.h"

static int checks_failed;

#define CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "  %s:%d: CHECK(%s) failed\n",	\
				__FILE__, __LINE__, #cond);		\
			checks_failed++;				\
		}							\
	} while (0)

#define CHECK_EQ(a, b)							\
	do {								\
		long long _a = (long long)(a), _b = (long long)(b);	\
		if (_a != _b) {						\
			fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", \
				__FILE__, __LINE__, #a, _a, _b);	\
			checks_failed++;				\
		}							\
	} while (0)

/* a counted object, like the module's CKPT_OBJ_TEST */
struct tobj {
	int refs;
	int grabs;
	int drops;
};

static void tobj_grab(void *ptr)
{
	struct tobj *t = ptr;

	t->refs++;
	t->grabs++;
}

static void tobj_drop(void *ptr)
{
	struct tobj *t = ptr;

	t->drops++;
	if (--t->refs < 0) {
		fprintf(stderr, "reference count below zero\n");
		abort();
	}
}

static const struct ckpt_obj_ops test_ops = {
	.name = "test", .type = CKPT_OBJ_TEST,
	.ref_grab = tobj_grab, .ref_drop = tobj_drop,
};

/* a second type over the same objects, for type mismatches */
static const struct ckpt_obj_ops file_ops = {
	.name = "file", .type = CKPT_OBJ_FILE,
	.ref_grab = tobj_grab, .ref_drop = tobj_drop,
};

/* "outside" references: everything but the hash's own */
static long tobj_users(void *ptr)
{
	struct tobj *t = ptr;

	return t->refs - 1;
}

static const struct ckpt_obj_ops counted_ops = {
	.name = "counted", .type = CKPT_OBJ_TEST,
	.ref_grab = tobj_grab, .ref_drop = tobj_drop,
	.ref_users = tobj_users,
};

static void new_hash(struct ckpt_obj_hash *h, unsigned int bits,
		     bool autogrow)
{
	memset(h, 0, sizeof(*h));
	CHECK_EQ(ckpt_obj_hash_alloc(h, bits, autogrow), 0);
}

static void test_objref_sequence(void)
{
	struct ckpt_obj_hash h;
	struct tobj t[5] = {};
	bool first;
	int i;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	for (i = 0; i < 5; i++) {
		CHECK_EQ(ckpt_obj_lookup_add(&h, &t[i], &test_ops, &first),
			 i + 1);
		CHECK(first);
	}
	for (i = 0; i < 5; i++) {
		CHECK_EQ(ckpt_obj_lookup_add(&h, &t[i], &test_ops, &first),
			 i + 1);
		CHECK(!first);
		CHECK_EQ(ckpt_obj_lookup(&h, &t[i], CKPT_OBJ_TEST), i + 1);
		CHECK_EQ(ckpt_obj_lookup(&h, &t[i], CKPT_OBJ_FILE), 0);
		CHECK_EQ(t[i].grabs, 1);
	}
	CHECK_EQ(ckpt_obj_lookup_add(&h, &t[0], &file_ops, &first), -ENOMSG);
	CHECK_EQ(ckpt_obj_lookup(&h, &h, CKPT_OBJ_TEST), 0);
	CHECK_EQ(h.nr_objs, 5);
	CHECK_EQ(h.mode, CKPT_MODE_CHECKPOINT);
	/* objrefs are findable on a checkpoint hash too (walked) */
	CHECK(ckpt_obj_fetch(&h, 3, CKPT_OBJ_TEST) == &t[2]);
	ckpt_obj_hash_free(&h);
	for (i = 0; i < 5; i++)
		CHECK_EQ(t[i].refs, 0);
}

static void test_insert_fetch(void)
{
	struct ckpt_obj_hash h;
	struct tobj a = {}, b = {};
	bool first;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	CHECK_EQ(ckpt_obj_insert(&h, &a, 0, &test_ops), -EINVAL);
	CHECK_EQ(ckpt_obj_insert(&h, &a, -3, &test_ops), -EINVAL);
	CHECK_EQ(ckpt_obj_insert(&h, &a, 7, &test_ops), 0);
	CHECK_EQ(ckpt_obj_insert(&h, &b, 7, &test_ops), -EEXIST);
	CHECK_EQ(b.grabs, 0);
	CHECK_EQ(ckpt_obj_insert(&h, &b, 2, &file_ops), 0);
	CHECK(ckpt_obj_fetch(&h, 7, CKPT_OBJ_TEST) == &a);
	CHECK(ckpt_obj_fetch(&h, 2, CKPT_OBJ_FILE) == &b);
	CHECK_EQ(PTR_ERR(ckpt_obj_fetch(&h, 8, CKPT_OBJ_TEST)), -ENOENT);
	CHECK_EQ(PTR_ERR(ckpt_obj_fetch(&h, 7, CKPT_OBJ_FILE)), -ENOMSG);
	CHECK_EQ(PTR_ERR(ckpt_obj_fetch(&h, 0, CKPT_OBJ_TEST)), -EINVAL);
	CHECK_EQ(PTR_ERR(ckpt_obj_fetch(&h, -1, CKPT_OBJ_TEST)), -EINVAL);
	/* a restart hash takes no checkpoint lookups */
	CHECK_EQ(ckpt_obj_lookup_add(&h, &b, &test_ops, &first), -EBADFD);
	CHECK_EQ(h.next_objref, 8);
	ckpt_obj_hash_free(&h);
	CHECK_EQ(a.refs + b.refs, 0);
	CHECK_EQ(a.drops, 1);
}

static void test_checkpoint_then_insert(void)
{
	struct ckpt_obj_hash h;
	struct tobj a = {};
	bool first;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	CHECK_EQ(ckpt_obj_lookup_add(&h, &a, &test_ops, &first), 1);
	CHECK_EQ(ckpt_obj_insert(&h, &a, 5, &test_ops), -EBADFD);
	CHECK_EQ(a.grabs, 1);
	ckpt_obj_hash_free(&h);
}

static int leak_objrefs[4], nr_leaks;

static int note_leak(void *arg, struct ckpt_obj *obj, long refs)
{
	leak_objrefs[nr_leaks++] = obj->objref;
	return 0;
}

/* ckpt_obj_contained(): a surplus reference is a holder outside the tree */
static void test_contained(void)
{
	struct ckpt_obj_hash h;
	struct tobj t[3] = { { .refs = 1 }, { .refs = 2 }, { .refs = 1 } };
	bool first;
	int i;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	for (i = 0; i < 3; i++)
		ckpt_obj_lookup_add(&h, &t[i], &counted_ops, &first);
	ckpt_obj_lookup_add(&h, &t[1], &counted_ops, &first);	/* met twice */
	ckpt_obj_lookup_add(&h, &t, &test_ops, &first);	/* not counted */
	nr_leaks = 0;
	CHECK_EQ(ckpt_obj_contained(&h, note_leak, NULL), 0);
	t[2].refs++;	/* someone outside takes a reference */
	CHECK_EQ(ckpt_obj_contained(&h, note_leak, NULL), 1);
	CHECK_EQ(nr_leaks, 1);
	CHECK_EQ(leak_objrefs[0], 3);
	ckpt_obj_hash_clear(&h);
	CHECK_EQ(ckpt_obj_contained(&h, note_leak, NULL), -EBADFD);
	ckpt_obj_hash_free(&h);
	t[2].refs--;
	for (i = 0; i < 3; i++)
		CHECK_EQ(t[i].refs, i == 1 ? 2 : 1);
}

static int count_free_list(struct ckpt_obj_hash *h)
{
	struct ckpt_obj *obj;
	int n = 0;

	hlist_for_each_entry(obj, &h->free, hash)
		n++;
	return n;
}

static void test_clear_then_free(void)
{
	enum { N = 100 };
	struct ckpt_obj_hash h;
	struct tobj t[N] = {};
	bool first;
	int i;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	for (i = 0; i < N; i++)
		CHECK_EQ(ckpt_obj_insert(&h, &t[i], i + 1, &test_ops), 0);
	ckpt_obj_hash_clear(&h);
	for (i = 0; i < N; i++) {
		CHECK_EQ(t[i].drops, 1);
		CHECK_EQ(t[i].refs, 0);
	}
	CHECK_EQ(h.nr_objs, 0);
	CHECK_EQ(h.nr_free, N);
	CHECK_EQ(count_free_list(&h), N);
	CHECK_EQ(ckpt_obj_max_chain(&h), 0);
	/* cleared, not freed: nothing kfree'd yet (seed 000) */
	CHECK_EQ(atomic_long_read(&ckpt_objs_live), N);
	CHECK(h.head != NULL);
	/* the hash is over: every operation says so */
	CHECK_EQ(ckpt_obj_insert(&h, &t[0], N + 1, &test_ops), -EBADFD);
	CHECK_EQ(ckpt_obj_lookup_add(&h, &t[0], &test_ops, &first), -EBADFD);
	CHECK_EQ(PTR_ERR(ckpt_obj_fetch(&h, 1, CKPT_OBJ_TEST)), -EBADFD);
	CHECK_EQ(ckpt_obj_drop(&h, 1), -EBADFD);
	ckpt_obj_hash_clear(&h);
	CHECK_EQ(t[0].drops, 1);
	ckpt_obj_hash_free(&h);
	CHECK_EQ(atomic_long_read(&ckpt_objs_live), 0);
	CHECK(h.head == NULL);
	CHECK(h.freed);
	ckpt_obj_hash_free(&h);		/* twice is safe */
	for (i = 0; i < N; i++)
		CHECK_EQ(t[i].drops, 1);
}

static void test_drop_early(void)
{
	struct ckpt_obj_hash h;
	struct tobj a = {};

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	CHECK_EQ(ckpt_obj_insert(&h, &a, 1, &test_ops), 0);
	CHECK_EQ(ckpt_obj_drop(&h, 2), -ENOENT);
	CHECK_EQ(ckpt_obj_drop(&h, 0), -EINVAL);
	CHECK_EQ(ckpt_obj_drop(&h, 1), 0);
	CHECK_EQ(a.refs, 0);
	CHECK_EQ(ckpt_obj_drop(&h, 1), -ESTALE);
	CHECK_EQ(PTR_ERR(ckpt_obj_fetch(&h, 1, CKPT_OBJ_TEST)), -ESTALE);
	CHECK(!IS_ERR(ckpt_obj_find(&h, 1, CKPT_OBJ_NONE)));
	ckpt_obj_hash_free(&h);
	CHECK_EQ(a.drops, 1);
}

static int work_fn(void *data);
static void work_dtor(void *data);
static void add_work(struct ckpt_deferqueue_head *q, int tag, int ret);

/* issue 8.1: a checkpoint entry never loses its reference early */
static void test_drop_refused_on_checkpoint(void)
{
	struct ckpt_obj_hash h;
	struct tobj a = {};
	bool first;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	CHECK_EQ(ckpt_obj_lookup_add(&h, &a, &test_ops, &first), 1);
	CHECK_EQ(ckpt_obj_drop(&h, 1), -EBADFD);
	CHECK_EQ(a.refs, 1);
	CHECK_EQ(ckpt_obj_lookup(&h, &a, CKPT_OBJ_TEST), 1);
	ckpt_obj_hash_free(&h);
	CHECK_EQ(a.refs, 0);
}

/* issue 8.5: lookup by objref is one probe in a checkpoint hash too */
static void test_objref_lookup_is_o1(void)
{
	enum { N = 5000 };
	struct ckpt_obj_hash h;
	struct tobj *t = calloc(N, sizeof(*t));
	bool first;
	int i, bad = 0;
	u64 probes;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	for (i = 0; i < N; i++)
		ckpt_obj_lookup_add(&h, &t[i], &test_ops, &first);
	probes = h.probes;
	for (i = 0; i < N; i++)
		bad += ckpt_obj_fetch(&h, i + 1, CKPT_OBJ_TEST) != &t[i];
	CHECK_EQ(bad, 0);
	CHECK_EQ(h.probes - probes, N);
	CHECK_EQ(PTR_ERR(ckpt_obj_fetch(&h, N + 1, CKPT_OBJ_TEST)), -ENOENT);
	CHECK_EQ(PTR_ERR(ckpt_obj_fetch(&h, 1 << 30, CKPT_OBJ_TEST)), -ENOENT);
	ckpt_obj_hash_free(&h);
	free(t);
}

/* issue 8.4 and 8.9: full hashes and the last objref refuse with ENOSPC */
static void test_limits(void)
{
	struct ckpt_deferqueue_head q;
	struct ckpt_obj_hash h;
	struct tobj t[4] = {};
	bool first;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	h.max_objs = 2;
	CHECK_EQ(ckpt_obj_lookup_add(&h, &t[0], &test_ops, &first), 1);
	CHECK_EQ(ckpt_obj_lookup_add(&h, &t[1], &test_ops, &first), 2);
	CHECK_EQ(ckpt_obj_lookup_add(&h, &t[2], &test_ops, &first), -ENOSPC);
	CHECK_EQ(ckpt_obj_lookup_add(&h, &t[1], &test_ops, &first), 2);
	CHECK_EQ(t[2].grabs, 0);
	ckpt_obj_hash_free(&h);

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	h.max_objs = 1;
	CHECK_EQ(ckpt_obj_insert(&h, &t[0], INT_MAX, &test_ops), 0);
	CHECK_EQ(h.next_objref, (s64)INT_MAX + 1);	/* no signed overflow */
	CHECK_EQ(ckpt_obj_insert(&h, &t[1], 5, &test_ops), -ENOSPC);
	ckpt_obj_hash_free(&h);

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	h.next_objref = INT_MAX;
	h.mode = CKPT_MODE_CHECKPOINT;
	/* by_ref would need 2^31 slots: take the reserve's failure instead */
	h.max_objs = 0;
	CHECK_EQ(ckpt_obj_lookup_add(&h, &t[3], &test_ops, &first), -ENOSPC);
	h.max_objs = 10;
	h.next_objref = (s64)INT_MAX + 1;
	CHECK_EQ(ckpt_obj_lookup_add(&h, &t[3], &test_ops, &first), -ENOSPC);
	ckpt_obj_hash_free(&h);

	ckpt_deferqueue_init(&q);
	q.max = 2;
	add_work(&q, 1, 0);
	add_work(&q, 2, 0);
	CHECK_EQ(ckpt_deferqueue_add(&q, work_fn, work_dtor, &t, 1), -ENOSPC);
	CHECK_EQ(q.count, 2);
	ckpt_deferqueue_destroy(&q);
	CHECK_EQ(atomic_long_read(&ckpt_defers_live), 0);
}

/* issue 8.6: an add undone leaves the hash as it was; a retry is FIRST */
static void test_undo(void)
{
	struct ckpt_obj_hash h;
	struct tobj a = {}, b = {};
	bool first;
	s64 next;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	CHECK_EQ(ckpt_obj_lookup_add(&h, &a, &test_ops, &first), 1);
	next = h.next_objref;
	CHECK_EQ(ckpt_obj_lookup_add(&h, &b, &test_ops, &first), 2);
	ckpt_obj_unadd(&h, 2, next);
	CHECK_EQ(b.refs, 0);
	CHECK_EQ(h.nr_objs, 1);
	CHECK_EQ(ckpt_obj_lookup(&h, &b, CKPT_OBJ_TEST), 0);
	CHECK_EQ(ckpt_obj_lookup_add(&h, &b, &test_ops, &first), 2);
	CHECK(first);
	CHECK_EQ(ckpt_obj_lookup_add(&h, &a, &test_ops, &first), 1);
	ckpt_obj_unmeet(&h, 1);
	CHECK_EQ(ckpt_obj_find(&h, 1, CKPT_OBJ_TEST)->users, 1);
	ckpt_obj_hash_free(&h);
	CHECK_EQ(a.refs + b.refs, 0);

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	next = h.next_objref;
	CHECK_EQ(ckpt_obj_insert(&h, &a, 9, &test_ops), 0);
	ckpt_obj_unadd(&h, 9, next);
	CHECK_EQ(h.next_objref, 1);
	CHECK_EQ(PTR_ERR(ckpt_obj_fetch(&h, 9, CKPT_OBJ_TEST)), -ENOENT);
	CHECK_EQ(ckpt_obj_insert(&h, &a, 9, &test_ops), 0);
	ckpt_obj_hash_free(&h);
	CHECK_EQ(a.refs, 0);
}

static void test_fixed_buckets(void)
{
	enum { N = 10000 };
	struct ckpt_obj_hash h;
	struct tobj *t = calloc(N, sizeof(*t));
	bool first;
	int i;

	new_hash(&h, CKPT_HASH_BITS_DEFAULT, false);
	for (i = 0; i < N; i++)
		CHECK_EQ(ckpt_obj_lookup_add(&h, &t[i], &test_ops, &first),
			 i + 1);
	/* the seeds' table never grows: ~10 per chain at 10^4 objects */
	CHECK_EQ(h.bits, CKPT_HASH_BITS_DEFAULT);
	CHECK_EQ(h.nr_grows, 0);
	CHECK(ckpt_obj_max_chain(&h) >= N >> CKPT_HASH_BITS_DEFAULT);
	ckpt_obj_hash_free(&h);
	free(t);
}

static void test_autogrow(void)
{
	enum { N = 100000 };
	struct ckpt_obj_hash h;
	struct tobj *t = calloc(N, sizeof(*t));
	bool first;
	int i, bad = 0;

	new_hash(&h, 4, true);
	for (i = 0; i < N; i++)
		CHECK_EQ(ckpt_obj_lookup_add(&h, &t[i], &test_ops, &first),
			 i + 1);
	CHECK(h.nr_grows > 0);
	CHECK(h.nr_objs <= (2UL << h.bits));
	CHECK(ckpt_obj_max_chain(&h) <= 16);
	for (i = 0; i < N; i++)
		bad += ckpt_obj_lookup(&h, &t[i], CKPT_OBJ_TEST) != i + 1;
	CHECK_EQ(bad, 0);
	ckpt_obj_hash_free(&h);

	/* restart side: keyed by objref, and fetch finds each after growing */
	new_hash(&h, 4, true);
	for (i = 0; i < N; i++)
		CHECK_EQ(ckpt_obj_insert(&h, &t[i], i + 1, &test_ops), 0);
	CHECK(ckpt_obj_max_chain(&h) <= 16);
	for (i = 0; i < N; i++)
		bad += ckpt_obj_fetch(&h, i + 1, CKPT_OBJ_TEST) != &t[i];
	CHECK_EQ(bad, 0);
	ckpt_obj_hash_free(&h);
	for (i = 0; i < N; i++)
		bad += t[i].refs != 0 || t[i].drops != 2;
	CHECK_EQ(bad, 0);
	free(t);
}

/* ---- deferqueue --------------------------------------------------------- */

static int tags[16], nr_tags, dtors;

struct work {
	int tag;
	int ret;
	char pad[200];	/* larger than a pointer: the RFC sized sizeof(wq) */
};

static int work_fn(void *data)
{
	struct work *w = data;

	if (w->ret)
		return w->ret;
	tags[nr_tags++] = w->tag;
	return 0;
}

static void work_dtor(void *data)
{
	dtors++;
}

static void add_work(struct ckpt_deferqueue_head *q, int tag, int ret)
{
	struct work w = { .tag = tag, .ret = ret };

	memset(w.pad, tag, sizeof(w.pad));
	CHECK_EQ(ckpt_deferqueue_add(q, work_fn, work_dtor, &w, sizeof(w)),
		 0);
}

static void test_deferqueue_order(void)
{
	struct ckpt_deferqueue_head q;
	int i;

	nr_tags = 0;
	ckpt_deferqueue_init(&q);
	for (i = 1; i <= 5; i++)
		add_work(&q, i, 0);
	CHECK_EQ(q.count, 5);
	CHECK_EQ(ckpt_deferqueue_run(&q), 5);
	CHECK_EQ(nr_tags, 5);
	for (i = 0; i < 5; i++)
		CHECK_EQ(tags[i], i + 1);
	CHECK_EQ(q.count, 0);
	CHECK_EQ(ckpt_deferqueue_run(&q), 0);
	CHECK_EQ(atomic_long_read(&ckpt_defers_live), 0);
}

static void test_deferqueue_first_error(void)
{
	struct ckpt_deferqueue_head q;

	nr_tags = 0;
	dtors = 0;
	ckpt_deferqueue_init(&q);
	add_work(&q, 1, 0);
	add_work(&q, 0, -EIO);
	add_work(&q, 0, -ENOSPC);
	add_work(&q, 2, 0);
	CHECK_EQ(ckpt_deferqueue_run(&q), -EIO);
	CHECK_EQ(nr_tags, 1);
	CHECK_EQ(q.count, 2);
	CHECK_EQ(ckpt_deferqueue_run(&q), -ENOSPC);
	CHECK_EQ(ckpt_deferqueue_run(&q), 1);
	CHECK_EQ(nr_tags, 2);
	CHECK_EQ(tags[1], 2);
	CHECK_EQ(dtors, 0);
}

static void test_deferqueue_destroy(void)
{
	struct ckpt_deferqueue_head q;

	nr_tags = 0;
	dtors = 0;
	ckpt_deferqueue_init(&q);
	add_work(&q, 1, 0);
	add_work(&q, 2, 0);
	add_work(&q, 3, 0);
	CHECK_EQ(atomic_long_read(&ckpt_defers_live), 3);
	ckpt_deferqueue_destroy(&q);
	CHECK_EQ(dtors, 3);
	CHECK_EQ(nr_tags, 0);
	CHECK_EQ(q.count, 0);
	CHECK_EQ(atomic_long_read(&ckpt_defers_live), 0);
	CHECK_EQ(ckpt_deferqueue_run(&q), 0);
}

/* ---- every allocation failing in turn ----------------------------------- */

/*
 * One scenario touching every allocation site; run it with the 1st, 2nd,
 * ... allocation failing until one run meets no failure.  Each failure must
 * leave nothing allocated and no reference held once torn down.
 */
static int scenario(void)
{
	enum { N = 40 };
	struct ckpt_deferqueue_head q;
	struct ckpt_obj_hash h;
	struct tobj t[N] = {};
	int i, ret, errors = 0;
	bool first;

	memset(&h, 0, sizeof(h));
	ckpt_deferqueue_init(&q);
	if (ckpt_obj_hash_alloc(&h, 2, true))
		return 1;
	for (i = 0; i < N; i++) {
		ret = ckpt_obj_lookup_add(&h, &t[i], &test_ops, &first);
		if (ret == -ENOMEM) {
			errors++;
			CHECK_EQ(t[i].grabs, 0);
		} else {
			CHECK(ret > 0);
		}
		if (ckpt_deferqueue_add(&q, work_fn, work_dtor, &t[i],
					sizeof(t[i])))
			errors++;
	}
	if (ckpt_obj_hash_resize(&h, 8))
		errors++;
	ckpt_obj_hash_clear(&h);
	ckpt_deferqueue_destroy(&q);
	ckpt_obj_hash_free(&h);
	for (i = 0; i < N; i++)
		CHECK_EQ(t[i].refs, 0);
	return errors;
}

static void test_alloc_failures(void)
{
	long n;

	for (n = 1; n < 10000; n++) {
		host_fail_nth(n);
		scenario();
		CHECK_EQ(host_allocs_live, 0);
		CHECK_EQ(atomic_long_read(&ckpt_objs_live), 0);
		CHECK_EQ(atomic_long_read(&ckpt_defers_live), 0);
		if (host_alloc_calls < n)
			break;
	}
	host_fail_nth(0);
	CHECK(n > 80);		/* every site was reached */
	CHECK_EQ(scenario(), 0);
}

struct test {
	const char *name;
	void (*fn)(void);
};

#define T(f) { #f, f }

static const struct test tests[] = {
	T(test_objref_sequence),
	T(test_insert_fetch),
	T(test_checkpoint_then_insert),
	T(test_clear_then_free),
	T(test_drop_early),
	T(test_drop_refused_on_checkpoint),
	T(test_objref_lookup_is_o1),
	T(test_undo),
	T(test_fixed_buckets),
	T(test_autogrow),
	T(test_contained),
	T(test_deferqueue_order),
	T(test_deferqueue_first_error),
	T(test_deferqueue_destroy),
	T(test_limits),
	T(test_alloc_failures),
};

int main(void)
{
	int passed = 0, failed = 0;
	size_t i;

	for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		checks_failed = 0;
		tests[i].fn();
		/* every case must give back all it allocated */
		CHECK_EQ(host_allocs_live, 0);
		CHECK_EQ(atomic_long_read(&ckpt_objs_live), 0);
		printf("%s %zu %s\n", checks_failed ? "not ok" : "ok", i + 1,
		       tests[i].name);
		if (checks_failed)
			failed++;
		else
			passed++;
	}
	printf("host-core: %d passed, %d failed\n", passed, failed);
	return failed != 0;
}
