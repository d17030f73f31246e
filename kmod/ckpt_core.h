/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ckpt_core.h - the objhash and the deferqueue, the core of linux-cr.
 *
 * objhash.c and deferqueue.c include only this file and generic kernel
 * headers, so that they build unchanged as a host library against the
 * stand-ins in host/ (the way tools/testing/radix-tree builds kernel code).
 */
#ifndef _CKPT_CORE_H
#define _CKPT_CORE_H

#include <linux/types.h>
#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/atomic.h>
#include "include/uapi/ckpt.h"

/*
 * Fault injection (ckpt.ko's fail_nth parameter, in the spirit of the
 * kernel's fail-nth): true when the allocation or user copy about to be
 * made must fail.  The host build has its own counted allocator and returns
 * false.
 */
bool ckpt_fault(void);

/* ---- objhash (seeds 001, 000) ------------------------------------------ */

/**
 * struct ckpt_obj_ops - what the objhash needs to know about a type
 * @name: printable type name
 * @type: enum ckpt_obj_type
 * @ref_grab: take the reference the hash holds on @ptr
 * @ref_drop: drop it again
 * @ref_users: references to @ptr other than the hash's, to compare with the
 *             users lookup_add counted (leak detection); NULL: not checked
 */
struct ckpt_obj_ops {
	const char *name;
	enum ckpt_obj_type type;
	void (*ref_grab)(void *ptr);
	void (*ref_drop)(void *ptr);
	long (*ref_users)(void *ptr);
};

/* ckpt_obj.flags */
#define CKPT_OBJF_DROPPED	0x1	/* hash reference already dropped */

/**
 * struct ckpt_obj - one shared object known to the hash
 * @hash: bucket chain; after clear, the free list (seed 000 v2: the same
 *        node is reused, no second list_head)
 * @ptr: the kernel object
 * @ops: its type's operations
 * @objref: its identifier in the image, from 1
 * @flags: CKPT_OBJF_*
 * @users: checkpoint: references lookup_add met (linux-cr's users, less the
 *         hash's own)
 */
struct ckpt_obj {
	struct hlist_node hash;
	void *ptr;
	const struct ckpt_obj_ops *ops;
	int objref;
	unsigned int flags;
	unsigned long users;
};

/* How entries are keyed: set by the first lookup_add or insert. */
enum ckpt_obj_mode {
	CKPT_MODE_NONE = 0,
	CKPT_MODE_CHECKPOINT,	/* by kernel pointer, objrefs assigned */
	CKPT_MODE_RESTART,	/* by objref, given by the image */
};

/**
 * struct ckpt_obj_hash - the objhash of one context
 * @head: 1 << @bits buckets; NULL once freed
 * @free: entries cleared but not yet kfree'd
 * @by_ref: checkpoint mode: entry of objref n at [n - 1] (objrefs are dense
 *          there), so lookup by objref is O(1) beside the pointer hash;
 *          restart mode keys the buckets by objref and needs none
 * @by_ref_size: slots allocated in @by_ref
 * @seed: random, per hash, mixed into each kernel address before it is
 *        hashed: the bucket layout, which STATS shows (max_chain, probes,
 *        with a bucket count the caller chose), says nothing about the
 *        kernel's addresses, and differs from one context to the next
 * @max_objs: entries allowed (ENOSPC beyond)
 * @next_objref: one above the largest objref used; INT_MAX + 1 at most
 */
struct ckpt_obj_hash {
	struct hlist_head *head;
	struct hlist_head free;
	struct ckpt_obj **by_ref;
	unsigned long by_ref_size;
	unsigned int bits;
	bool autogrow;
	bool cleared;
	bool freed;
	enum ckpt_obj_mode mode;
	u64 seed;
	s64 next_objref;
	unsigned long max_objs;
	unsigned long nr_objs;
	unsigned long nr_free;
	unsigned int nr_grows;
	u64 lookups;
	u64 probes;
};

/* module-wide count of ckpt_obj entries allocated and not yet kfree'd */
extern atomic_long_t ckpt_objs_live;

int ckpt_obj_hash_alloc(struct ckpt_obj_hash *h, unsigned int bits,
			bool autogrow);
int ckpt_obj_hash_resize(struct ckpt_obj_hash *h, unsigned int bits);
void ckpt_obj_hash_clear(struct ckpt_obj_hash *h);
void ckpt_obj_hash_free(struct ckpt_obj_hash *h);
int ckpt_obj_lookup(struct ckpt_obj_hash *h, void *ptr,
		    enum ckpt_obj_type type);
int ckpt_obj_lookup_add(struct ckpt_obj_hash *h, void *ptr,
			const struct ckpt_obj_ops *ops, bool *first);
int ckpt_obj_insert(struct ckpt_obj_hash *h, void *ptr, int objref,
		    const struct ckpt_obj_ops *ops);
struct ckpt_obj *ckpt_obj_find(struct ckpt_obj_hash *h, int objref,
			       enum ckpt_obj_type type);
void *ckpt_obj_fetch(struct ckpt_obj_hash *h, int objref,
		     enum ckpt_obj_type type);
int ckpt_obj_drop(struct ckpt_obj_hash *h, int objref);
void ckpt_obj_unadd(struct ckpt_obj_hash *h, int objref, s64 next_objref);
void ckpt_obj_unmeet(struct ckpt_obj_hash *h, int objref);
typedef int (*ckpt_obj_visit_t)(void *arg, struct ckpt_obj *obj, long refs);
long ckpt_obj_contained(struct ckpt_obj_hash *h, ckpt_obj_visit_t leak,
			void *arg);
unsigned int ckpt_obj_max_chain(const struct ckpt_obj_hash *h);

/* ---- deferqueue (seed 002) --------------------------------------------- */

/*
 * A deferred function consumes its data: it releases what the data holds
 * whether it succeeds or fails.  The destructor releases it for an entry that
 * never ran.
 */
typedef int (*ckpt_defer_fn_t)(void *data);
typedef void (*ckpt_defer_dtor_t)(void *data);

struct ckpt_deferqueue_head {
	spinlock_t lock;
	struct list_head list;
	unsigned int count;
	unsigned int max;	/* entries allowed at once (ENOSPC beyond) */
};

/* module-wide count of deferqueue entries allocated and not yet kfree'd */
extern atomic_long_t ckpt_defers_live;

void ckpt_deferqueue_init(struct ckpt_deferqueue_head *head);
int ckpt_deferqueue_add(struct ckpt_deferqueue_head *head,
			ckpt_defer_fn_t fn, ckpt_defer_dtor_t dtor,
			const void *data, size_t size);
int ckpt_deferqueue_run(struct ckpt_deferqueue_head *head);
void ckpt_deferqueue_destroy(struct ckpt_deferqueue_head *head);

#endif /* _CKPT_CORE_H */
