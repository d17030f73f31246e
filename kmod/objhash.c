// SPDX-License-Identifier: GPL-2.0
/*
 * objhash.c - the hash of shared objects (linux-cr, seeds 001 and 000)
 *
 * The state of a shared object is saved once: the first time checkpoint meets
 * it, it gets an objref (1, 2, ...) and an entry keyed by its kernel address;
 * every later meeting only finds that objref.  On restart the entry is keyed
 * by the objref the image gives, and later records fetch the object by it.
 * The hash holds one reference on each object (ops->ref_grab/ref_drop).
 *
 * Clearing drops those references and moves each entry onto a free list by
 * reusing its hash node; freeing kfree's the free list and the buckets.  The
 * two are separate so that restart can clear before it lets the tasks go
 * (the half-closed pipe race) and pay for the kfree afterwards (seed 000 v2).
 */
#include <linux/err.h>
#include <linux/errno.h>
#include <linux/hash.h>
#include <linux/limits.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include "ckpt_core.h"

atomic_long_t ckpt_objs_live = ATOMIC_LONG_INIT(0);

/* grow past this many entries per bucket on average */
#define CKPT_OBJ_HASH_LOAD	2

/* a kernel address, keyed by the context's seed (see struct ckpt_obj_hash) */
static u32 obj_hash_ptr(const struct ckpt_obj_hash *h, void *ptr,
			unsigned int bits)
{
	return hash_64((u64)(unsigned long)ptr ^ h->seed, bits);
}

static u32 obj_bucket(const struct ckpt_obj_hash *h, enum ckpt_obj_mode mode,
		      void *ptr, int objref, unsigned int bits)
{
	if (mode == CKPT_MODE_RESTART)
		return hash_32((u32)objref, bits);
	return obj_hash_ptr(h, ptr, bits);
}

/**
 * ckpt_obj_hash_alloc - allocate empty buckets for an objhash
 * @h: the hash, zeroed or freed
 * @bits: log2 of the bucket count
 * @autogrow: double the buckets as entries pass CKPT_OBJ_HASH_LOAD each
 *
 * Return: 0, or -ENOMEM with @h unchanged.
 */
int ckpt_obj_hash_alloc(struct ckpt_obj_hash *h, unsigned int bits,
			bool autogrow)
{
	struct hlist_head *head;

	head = ckpt_fault() ? NULL :
		kvcalloc(1UL << bits, sizeof(*head),
			 GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
	if (!head)
		return -ENOMEM;
	h->head = head;
	h->bits = bits;
	h->autogrow = autogrow;
	h->seed = get_random_u64();
	h->next_objref = 1;
	h->max_objs = CKPT_MAX_OBJS_DEFAULT;
	INIT_HLIST_HEAD(&h->free);
	return 0;
}

/**
 * ckpt_obj_hash_resize - rehash every entry into 1 << @bits buckets
 * @h: the hash; not cleared or freed
 * @bits: new log2 of the bucket count
 *
 * Return: 0, or -ENOMEM with @h unchanged.
 */
int ckpt_obj_hash_resize(struct ckpt_obj_hash *h, unsigned int bits)
{
	struct hlist_head *head;
	struct hlist_node *t;
	struct ckpt_obj *obj;
	unsigned long i;

	head = ckpt_fault() ? NULL :
		kvcalloc(1UL << bits, sizeof(*head),
			 GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
	if (!head)
		return -ENOMEM;
	for (i = 0; i < (1UL << h->bits); i++) {
		hlist_for_each_entry_safe(obj, t, &h->head[i], hash) {
			hlist_del(&obj->hash);
			hlist_add_head(&obj->hash,
				       &head[obj_bucket(h, h->mode, obj->ptr,
							obj->objref, bits)]);
		}
		cond_resched();
	}
	kvfree(h->head);
	h->head = head;
	h->bits = bits;
	return 0;
}

static void obj_hash_maybe_grow(struct ckpt_obj_hash *h)
{
	if (!h->autogrow || h->bits >= CKPT_HASH_BITS_MAX)
		return;
	if (h->nr_objs <= (CKPT_OBJ_HASH_LOAD << h->bits))
		return;
	/* a failed grow only costs speed: keep the old buckets */
	if (!ckpt_obj_hash_resize(h, h->bits + 1))
		h->nr_grows++;
}

/* checkpoint side: find an entry by kernel address */
static struct ckpt_obj *obj_find_by_ptr(struct ckpt_obj_hash *h, void *ptr)
{
	struct ckpt_obj *obj;

	h->lookups++;
	hlist_for_each_entry(obj, &h->head[obj_hash_ptr(h, ptr, h->bits)],
			     hash) {
		h->probes++;
		if (obj->ptr == ptr)
			return obj;
	}
	return NULL;
}

/* find an entry by objref: restart keys the buckets by it, checkpoint
 * assigns objrefs densely and indexes them in by_ref; both O(1) */
static struct ckpt_obj *obj_find_by_objref(struct ckpt_obj_hash *h,
					   int objref)
{
	struct ckpt_obj *obj;

	h->lookups++;
	if (h->mode == CKPT_MODE_RESTART) {
		hlist_for_each_entry(obj, &h->head[hash_32(objref, h->bits)],
				     hash) {
			h->probes++;
			if (obj->objref == objref)
				return obj;
		}
		return NULL;
	}
	if (objref <= 0 || (unsigned long)objref > h->by_ref_size)
		return NULL;
	obj = h->by_ref[objref - 1];
	if (obj)
		h->probes++;
	return obj;
}

/* make room in by_ref for objref @objref; -ENOMEM changes nothing */
static int obj_by_ref_reserve(struct ckpt_obj_hash *h, int objref)
{
	unsigned long size = h->by_ref_size ?: 64;
	struct ckpt_obj **by_ref;

	if ((unsigned long)objref <= h->by_ref_size)
		return 0;
	while (size < (unsigned long)objref)
		size *= 2;
	by_ref = ckpt_fault() ? NULL :
		kvcalloc(size, sizeof(*by_ref),
			 GFP_KERNEL_ACCOUNT | __GFP_NOWARN);
	if (!by_ref)
		return -ENOMEM;
	if (h->by_ref_size)
		memcpy(by_ref, h->by_ref, h->by_ref_size * sizeof(*by_ref));
	kvfree(h->by_ref);
	h->by_ref = by_ref;
	h->by_ref_size = size;
	return 0;
}

/* hash ops are valid only while the hash is live and in one mode; the
 * first add that succeeds sets the mode (a failed one leaves none) */
static int obj_hash_check(struct ckpt_obj_hash *h, enum ckpt_obj_mode mode)
{
	if (!h->head || h->cleared)
		return -EBADFD;
	if (h->mode != CKPT_MODE_NONE && h->mode != mode)
		return -EBADFD;
	return 0;
}

static struct ckpt_obj *obj_new(struct ckpt_obj_hash *h, void *ptr,
				int objref, const struct ckpt_obj_ops *ops,
				enum ckpt_obj_mode mode)
{
	struct ckpt_obj *obj;

	if (mode == CKPT_MODE_CHECKPOINT && obj_by_ref_reserve(h, objref))
		return NULL;
	obj = ckpt_fault() ? NULL : kmalloc(sizeof(*obj), GFP_KERNEL_ACCOUNT);
	if (!obj)
		return NULL;
	obj->ptr = ptr;
	obj->ops = ops;
	obj->objref = objref;
	obj->flags = 0;
	obj->users = 0;
	h->mode = mode;
	hlist_add_head(&obj->hash,
		       &h->head[obj_bucket(h, mode, ptr, objref, h->bits)]);
	if (mode == CKPT_MODE_CHECKPOINT)
		h->by_ref[objref - 1] = obj;
	ops->ref_grab(ptr);
	h->nr_objs++;
	atomic_long_inc(&ckpt_objs_live);
	obj_hash_maybe_grow(h);
	return obj;
}

/**
 * ckpt_obj_lookup - the objref of an object already in a checkpoint hash
 * @h: the hash
 * @ptr: the kernel object
 * @type: its type
 *
 * Return: the objref, or 0 when @ptr is not there under @type.
 */
int ckpt_obj_lookup(struct ckpt_obj_hash *h, void *ptr,
		    enum ckpt_obj_type type)
{
	struct ckpt_obj *obj;

	if (!h->head || h->cleared || h->mode != CKPT_MODE_CHECKPOINT)
		return 0;
	obj = obj_find_by_ptr(h, ptr);
	return obj && obj->ops->type == type ? obj->objref : 0;
}

/**
 * ckpt_obj_lookup_add - the objref of @ptr, adding it the first time
 * @h: the hash (checkpoint side)
 * @ptr: the kernel object
 * @ops: its type's operations; the hash grabs a reference when adding
 * @first: set to whether @ptr was added now
 *
 * Return: the objref (> 0), -EBADFD when @h is a restart hash or cleared,
 * -ENOMSG when @ptr is known under another type, -ENOSPC when the hash is
 * full (max_objs, or objref INT_MAX used), or -ENOMEM.
 */
int ckpt_obj_lookup_add(struct ckpt_obj_hash *h, void *ptr,
			const struct ckpt_obj_ops *ops, bool *first)
{
	struct ckpt_obj *obj;
	int ret;

	ret = obj_hash_check(h, CKPT_MODE_CHECKPOINT);
	if (ret)
		return ret;
	*first = false;
	obj = obj_find_by_ptr(h, ptr);
	if (obj) {
		if (obj->ops != ops)
			return -ENOMSG;
		obj->users++;
		return obj->objref;
	}
	if (h->nr_objs >= h->max_objs || h->next_objref > INT_MAX)
		return -ENOSPC;
	obj = obj_new(h, ptr, (int)h->next_objref, ops, CKPT_MODE_CHECKPOINT);
	if (!obj)
		return -ENOMEM;
	h->next_objref++;
	obj->users = 1;
	*first = true;
	return obj->objref;
}

/**
 * ckpt_obj_insert - index @ptr by the objref the image gave it
 * @h: the hash (restart side)
 * @ptr: the kernel object; the hash grabs a reference
 * @objref: its objref, > 0 and not yet used
 * @ops: its type's operations
 *
 * Return: 0, -EINVAL for objref <= 0, -EEXIST for a used objref, -EBADFD
 * when @h is a checkpoint hash or cleared, -ENOSPC when full, or -ENOMEM.
 */
int ckpt_obj_insert(struct ckpt_obj_hash *h, void *ptr, int objref,
		    const struct ckpt_obj_ops *ops)
{
	int ret;

	if (objref <= 0)
		return -EINVAL;
	ret = obj_hash_check(h, CKPT_MODE_RESTART);
	if (ret)
		return ret;
	if (obj_find_by_objref(h, objref))
		return -EEXIST;
	if (h->nr_objs >= h->max_objs)
		return -ENOSPC;
	if (!obj_new(h, ptr, objref, ops, CKPT_MODE_RESTART))
		return -ENOMEM;
	if (objref >= h->next_objref)
		h->next_objref = (s64)objref + 1;
	return 0;
}

/**
 * ckpt_obj_find - the entry of @objref, checked against @type
 * @h: the hash
 * @objref: the objref
 * @type: the type the caller expects, CKPT_OBJ_NONE for any
 *
 * Return: the entry (its hash reference may have been dropped), or
 * ERR_PTR(-EINVAL) for objref <= 0, -ENOENT when absent, -ENOMSG for an
 * object of another type, -EBADFD when @h is cleared.
 */
struct ckpt_obj *ckpt_obj_find(struct ckpt_obj_hash *h, int objref,
			       enum ckpt_obj_type type)
{
	struct ckpt_obj *obj;

	if (objref <= 0)
		return ERR_PTR(-EINVAL);
	if (!h->head || h->cleared)
		return ERR_PTR(-EBADFD);
	obj = obj_find_by_objref(h, objref);
	if (!obj)
		return ERR_PTR(-ENOENT);
	if (type != CKPT_OBJ_NONE && obj->ops->type != type)
		return ERR_PTR(-ENOMSG);
	return obj;
}

/**
 * ckpt_obj_fetch - the object of @objref, for restart
 * @h: the hash
 * @objref: the objref
 * @type: the type the caller expects
 *
 * The pointer is valid while the hash holds its reference; the caller takes
 * its own before it lets go of the context.
 *
 * Return: the object, or an ERR_PTR() as ckpt_obj_find(), or -ESTALE when
 * its hash reference was already dropped.
 */
void *ckpt_obj_fetch(struct ckpt_obj_hash *h, int objref,
		     enum ckpt_obj_type type)
{
	struct ckpt_obj *obj = ckpt_obj_find(h, objref, type);

	if (IS_ERR(obj))
		return ERR_CAST(obj);
	if (obj->flags & CKPT_OBJF_DROPPED)
		return ERR_PTR(-ESTALE);
	return obj->ptr;
}

/**
 * ckpt_obj_drop - drop the hash's reference on one object early
 * @h: the hash
 * @objref: the object
 *
 * The entry stays (objects are never removed one by one) so that its objref
 * is not reused; clear will not drop it again.  Restart hashes only: in a
 * checkpoint hash the entry would stay findable by pointer without a
 * reference, and a new object the allocator placed at the same address
 * would be "already seen" (and CONTAINED would ask freed memory its users).
 *
 * Return: 0, -ESTALE when already dropped, -EBADFD for a checkpoint hash,
 * or an error of ckpt_obj_find().
 */
int ckpt_obj_drop(struct ckpt_obj_hash *h, int objref)
{
	struct ckpt_obj *obj;

	if (objref <= 0)
		return -EINVAL;
	if (!h->head || h->cleared || h->mode == CKPT_MODE_CHECKPOINT)
		return -EBADFD;
	obj = obj_find_by_objref(h, objref);
	if (!obj)
		return -ENOENT;
	if (obj->flags & CKPT_OBJF_DROPPED)
		return -ESTALE;
	obj->flags |= CKPT_OBJF_DROPPED;
	obj->ops->ref_drop(obj->ptr);
	return 0;
}

/**
 * ckpt_obj_unadd - undo the add of the newest entry (a failed operation)
 * @h: the hash
 * @objref: the entry just added by lookup_add or insert
 * @next_objref: h->next_objref as it was before that add
 *
 * For a caller whose operation failed after the add (its result could not
 * be written back): the entry goes, its reference is dropped and its objref
 * can be given again, so a retry sees the object as new.  Only the newest
 * entry of a checkpoint hash may be undone (objrefs stay dense).  A hash
 * back to empty has no mode again, as before its first add.
 */
void ckpt_obj_unadd(struct ckpt_obj_hash *h, int objref, s64 next_objref)
{
	struct ckpt_obj *obj = obj_find_by_objref(h, objref);

	if (!obj)
		return;
	hlist_del(&obj->hash);
	if (h->mode == CKPT_MODE_CHECKPOINT)
		h->by_ref[objref - 1] = NULL;
	if (!(obj->flags & CKPT_OBJF_DROPPED))
		obj->ops->ref_drop(obj->ptr);
	kfree(obj);
	atomic_long_dec(&ckpt_objs_live);
	h->nr_objs--;
	h->next_objref = next_objref;
	if (!h->nr_objs && !h->nr_free && next_objref == 1)
		h->mode = CKPT_MODE_NONE;
}

/**
 * ckpt_obj_unmeet - undo one lookup_add that found an existing entry
 * @h: the hash
 * @objref: its objref
 */
void ckpt_obj_unmeet(struct ckpt_obj_hash *h, int objref)
{
	struct ckpt_obj *obj = obj_find_by_objref(h, objref);

	if (obj && obj->users)
		obj->users--;
}

/**
 * ckpt_obj_contained - find objects referenced from outside the checkpoint
 * @h: the checkpoint hash, every task collected
 * @leak: called for each object whose type counts more references than
 *        lookup_add met; a non-zero return stops the walk with that value
 * @arg: passed to @leak
 *
 * linux-cr's ckpt_obj_contained(): an object the tree holds N times was met
 * N times, so any surplus is a holder outside the tree.  Types without
 * ref_users are not checked.
 *
 * Return: the number of leaks (0 for an empty hash), an error of @leak, or
 * -EBADFD for a restart hash or one cleared.
 */
long ckpt_obj_contained(struct ckpt_obj_hash *h, ckpt_obj_visit_t leak,
			void *arg)
{
	struct ckpt_obj *obj;
	unsigned long i;
	long refs, nr = 0;
	int ret;

	if (!h->head || h->cleared || h->mode == CKPT_MODE_RESTART)
		return -EBADFD;
	/* an empty hash (a tree without fds) has nothing outside it */
	for (i = 0; h->mode && i < (1UL << h->bits); i++) {
		hlist_for_each_entry(obj, &h->head[i], hash) {
			if (!obj->ops->ref_users)
				continue;
			/* fewer is not a leak: fd tables shared (CLONE_FILES)
			 * between tasks are met once per task */
			refs = obj->ops->ref_users(obj->ptr);
			if (refs <= (long)obj->users)
				continue;
			ret = leak(arg, obj, refs);
			if (ret)
				return ret;
			nr++;
		}
		cond_resched();
	}
	return nr;
}

/**
 * ckpt_obj_hash_clear - drop every reference, keep the entries for later
 * @h: the hash
 *
 * Each entry leaves its bucket for the free list through the same hlist
 * node; nothing is kfree'd, so this costs one ref_drop per object.
 */
void ckpt_obj_hash_clear(struct ckpt_obj_hash *h)
{
	struct hlist_node *t;
	struct ckpt_obj *obj;
	unsigned long i;

	if (!h->head || h->cleared)
		return;
	for (i = 0; i < (1UL << h->bits); i++) {
		hlist_for_each_entry_safe(obj, t, &h->head[i], hash) {
			if (!(obj->flags & CKPT_OBJF_DROPPED))
				obj->ops->ref_drop(obj->ptr);
			hlist_del_init(&obj->hash);
			hlist_add_head(&obj->hash, &h->free);
			h->nr_objs--;
			h->nr_free++;
		}
		cond_resched();
	}
	h->cleared = true;
}

/**
 * ckpt_obj_hash_free - clear if not yet cleared, then kfree everything
 * @h: the hash; safe to call twice
 */
void ckpt_obj_hash_free(struct ckpt_obj_hash *h)
{
	struct hlist_node *t;
	struct ckpt_obj *obj;

	if (!h->head)
		return;
	ckpt_obj_hash_clear(h);
	hlist_for_each_entry_safe(obj, t, &h->free, hash) {
		hlist_del(&obj->hash);
		kfree(obj);
		h->nr_free--;
		atomic_long_dec(&ckpt_objs_live);
		if (!(h->nr_free & 1023))
			cond_resched();
	}
	kvfree(h->head);
	h->head = NULL;
	kvfree(h->by_ref);
	h->by_ref = NULL;
	h->by_ref_size = 0;
	h->freed = true;
}

/**
 * ckpt_obj_max_chain - the longest bucket chain, for statistics
 * @h: the hash
 */
unsigned int ckpt_obj_max_chain(const struct ckpt_obj_hash *h)
{
	unsigned int max = 0, n;
	struct ckpt_obj *obj;
	unsigned long i;

	if (!h->head)
		return 0;
	for (i = 0; i < (1UL << h->bits); i++) {
		n = 0;
		hlist_for_each_entry(obj, &h->head[i], hash)
			n++;
		if (n > max)
			max = n;
		if (!(i & 1023))
			cond_resched();
	}
	return max;
}
