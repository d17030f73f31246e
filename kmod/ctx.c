// SPDX-License-Identifier: GPL-2.0
/*
 * ctx.c - /dev/ckpt: one context per open(), its ioctls and its error log.
 *
 * Every ioctl takes one struct from ckpt.h, copied in whole, validated here,
 * and run under the context's mutex.  Every failure leaves an entry in the
 * context's error log (errno, objref, function, message), in the spirit of
 * linux-cr's ckpt_write_err() (seed 003), so userspace can say what failed.
 */
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/fs.h>
#include <linux/limits.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include "ckpt_ctx.h"

atomic_long_t ckpt_contexts_live = ATOMIC_LONG_INIT(0);

/*
 * The objhash core and the walk speak a few private errnos (ckpt_core.h:
 * ESTALE, ENOMSG, EBADFD; a short struct is EPROTO); userspace sees each
 * case under its standard errno, the error log saying which it was.
 */
static int ckpt_uerrno(int err)
{
	switch (err) {
	case -ESTALE:	/* the hash's reference was dropped: no live object */
		return -ENOENT;
	case -ENOMSG:	/* an object of another type */
	case -EBADFD:	/* the context's state (mode, released) */
	case -EPROTO:	/* shorter than the struct's first version */
		return -EINVAL;
	}
	return err;
}

static void err_logv(struct ckpt_ctx *ctx, int err, int objref,
		     const char *func, const char *fmt, va_list args)
{
	struct ckpt_err_entry *e = &ctx->errs[ctx->err_seq % CKPT_ERR_LOG_MAX];

	memset(e, 0, sizeof(*e));
	e->seq = ++ctx->err_seq;
	e->err = err;
	e->objref = objref;
	strscpy(e->func, func, sizeof(e->func));
	vsnprintf(e->msg, sizeof(e->msg), fmt, args);
}

/**
 * ckpt_err - append an entry to the context's error log
 * @ctx: the context
 * @err: negative errno, logged as userspace will see it (ckpt_uerrno())
 * @objref: the object concerned, or 0
 * @func: where the error was found
 * @fmt: printf format of the message; never %p: no kernel address leaves
 */
void ckpt_err(struct ckpt_ctx *ctx, int err, int objref, const char *func,
	      const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	err_logv(ctx, ckpt_uerrno(err), objref, func, fmt, args);
	va_end(args);
}

/* a deferred FAIL's errno is the caller's own: logged as given */
static __printf(5, 6)
void ckpt_err_raw(struct ckpt_ctx *ctx, int err, int objref, const char *func,
		  const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	err_logv(ctx, err, objref, func, fmt, args);
	va_end(args);
}

static const struct ckpt_obj_ops *obj_ops(struct ckpt_ctx *ctx, u32 type,
					  const char *func)
{
	if (type > CKPT_OBJ_NONE && type < CKPT_OBJ_MAX)
		return ckpt_obj_ops_table[type];
	ckpt_err(ctx, -EINVAL, 0, func, "unknown object type %u", type);
	return NULL;
}

/* hash operations end when the restarted tasks are released */
static int check_live(struct ckpt_ctx *ctx, int objref, const char *func)
{
	if (!ctx->released)
		return 0;
	ckpt_err(ctx, -EBADFD, objref, func, "context already released");
	return -EBADFD;
}

/* ---- objects ------------------------------------------------------------ */

/* type, flags and state of one object operation; NULL after logging why */
static const struct ckpt_obj_ops *obj_arg_check(struct ckpt_ctx *ctx,
						const struct ckpt_obj_arg *a,
						u32 flags_allowed,
						const char *func)
{
	const struct ckpt_obj_ops *ops = obj_ops(ctx, a->type, func);

	if (!ops)
		return ERR_PTR(-EINVAL);
	if (a->flags & ~flags_allowed) {
		ckpt_err(ctx, -EINVAL, a->objref, func, "flags %#x", a->flags);
		return ERR_PTR(-EINVAL);
	}
	if (check_live(ctx, a->objref, func))
		return ERR_PTR(-EBADFD);
	return ops;
}

static void handle_err(struct ckpt_ctx *ctx, int err, int objref,
		       const char *func, const struct ckpt_obj_arg *a)
{
	if (a->type == CKPT_OBJ_TEST)
		ckpt_err(ctx, err, objref, func, "no test object %d",
			 a->handle);
	else
		ckpt_err(ctx, err, objref, func,
			 "fd %d is not open, or is a /dev/ckpt context",
			 a->handle);
}

/* input fields the operation does not use must be zero (ckpt.h) */
static int obj_unused_check(struct ckpt_ctx *ctx, const struct ckpt_obj_arg *a,
			    bool objref, bool handle, const char *func)
{
	if ((objref && a->objref) || (handle && a->handle) ||
	    memchr_inv(&a->file, 0, sizeof(a->file))) {
		ckpt_err(ctx, -EINVAL, 0, func, "non-zero unused input field");
		return -EINVAL;
	}
	return 0;
}

static unsigned long ckpt_copy_to_user(void __user *to, const void *from,
				       unsigned long n)
{
	return ckpt_fault() ? n : copy_to_user(to, from, n);
}

/**
 * ckpt_copy_elem - write one array element as the caller sized it
 * @to: the caller's element
 * @usize: its size (at least the element's first version, checked)
 * @from: the module's element
 * @ksize: its size
 *
 * A shorter element gets the fields it has, a longer one a zero tail.
 * Return: 0 or -EFAULT.
 */
int ckpt_copy_elem(void __user *to, size_t usize, const void *from,
		   size_t ksize)
{
	if (ckpt_copy_to_user(to, from, min(usize, ksize)))
		return -EFAULT;
	if (usize > ksize &&
	    (ckpt_fault() || clear_user(to + ksize, usize - ksize)))
		return -EFAULT;
	return 0;
}

/**
 * ckpt_elem_size - the element size a caller gave for an array
 * @ctx: the context (logs a refusal)
 * @asked: the struct's *_size field; 0 means @ver0
 * @ver0: the size of the element's first version
 * @func: who asks
 * @size: set to the size to use
 *
 * Return: 0, or -EINVAL below @ver0 or above CKPT_ITEM_SIZE_MAX.
 */
int ckpt_elem_size(struct ckpt_ctx *ctx, u32 asked, size_t ver0,
		   const char *func, u32 *size)
{
	*size = asked ?: ver0;
	if (*size >= ver0 && *size <= CKPT_ITEM_SIZE_MAX)
		return 0;
	ckpt_err(ctx, -EINVAL, 0, func, "element size %u not in %zu..%u",
		 asked, ver0, CKPT_ITEM_SIZE_MAX);
	return -EINVAL;
}

/*
 * Each object operation writes its own result to @uout (@usize bytes, the
 * caller's struct; a longer one's tail was checked zero on the way in), so
 * that it can undo itself when that fails: a failed call changes nothing.
 */
static int obj_lookup_add(struct ckpt_ctx *ctx, struct ckpt_obj_arg *a,
			  void __user *uout, size_t usize)
{
	const struct ckpt_obj_ops *ops = obj_arg_check(ctx, a, 0, __func__);
	struct ckpt_obj_hash *h = &ctx->objhash;
	bool first, inode_first = false;
	s64 next = h->next_objref, next_inode = 0;
	void *ptr;
	int ret;

	if (IS_ERR(ops))
		return PTR_ERR(ops);
	ret = obj_unused_check(ctx, a, true, false, __func__);
	if (ret)
		return ret;
	ret = ckpt_handle_get(ctx, a->type, a->handle, &ptr);
	if (ret) {
		handle_err(ctx, ret, 0, __func__, a);
		return ret;
	}
	ret = ckpt_obj_lookup_add(h, ptr, ops, &first);
	if (ret < 0) {
		ckpt_err(ctx, ret, 0, "ckpt_obj_lookup_add", "%s handle %d%s",
			 ops->name, a->handle,
			 ret == -ENOSPC ? ": hash full" : "");
		goto out;
	}
	a->objref = ret;
	a->flags = first ? CKPT_OBJ_FIRST : 0;
	if (first && a->type == CKPT_OBJ_FILE) {
		next_inode = h->next_objref;
		ret = ckpt_file_info_fill(h, ptr, &a->file, &inode_first);
		if (ret) {
			ckpt_err(ctx, ret, a->objref, "ckpt_file_info_fill",
				 "inode of fd %d%s", a->handle,
				 ret == -ENOSPC ? ": hash full" : "");
			goto undo_file;
		}
	}
	ret = 0;
	if (ckpt_copy_to_user(uout, a, min(usize, sizeof(*a)))) {
		ret = -EFAULT;
		ckpt_err(ctx, ret, a->objref, __func__, "result unwritable");
		goto undo_inode;
	}
	goto out;

undo_inode:
	if (first && a->type == CKPT_OBJ_FILE) {
		if (inode_first)
			ckpt_obj_unadd(h, a->file.inode_objref, next_inode);
		else
			ckpt_obj_unmeet(h, a->file.inode_objref);
	}
undo_file:
	if (first)
		ckpt_obj_unadd(h, a->objref, next);
	else
		ckpt_obj_unmeet(h, a->objref);
out:
	ckpt_handle_put(a->type, ptr);
	return ret;
}

/* insert writes nothing back: its struct holds inputs only */
static int obj_insert(struct ckpt_ctx *ctx, struct ckpt_obj_arg *a,
		      void __user *uout, size_t usize)
{
	const struct ckpt_obj_ops *ops = obj_arg_check(ctx, a, 0, __func__);
	void *ptr;
	int ret;

	if (IS_ERR(ops))
		return PTR_ERR(ops);
	if (a->objref <= 0) {
		ckpt_err(ctx, -EINVAL, a->objref, __func__,
			 "objref %d must be > 0", a->objref);
		return -EINVAL;
	}
	ret = obj_unused_check(ctx, a, false, false, __func__);
	if (ret)
		return ret;
	ret = ckpt_handle_get(ctx, a->type, a->handle, &ptr);
	if (ret) {
		handle_err(ctx, ret, a->objref, __func__, a);
		return ret;
	}
	ret = ckpt_obj_insert(&ctx->objhash, ptr, a->objref, ops);
	if (ret)
		ckpt_err(ctx, ret, a->objref, "ckpt_obj_insert", "%s%s",
			 ops->name, ret == -EEXIST ? ": objref already used" :
			 ret == -EBADFD ? ": not a restart context" :
			 ret == -ENOSPC ? ": hash full" : "");
	ckpt_handle_put(a->type, ptr);
	return ret;
}

/*
 * A single FETCH (@uout NULL) writes nothing: the handle is the ioctl's
 * value, as pidfd_getfd() returns its fd.  A batch item gets its handle
 * written to @uout, before the fd is installed (see ckpt_receive_fd()).
 * Return: the handle (>= 0), or a negative errno.
 */
static int obj_fetch(struct ckpt_ctx *ctx, struct ckpt_obj_arg *a,
		     void __user *uout, size_t usize)
{
	const struct ckpt_obj_ops *ops = obj_arg_check(ctx, a, CKPT_OBJ_CLOEXEC,
						       __func__);
	struct ckpt_obj_arg __user *u = uout;
	int ret, installed;
	void *ptr;

	if (IS_ERR(ops))
		return PTR_ERR(ops);
	ret = obj_unused_check(ctx, a, false, true, __func__);
	if (ret)
		return ret;
	ptr = ckpt_obj_fetch(&ctx->objhash, a->objref, a->type);
	if (IS_ERR(ptr)) {
		ret = PTR_ERR(ptr);
		ckpt_err(ctx, ret, a->objref, "ckpt_obj_fetch", "%s: %s",
			 ops->name, ret == -ENOENT ? "no such objref" :
			 ret == -ENOMSG ? "object of another type" :
			 ret == -ESTALE ? "hash reference dropped" :
			 ret == -EBADFD ? "hash already cleared" :
			 "invalid objref");
		return ret;
	}
	ret = ckpt_handle_install(a->type, ptr, a->flags, u ? &u->handle : NULL,
				  &installed);
	if (ret < 0 && installed >= 0)
		ckpt_err(ctx, ret, a->objref, __func__,
			 "%s: handle unwritable, fd %d stays installed",
			 ops->name, installed);
	else if (ret < 0)
		ckpt_err(ctx, ret, a->objref, __func__, "%s: %s", ops->name,
			 ret == -EINVAL ? "no handle for this type" :
			 ret == -EFAULT ? "result unwritable" :
			 "cannot install");
	return ret;
}

typedef int (*obj_op_t)(struct ckpt_ctx *ctx, struct ckpt_obj_arg *a,
			void __user *uout, size_t usize);

static int ckpt_copy_struct_from_user(void *dst, size_t ksize,
				      const void __user *src, size_t usize)
{
	if (ckpt_fault())
		return -EFAULT;
	return copy_struct_from_user(dst, ksize, src, usize);
}

/* items run in order; the first failure stops the batch, 'done' says where */
static int obj_batch_run(struct ckpt_ctx *ctx, struct ckpt_batch *b,
			 obj_op_t op, const char *func)
{
	u8 __user *uitem = u64_to_user_ptr(b->items);
	struct ckpt_obj_arg a;
	size_t usize = b->item_size;
	int ret = 0;

	if (b->__pad || b->done) {
		ckpt_err(ctx, -EINVAL, 0, func, "non-zero %s",
			 b->__pad ? "padding" : "unused input field");
		return -EINVAL;
	}
	if (b->count > CKPT_BATCH_MAX) {
		ckpt_err(ctx, -EMSGSIZE, 0, func, "count %u > %u", b->count,
			 CKPT_BATCH_MAX);
		return -EMSGSIZE;
	}
	/* a future item may grow, not by pages: bounds the zero-tail checks */
	if (usize < CKPT_OBJ_ARG_SIZE_VER0 || usize > CKPT_ITEM_SIZE_MAX) {
		ckpt_err(ctx, -EINVAL, 0, func, "item_size %zu not in %u..%u",
			 usize, CKPT_OBJ_ARG_SIZE_VER0, CKPT_ITEM_SIZE_MAX);
		return -EINVAL;
	}
	for (; b->done < b->count; b->done++, uitem += usize) {
		ret = ckpt_copy_struct_from_user(&a, sizeof(a), uitem, usize);
		if (ret) {
			ckpt_err(ctx, ret, 0, func, "item %u %s", b->done,
				 ret == -E2BIG ? "has a non-zero tail" :
				 "unreadable");
			break;
		}
		ret = op(ctx, &a, uitem, usize);
		if (ret < 0)
			break;
		ret = 0;	/* a fetch returns its handle */
		cond_resched();
	}
	return ret;
}

/*
 * A batch writes 'done' back whatever happens.  The header is written once
 * before any item runs, so that an unwritable one fails with nothing done;
 * the last write can then fail only if the caller unmapped it meanwhile.
 */
static int obj_batch(struct ckpt_ctx *ctx, struct ckpt_batch *b,
		     void __user *uarg, size_t usize, obj_op_t op,
		     const char *func)
{
	struct ckpt_batch __user *ub = uarg;
	int ret;

	if (ckpt_copy_to_user(uarg, b, min(usize, sizeof(*b)))) {
		ckpt_err(ctx, -EFAULT, 0, func, "batch header unwritable");
		return -EFAULT;
	}
	ret = obj_batch_run(ctx, b, op, func);
	if (put_user(b->done, &ub->done) && !ret) {
		ret = -EFAULT;
		ckpt_err(ctx, ret, 0, func, "batch header unwritable");
	}
	return ret;
}

static int ioc_lookup_add(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
			  size_t usize)
{
	return obj_lookup_add(ctx, arg, uarg, usize);
}

static int ioc_insert(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
		      size_t usize)
{
	return obj_insert(ctx, arg, uarg, usize);
}

/* the new fd (or test id) is the ioctl's value; the struct is input only */
static int ioc_fetch(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
		     size_t usize)
{
	return obj_fetch(ctx, arg, NULL, usize);
}

static int ioc_lookup_add_batch(struct ckpt_ctx *ctx, void *arg,
				void __user *uarg, size_t usize)
{
	return obj_batch(ctx, arg, uarg, usize, obj_lookup_add, __func__);
}

static int ioc_insert_batch(struct ckpt_ctx *ctx, void *arg,
			    void __user *uarg, size_t usize)
{
	return obj_batch(ctx, arg, uarg, usize, obj_insert, __func__);
}

static int ioc_fetch_batch(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
			   size_t usize)
{
	return obj_batch(ctx, arg, uarg, usize, obj_fetch, __func__);
}

/*
 * The header is written once before the walk, saying nr 0, so that an
 * unwritable one fails with nothing done, and nr and next_fd again after
 * it whatever the result, to say how far the walk went (as a batch writes
 * 'done': this write fails only if the caller unmapped it meanwhile).
 */
static int ioc_task_fds(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
			size_t usize)
{
	struct ckpt_task_fds *a = arg, probe = *a;
	struct ckpt_task_fds __user *u = uarg;
	int ret;

	probe.nr = 0;
	if (ckpt_copy_to_user(uarg, &probe, min(usize, sizeof(probe)))) {
		ckpt_err(ctx, -EFAULT, 0, __func__, "argument unwritable");
		return -EFAULT;
	}
	ret = ckpt_task_fds(ctx, a);
	if ((put_user(a->nr, &u->nr) || put_user(a->next_fd, &u->next_fd)) &&
	    !ret) {
		ret = -EFAULT;
		ckpt_err(ctx, ret, 0, __func__, "argument unwritable");
	}
	return ret;
}

static int ioc_task_creds(struct ckpt_ctx *ctx, void *arg,
			  void __user *uarg, size_t usize)
{
	return ckpt_task_creds(ctx, arg);
}

/* ---- setup, release, stats ---------------------------------------------- */

/* a limit asked for: 0 means the default, above the ceiling is EINVAL */
static int setup_limit(struct ckpt_ctx *ctx, const char *name, u32 asked,
		       u32 dflt, u32 ceiling, u32 *limit)
{
	*limit = asked ?: min(dflt, ceiling);
	if (*limit <= ceiling)
		return 0;
	ckpt_err(ctx, -EINVAL, 0, "ioc_setup",
		 "%s %u above the module's ceiling %u", name, asked, ceiling);
	return -EINVAL;
}

/* everything is checked, and the one allocation made, before any change */
static int ioc_setup(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
		     size_t usize)
{
	struct ckpt_setup *s = arg;
	unsigned int bits = s->hash_bits ?: CKPT_HASH_BITS_DEFAULT;
	u32 max_objs, max_defers, max_tests;
	int ret;

	if (s->policy >= CKPT_POLICY_MAX || bits < CKPT_HASH_BITS_MIN ||
	    bits > CKPT_HASH_BITS_MAX || s->flags & ~CKPT_SETUP_AUTOGROW ||
	    s->__pad || s->__pad2) {
		ckpt_err(ctx, -EINVAL, 0, __func__,
			 "policy %u hash_bits %u flags %#x", s->policy,
			 s->hash_bits, s->flags);
		return -EINVAL;
	}
	ret = setup_limit(ctx, "max_objs", s->max_objs, CKPT_MAX_OBJS_DEFAULT,
			  READ_ONCE(ckpt_max_objs), &max_objs) ?:
	      setup_limit(ctx, "max_defers", s->max_defers,
			  CKPT_MAX_DEFERS_DEFAULT, READ_ONCE(ckpt_max_defers),
			  &max_defers) ?:
	      setup_limit(ctx, "max_tests", s->max_tests,
			  CKPT_MAX_TESTS_DEFAULT, READ_ONCE(ckpt_max_tests),
			  &max_tests);
	if (ret)
		return ret;
	if (ctx->objhash.mode != CKPT_MODE_NONE || ctx->released) {
		ckpt_err(ctx, -EBUSY, 0, __func__, "context already in use");
		return -EBUSY;
	}
	if (bits != ctx->objhash.bits) {
		ret = ckpt_obj_hash_resize(&ctx->objhash, bits);
		if (ret) {
			ckpt_err(ctx, ret, 0, __func__, "%u buckets",
				 1U << bits);
			return ret;
		}
	}
	ctx->objhash.autogrow = s->flags & CKPT_SETUP_AUTOGROW;
	ctx->objhash.max_objs = max_objs;
	ctx->deferqueue.max = max_defers;
	ctx->max_tests = max_tests;
	ctx->policy = s->policy;
	return 0;
}

/*
 * The moment restarted tasks are let go.  Whatever the hash still holds then
 * is what userspace can observe (seed 000): clear-early drops it now and
 * leaves the kfree to teardown, free-upfront pays for both now, clear-at-end
 * keeps everything until the context is closed.  Deferred work not run by
 * now is destroyed unrun (ckpt.h): a queued DROP's own reference must not
 * outlive what the policy promises.
 */
static int ioc_release(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
		       size_t usize)
{
	int ret = check_live(ctx, 0, __func__);

	if (ret)
		return ret;
	ckpt_deferqueue_destroy(&ctx->deferqueue);
	switch (ctx->policy) {
	case CKPT_POLICY_CLEAR_EARLY:
		ckpt_obj_hash_clear(&ctx->objhash);
		break;
	case CKPT_POLICY_FREE_UPFRONT:
		ckpt_obj_hash_free(&ctx->objhash);
		break;
	default:	/* CKPT_POLICY_CLEAR_AT_END */
		break;
	}
	ctx->released = true;
	return 0;
}

static int ioc_stats(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
		     size_t usize)
{
	struct ckpt_obj_hash *h = &ctx->objhash;
	struct ckpt_stats *st = arg;

	st->policy = ctx->policy;
	st->state = (h->mode == CKPT_MODE_CHECKPOINT ? CKPT_STATE_CHECKPOINT :
		     0) |
		    (h->mode == CKPT_MODE_RESTART ? CKPT_STATE_RESTART : 0) |
		    (ctx->released ? CKPT_STATE_RELEASED : 0) |
		    (h->cleared ? CKPT_STATE_CLEARED : 0) |
		    (h->freed ? CKPT_STATE_FREED : 0);
	st->hash_bits = h->bits;
	st->nr_buckets = h->head ? 1U << h->bits : 0;
	st->nr_objs = h->nr_objs;
	st->nr_free = h->nr_free;
	st->max_chain = ckpt_obj_max_chain(h);
	st->nr_grows = h->nr_grows;
	st->next_objref = min_t(s64, h->next_objref, INT_MAX);
	st->defer_pending = ctx->deferqueue.count;
	st->lookups = h->lookups;
	st->probes = h->probes;
	/* other users' contexts are none of the caller's business */
	if (capable(CAP_SYS_ADMIN)) {
		st->mod_contexts = atomic_long_read(&ckpt_contexts_live);
		st->mod_objs = atomic_long_read(&ckpt_objs_live);
		st->mod_defers = atomic_long_read(&ckpt_defers_live);
		ckpt_test_counts(st);
	}
	st->max_objs = h->max_objs;
	st->max_defers = ctx->deferqueue.max;
	st->max_tests = ctx->max_tests;
	st->nr_tests = ctx->nr_tests;
	return 0;
}

static int ioc_version(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
		       size_t usize)
{
	struct ckpt_version *v = arg;

	v->abi_version = CKPT_ABI_VERSION;
	v->features = CKPT_FEATURE_TASK_FDS | CKPT_FEATURE_FDS_DETAIL |
		      CKPT_FEATURE_PTRACE_ACCESS | CKPT_FEATURE_TASK_CREDS |
		      (READ_ONCE(ckpt_debug) ? CKPT_FEATURE_DEBUG : 0);
	return 0;
}

static int ioc_errors(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
		      size_t usize)
{
	struct ckpt_errors *e = arg;
	u32 cap = e->count, size;
	u8 __user *ubuf;
	u64 seq;

	if (e->last) {
		ckpt_err(ctx, -EINVAL, 0, __func__, "non-zero unused field");
		return -EINVAL;
	}
	if (ckpt_elem_size(ctx, e->entry_size, CKPT_ERR_ENTRY_SIZE_VER0,
			   __func__, &size))
		return -EINVAL;
	if (cap > CKPT_ERR_LOG_MAX) {
		ckpt_err(ctx, -EMSGSIZE, 0, __func__, "count %u > %u", cap,
			 CKPT_ERR_LOG_MAX);
		return -EMSGSIZE;
	}
	ubuf = u64_to_user_ptr(e->buf);
	/* the oldest entry still kept */
	seq = ctx->err_seq > CKPT_ERR_LOG_MAX ?
		ctx->err_seq - CKPT_ERR_LOG_MAX + 1 : 1;
	if (seq <= e->since)
		seq = (u64)e->since + 1;	/* since may be U32_MAX */
	e->count = 0;
	for (; seq <= ctx->err_seq && e->count < cap; seq++, e->count++)
		if (ckpt_copy_elem(ubuf + (size_t)e->count * size, size,
				   &ctx->errs[(seq - 1) % CKPT_ERR_LOG_MAX],
				   sizeof(struct ckpt_err_entry)))
			return -EFAULT;
	e->last = ctx->err_seq;
	return 0;
}

/* ---- deferqueue actions -------------------------------------------------- */

struct defer_data {
	struct ckpt_ctx *ctx;
	const struct ckpt_obj_ops *ops;	/* DROP: the object, own reference */
	void *ptr;
	int objref;
	int err;			/* FAIL */
	u64 tag;			/* LOG */
};

/* the tag log is allocated when the first LOG is queued: running one
 * never allocates, so it cannot fail with ENOMEM and lose its entry */
static int defer_log(void *data)
{
	struct defer_data *d = data;
	struct ckpt_ctx *ctx = d->ctx;

	if (ctx->nr_tags >= CKPT_TAGS_MAX) {
		ckpt_err(ctx, -ENOSPC, 0, __func__, "tag log full");
		return -ENOSPC;
	}
	ctx->tags[ctx->nr_tags++] = d->tag;
	return 0;
}

/* the "create, attach, then delete" case: drop the hash's reference late */
static int defer_drop(void *data)
{
	struct defer_data *d = data;
	int ret;

	ret = ckpt_uerrno(ckpt_obj_drop(&d->ctx->objhash, d->objref));
	if (ret)
		ckpt_err(d->ctx, ret, d->objref, __func__,
			 "%s: hash reference not dropped", d->ops->name);
	d->ops->ref_drop(d->ptr);
	return ret;
}

static void defer_drop_dtor(void *data)
{
	struct defer_data *d = data;

	d->ops->ref_drop(d->ptr);
}

static int defer_fail(void *data)
{
	struct defer_data *d = data;

	ckpt_err_raw(d->ctx, -d->err, 0, __func__, "deferred failure");
	return -d->err;
}

static int defer_queue(struct ckpt_ctx *ctx, ckpt_defer_fn_t fn,
		       ckpt_defer_dtor_t dtor, struct defer_data *d)
{
	int ret = ckpt_deferqueue_add(&ctx->deferqueue, fn, dtor, d,
				      sizeof(*d));

	if (ret)
		ckpt_err(ctx, ret, d->objref, "ckpt_deferqueue_add", "%s",
			 ret == -ENOSPC ? "deferqueue full" : "no memory");
	return ret;
}

static int ioc_defer_add(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
			 size_t usize)
{
	struct defer_data d = { .ctx = ctx };
	struct ckpt_defer *a = arg;
	struct ckpt_obj *obj;
	int ret;

	if (a->__pad) {
		ckpt_err(ctx, -EINVAL, 0, __func__, "non-zero padding");
		return -EINVAL;
	}
	switch (a->action) {
	case CKPT_DEFER_LOG:
		if (a->objref || a->arg)
			break;
		if (!ctx->tags) {
			ctx->tags = ckpt_fault() ? NULL :
				kvmalloc_array(CKPT_TAGS_MAX,
					       sizeof(*ctx->tags),
					       GFP_KERNEL_ACCOUNT);
			if (!ctx->tags) {
				ckpt_err(ctx, -ENOMEM, 0, __func__,
					 "tag log");
				return -ENOMEM;
			}
		}
		d.tag = a->tag;
		return defer_queue(ctx, defer_log, NULL, &d);
	case CKPT_DEFER_FAIL:
		/* above: ERESTARTSYS and friends, which must not leave */
		if (a->arg <= 0 || a->arg > CKPT_ERRNO_MAX || a->objref ||
		    a->tag)
			break;
		d.err = a->arg;
		return defer_queue(ctx, defer_fail, NULL, &d);
	case CKPT_DEFER_DROP:
		if (a->arg || a->tag)
			break;
		ret = check_live(ctx, a->objref, __func__);
		if (ret)
			return ret;
		if (ctx->objhash.mode == CKPT_MODE_CHECKPOINT) {
			ckpt_err(ctx, -EBADFD, a->objref, __func__,
				 "deferred drop on a checkpoint context");
			return -EBADFD;
		}
		obj = ckpt_obj_find(&ctx->objhash, a->objref, CKPT_OBJ_NONE);
		ret = IS_ERR(obj) ? PTR_ERR(obj) :
		      obj->flags & CKPT_OBJF_DROPPED ? -ESTALE : 0;
		if (ret) {
			ckpt_err(ctx, ret, a->objref, __func__,
				 "no object to drop");
			return ret;
		}
		d.objref = a->objref;
		d.ops = obj->ops;
		d.ptr = obj->ptr;
		d.ops->ref_grab(d.ptr);
		ret = defer_queue(ctx, defer_drop, defer_drop_dtor, &d);
		if (ret)
			d.ops->ref_drop(d.ptr);
		return ret;
	}
	/* CKPT_DEFER_EPOLL is reserved until restart adds epoll items */
	ckpt_err(ctx, -EINVAL, a->objref, __func__,
		 "action %u arg %d, or a non-zero unused field", a->action,
		 a->arg);
	return -EINVAL;
}

static int ioc_defer_run(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
			 size_t usize)
{
	return ckpt_deferqueue_run(&ctx->deferqueue);
}

static int ioc_tags(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
		    size_t usize)
{
	struct ckpt_tags *t = arg;

	if (t->total) {
		ckpt_err(ctx, -EINVAL, 0, __func__, "non-zero unused field");
		return -EINVAL;
	}
	if (t->count > CKPT_TAGS_MAX) {
		ckpt_err(ctx, -EMSGSIZE, 0, __func__, "count %u > %u",
			 t->count, CKPT_TAGS_MAX);
		return -EMSGSIZE;
	}
	if (ctx->nr_tags && t->count &&
	    ckpt_copy_to_user(u64_to_user_ptr(t->buf), ctx->tags,
			      min(t->count, ctx->nr_tags) * sizeof(*ctx->tags)))
		return -EFAULT;
	t->total = ctx->nr_tags;
	return 0;
}

/* ---- leak detection ---------------------------------------------------- */

struct contained_walk {
	struct ckpt_ctx *ctx;
	u8 __user *buf;
	u32 size;		/* the caller's sizeof(struct ckpt_leak) */
	u32 count;		/* capacity */
	u32 copied;
};

static int contained_leak(void *arg, struct ckpt_obj *obj, long refs)
{
	struct contained_walk *w = arg;
	struct ckpt_leak l = {
		.objref = obj->objref,
		.type = obj->ops->type,
		.users = obj->users,
		.refs = refs,
	};

	ckpt_err(w->ctx, -EBUSY, obj->objref, "ckpt_obj_contained",
		 "usage leak: %s met %lu times, %ld references",
		 obj->ops->name, obj->users, refs);
	if (w->copied >= w->count)
		return 0;
	if (ckpt_copy_elem(w->buf + (size_t)w->copied * w->size, w->size, &l,
			   sizeof(l))) {
		ckpt_err(w->ctx, -EFAULT, obj->objref, "ioc_contained",
			 "leak %u unwritable", w->copied);
		return -EFAULT;
	}
	w->copied++;
	return 0;
}

static int ioc_contained(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
			 size_t usize)
{
	struct ckpt_contained *c = arg;
	struct contained_walk w = {
		.ctx = ctx,
		.buf = u64_to_user_ptr(c->buf),
		.count = c->count,
	};
	long ret;

	if (c->total || c->__pad) {
		ckpt_err(ctx, -EINVAL, 0, __func__, "non-zero %s",
			 c->__pad ? "padding" : "unused field");
		return -EINVAL;
	}
	if (ckpt_elem_size(ctx, c->leak_size, CKPT_LEAK_SIZE_VER0, __func__,
			   &w.size))
		return -EINVAL;
	if (c->count > CKPT_BATCH_MAX) {
		ckpt_err(ctx, -EMSGSIZE, 0, __func__, "count %u > %u",
			 c->count, CKPT_BATCH_MAX);
		return -EMSGSIZE;
	}
	ret = ckpt_obj_contained(&ctx->objhash, contained_leak, &w);
	if (ret == -EBADFD)
		ckpt_err(ctx, ret, 0, __func__, "not a live checkpoint hash");
	if (ret < 0)
		return ret;
	c->count = w.copied;
	c->total = ret;
	return ret ? -EBUSY : 0;
}

/* ---- test objects ------------------------------------------------------- */

/* writes its own result: a new object whose id cannot be told is put back */
static int ioc_test_new(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
			size_t usize)
{
	struct ckpt_test_obj *t = arg;
	int id = ckpt_test_new(ctx);

	if (id < 0) {
		ckpt_err(ctx, id, 0, __func__, "%s", id == -ENOSPC ?
			 "too many test objects" : "no memory");
		return id;
	}
	t->id = id;
	t->refs = 1;
	/* an output-only struct: a longer one's tail is zeroed, not read */
	if (ckpt_copy_to_user(uarg, t, min(usize, sizeof(*t))) ||
	    (usize > sizeof(*t) &&
	     (ckpt_fault() || clear_user(uarg + sizeof(*t),
					 usize - sizeof(*t))))) {
		ckpt_test_put(ctx, id);
		ctx->next_test_id--;
		ckpt_err(ctx, -EFAULT, 0, __func__, "result unwritable");
		return -EFAULT;
	}
	return 0;
}

static int test_unused_check(struct ckpt_ctx *ctx, struct ckpt_test_obj *t,
			     const char *func)
{
	if (!t->refs && !t->grabs && !t->drops)
		return 0;
	ckpt_err(ctx, -EINVAL, 0, func, "non-zero unused input field");
	return -EINVAL;
}

static int ioc_test_put(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
			size_t usize)
{
	struct ckpt_test_obj *t = arg;
	int ret = test_unused_check(ctx, t, __func__);

	if (ret)
		return ret;
	ret = ckpt_test_put(ctx, t->id);
	if (ret)
		ckpt_err(ctx, ret, 0, __func__, "no test object %d", t->id);
	return ret;
}

static int ioc_test_stat(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
			 size_t usize)
{
	struct ckpt_test_obj *t = arg;
	int ret = test_unused_check(ctx, t, __func__);

	if (ret)
		return ret;
	ret = ckpt_test_stat(ctx, t);
	if (ret)
		ckpt_err(ctx, ret, 0, __func__, "no test object %d", t->id);
	return ret;
}

/* ---- dispatch ----------------------------------------------------------- */

struct ckpt_ioc {
	unsigned int cmd;
	const char *name;
	unsigned int ver0;	/* size of the first version of its struct */
	bool own_out;		/* the handler writes its result itself */
	bool debug;		/* exists only with the debug parameter */
	int (*fn)(struct ckpt_ctx *ctx, void *arg, void __user *uarg,
		  size_t usize);
};

#define CKPT_IOC(c, v, f, o) \
	[_IOC_NR(c)] = { .cmd = c, .name = #c, .ver0 = v, .fn = f, \
			 .own_out = o }
#define CKPT_IOC_DEBUG(c, v, f, o) \
	[_IOC_NR(c)] = { .cmd = c, .name = #c, .ver0 = v, .fn = f, \
			 .own_out = o, .debug = true }

static const struct ckpt_ioc ckpt_iocs[] = {
	CKPT_IOC(CKPT_IOC_SETUP, CKPT_SETUP_SIZE_VER0, ioc_setup, false),
	CKPT_IOC(CKPT_IOC_STATS, CKPT_STATS_SIZE_VER0, ioc_stats, false),
	CKPT_IOC(CKPT_IOC_ERRORS, CKPT_ERRORS_SIZE_VER0, ioc_errors, false),
	CKPT_IOC(CKPT_IOC_VERSION, CKPT_VERSION_SIZE_VER0, ioc_version, false),
	CKPT_IOC(CKPT_IOC_LOOKUP_ADD, CKPT_OBJ_ARG_SIZE_VER0, ioc_lookup_add,
		 true),
	CKPT_IOC(CKPT_IOC_INSERT, CKPT_OBJ_ARG_SIZE_VER0, ioc_insert, true),
	CKPT_IOC(CKPT_IOC_FETCH, CKPT_OBJ_ARG_SIZE_VER0, ioc_fetch, true),
	CKPT_IOC(CKPT_IOC_LOOKUP_ADD_BATCH, CKPT_BATCH_SIZE_VER0,
		 ioc_lookup_add_batch, true),
	CKPT_IOC(CKPT_IOC_INSERT_BATCH, CKPT_BATCH_SIZE_VER0,
		 ioc_insert_batch, true),
	CKPT_IOC(CKPT_IOC_FETCH_BATCH, CKPT_BATCH_SIZE_VER0, ioc_fetch_batch,
		 true),
	CKPT_IOC(CKPT_IOC_TASK_FDS, CKPT_TASK_FDS_SIZE_VER0, ioc_task_fds,
		 true),
	CKPT_IOC(CKPT_IOC_TASK_CREDS, CKPT_TASK_CREDS_SIZE_VER0,
		 ioc_task_creds, false),
	CKPT_IOC(CKPT_IOC_CONTAINED, CKPT_CONTAINED_SIZE_VER0, ioc_contained,
		 false),
	CKPT_IOC(CKPT_IOC_RELEASE, 0, ioc_release, false),
	CKPT_IOC(CKPT_IOC_DEFER_ADD, CKPT_DEFER_SIZE_VER0, ioc_defer_add,
		 false),
	CKPT_IOC(CKPT_IOC_DEFER_RUN, 0, ioc_defer_run, false),
	CKPT_IOC(CKPT_IOC_TAGS, CKPT_TAGS_SIZE_VER0, ioc_tags, false),
	CKPT_IOC_DEBUG(CKPT_IOC_TEST_NEW, CKPT_TEST_OBJ_SIZE_VER0,
		       ioc_test_new, true),
	CKPT_IOC_DEBUG(CKPT_IOC_TEST_PUT, CKPT_TEST_OBJ_SIZE_VER0,
		       ioc_test_put, false),
	CKPT_IOC_DEBUG(CKPT_IOC_TEST_STAT, CKPT_TEST_OBJ_SIZE_VER0,
		       ioc_test_stat, false),
};

union ckpt_ioc_arg {
	struct ckpt_setup setup;
	struct ckpt_stats stats;
	struct ckpt_errors errors;
	struct ckpt_obj_arg obj;
	struct ckpt_batch batch;
	struct ckpt_defer defer;
	struct ckpt_tags tags;
	struct ckpt_test_obj test;
	struct ckpt_contained contained;
	struct ckpt_task_fds task_fds;
	struct ckpt_task_creds task_creds;
	struct ckpt_version version;
};

/* copy the caller's struct in: EINVAL when short, E2BIG when a longer one
 * has a non-zero tail (copy_struct_from_user()), EFAULT when unreadable */
static int ioc_copy_in(struct ckpt_ctx *ctx, const struct ckpt_ioc *ioc,
		       unsigned int cmd, void *karg, void __user *uarg)
{
	size_t usize = _IOC_SIZE(cmd), ksize = _IOC_SIZE(ioc->cmd);
	int ret;

	if (usize < ioc->ver0) {
		ckpt_err(ctx, -EINVAL, 0, ioc->name,
			 "argument of %zu bytes, at least %u expected", usize,
			 ioc->ver0);
		return -EINVAL;
	}
	if (!(_IOC_DIR(cmd) & _IOC_WRITE))
		return 0;
	ret = ckpt_copy_struct_from_user(karg, ksize, uarg, usize);
	if (ret)
		ckpt_err(ctx, ret, 0, ioc->name, "argument of %zu bytes %s",
			 usize, ret == -E2BIG ? "has a non-zero tail" :
			 "unreadable");
	return ret;
}

static int ioc_copy_out(const struct ckpt_ioc *ioc, unsigned int cmd,
			const void *karg, void __user *uarg)
{
	size_t usize = _IOC_SIZE(cmd), ksize = _IOC_SIZE(ioc->cmd);

	if (ckpt_copy_to_user(uarg, karg, min(usize, ksize)))
		return -EFAULT;
	if (usize > ksize && (ckpt_fault() ||
			      clear_user(uarg + ksize, usize - ksize)))
		return -EFAULT;
	return 0;
}

/*
 * Who may use a context: its opener, or anyone with the same credentials
 * (the same uids, gids and user namespace: a fork, a thread), or anyone
 * holding CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the initial user
 * namespace, the capability open() asked for.  The rule of kcmp() and
 * pidfd_getfd(): a context fd passed on or leaked is worth nothing.
 */
static bool ckpt_capable(void)
{
	return capable(CAP_CHECKPOINT_RESTORE) || capable(CAP_SYS_ADMIN);
}

/*
 * @b may act with @a's context: the same ids, and no capability of @a's
 * missing from @b's permitted set (ptrace's rule: uid 0 that dropped its
 * capabilities is not the root that opened the context).
 */
static bool ckpt_same_cred(const struct cred *a, const struct cred *b)
{
	return a == b ||
	       (a->user_ns == b->user_ns &&
		uid_eq(a->uid, b->uid) && uid_eq(a->euid, b->euid) &&
		uid_eq(a->suid, b->suid) && uid_eq(a->fsuid, b->fsuid) &&
		gid_eq(a->gid, b->gid) && gid_eq(a->egid, b->egid) &&
		gid_eq(a->sgid, b->sgid) && gid_eq(a->fsgid, b->fsgid) &&
		cap_issubset(a->cap_permitted, b->cap_permitted));
}

static long ckpt_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct ckpt_ctx *ctx = file->private_data;
	void __user *uarg = (void __user *)arg;
	const struct ckpt_ioc *ioc = NULL;
	union ckpt_ioc_arg karg;
	long ret;
	u32 seq;

	/* refused before anything, the error log included */
	if (!ckpt_same_cred(file->f_cred, current_cred()) && !ckpt_capable())
		return -EPERM;
	/* reading another task's fd table or credentials: ptrace's
	 * capability, held by the opener and by the caller
	 * (ptrace_may_access() is not exported) */
	if (_IOC_TYPE(cmd) == CKPT_IOC_MAGIC &&
	    (_IOC_NR(cmd) == _IOC_NR(CKPT_IOC_TASK_FDS) ||
	     _IOC_NR(cmd) == _IOC_NR(CKPT_IOC_TASK_CREDS))) {
		if (!file_ns_capable(file, &init_user_ns, CAP_SYS_PTRACE) ||
		    !capable(CAP_SYS_PTRACE))
			return -EPERM;
	}
	if (_IOC_TYPE(cmd) == CKPT_IOC_MAGIC &&
	    _IOC_NR(cmd) < ARRAY_SIZE(ckpt_iocs))
		ioc = &ckpt_iocs[_IOC_NR(cmd)];
	/* interruptible: nothing under this lock waits on the tree's locks */
	if (mutex_lock_interruptible(&ctx->lock))
		return -EINTR;
	/* a context that walked tasks: their ptrace rule, for every ioctl */
	if (!ckpt_walk_allowed(ctx)) {
		mutex_unlock(&ctx->lock);
		return -EPERM;
	}
	/* the size may differ (a struct grown or older); nothing else may */
	if (!ioc || !ioc->fn || _IOC_DIR(cmd) != _IOC_DIR(ioc->cmd) ||
	    (!ioc->ver0 && _IOC_SIZE(cmd)) ||
	    (ioc->debug && !READ_ONCE(ckpt_debug))) {
		ckpt_err(ctx, -ENOTTY, 0, __func__, "unknown ioctl %#x", cmd);
		mutex_unlock(&ctx->lock);
		return -ENOTTY;
	}

	ckpt_fault_arm();
	seq = ctx->err_seq;
	memset(&karg, 0, sizeof(karg));
	if (ioc->ver0) {
		ret = ioc_copy_in(ctx, ioc, cmd, &karg, uarg);
		if (ret)
			goto out;
	}
	ret = ioc->fn(ctx, &karg, uarg, _IOC_SIZE(cmd));
	/* standard meanings; a deferred FAIL's errno is the caller's own */
	if (ioc->cmd != CKPT_IOC_DEFER_RUN)
		ret = ckpt_uerrno(ret);
	/* CONTAINED's EBUSY carries its output, whatever size the caller's */
	if ((_IOC_DIR(cmd) & _IOC_READ) && !ioc->own_out &&
	    (ret >= 0 || ioc->cmd == CKPT_IOC_CONTAINED) &&
	    ioc_copy_out(ioc, cmd, &karg, uarg)) {
		ret = -EFAULT;
		ckpt_err(ctx, ret, 0, ioc->name, "result unwritable");
	}
out:
	/* EPERM: a refused caller changes nothing, the log included */
	if (ret < 0 && ret != -EPERM && ctx->err_seq == seq)
		ckpt_err(ctx, ret, 0, ioc->name, "failed");
	ckpt_fault_disarm();
	mutex_unlock(&ctx->lock);
	return ret;
}

/* ---- open and release --------------------------------------------------- */

static int ckpt_open(struct inode *inode, struct file *file)
{
	struct ckpt_ctx *ctx;
	int ret;

	/* beyond the file mode: a context reads and installs others' files */
	if (!ckpt_capable())
		return -EPERM;
	ctx = kvzalloc(sizeof(*ctx), GFP_KERNEL_ACCOUNT);
	if (!ctx)
		return -ENOMEM;
	ret = ckpt_obj_hash_alloc(&ctx->objhash, CKPT_HASH_BITS_DEFAULT,
				  false);
	if (ret) {
		kvfree(ctx);
		return ret;
	}
	mutex_init(&ctx->lock);
	ckpt_deferqueue_init(&ctx->deferqueue);
	INIT_LIST_HEAD(&ctx->test_objs);
	ctx->max_tests = CKPT_MAX_TESTS_DEFAULT;
	ctx->policy = CKPT_POLICY_CLEAR_EARLY;
	file->private_data = ctx;
	atomic_long_inc(&ckpt_contexts_live);
	return 0;
}

/* closing the fd is always safe: whatever state, everything is released */
static int ckpt_release(struct inode *inode, struct file *file)
{
	struct ckpt_ctx *ctx = file->private_data;

	ckpt_deferqueue_destroy(&ctx->deferqueue);
	ckpt_obj_hash_free(&ctx->objhash);
	ckpt_test_put_all(ctx);
	ckpt_walk_free(ctx);
	kvfree(ctx->tags);
	mutex_destroy(&ctx->lock);
	kvfree(ctx);
	atomic_long_dec(&ckpt_contexts_live);
	return 0;
}

const struct file_operations ckpt_fops = {
	.owner = THIS_MODULE,
	.open = ckpt_open,
	.release = ckpt_release,
	.unlocked_ioctl = ckpt_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};
