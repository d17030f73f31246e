/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ckpt_ctx.h - one checkpoint/restart context: what an open() of /dev/ckpt
 * creates and its release() tears down.
 */
#ifndef _CKPT_CTX_H
#define _CKPT_CTX_H

#include <linux/fs.h>
#include <linux/mutex.h>
#include "ckpt_core.h"

struct ckpt_ctx {
	struct mutex lock;		/* serializes the ioctls */
	struct ckpt_obj_hash objhash;
	struct ckpt_deferqueue_head deferqueue;
	enum ckpt_policy policy;
	bool released;
	struct list_head test_objs;	/* test objects made here, alive */
	int next_test_id;
	u32 nr_tests;			/* on test_objs */
	u32 max_tests;			/* ENOSPC beyond */
	u64 *tags;			/* CKPT_DEFER_LOG, CKPT_TAGS_MAX */
	u32 nr_tags;
	u32 err_seq;			/* seq of the newest error */
	/* TASK_FDS: whoever uses the context later needs ptrace access to
	 * every task walked (fdtable.c, ckpt_walk_allowed()) */
	const struct cred *walk_cred;	/* the first walker's, which had it */
	struct pid **walked;		/* each task walked, referenced */
	u32 nr_walked;
	u32 walked_room;
	struct ckpt_err_entry errs[CKPT_ERR_LOG_MAX];	/* ring by seq */
};

extern atomic_long_t ckpt_contexts_live;

/* main.c: the ceilings SETUP may raise a context's limits to */
extern unsigned int ckpt_max_objs, ckpt_max_defers, ckpt_max_tests;
/* main.c: the TEST_* ioctls and fail_nth work only when set */
extern bool ckpt_debug;

/* fault.c */
void ckpt_fault_arm(void);
void ckpt_fault_disarm(void);

__printf(5, 6)
void ckpt_err(struct ckpt_ctx *ctx, int err, int objref, const char *func,
	      const char *fmt, ...);
int ckpt_copy_elem(void __user *to, size_t usize, const void *from,
		   size_t ksize);
int ckpt_elem_size(struct ckpt_ctx *ctx, u32 asked, size_t ver0,
		   const char *func, u32 *size);

/* objtypes.c */
extern const struct ckpt_obj_ops *const ckpt_obj_ops_table[CKPT_OBJ_MAX];
int ckpt_handle_get(struct ckpt_ctx *ctx, u32 type, int handle, void **ptr);
void ckpt_handle_put(u32 type, void *ptr);
int ckpt_handle_install(u32 type, void *ptr, u32 flags, int __user *uhandle,
			int *installed);
int ckpt_file_info_fill(struct ckpt_obj_hash *h, struct file *file,
			struct ckpt_file_info *info, bool *inode_first);
int ckpt_test_new(struct ckpt_ctx *ctx);
int ckpt_test_put(struct ckpt_ctx *ctx, int id);
int ckpt_test_stat(struct ckpt_ctx *ctx, struct ckpt_test_obj *arg);
void ckpt_test_put_all(struct ckpt_ctx *ctx);
void ckpt_test_counts(struct ckpt_stats *st);

/* fdtable.c */
struct task_struct;
struct task_struct *ckpt_find_task(struct ckpt_ctx *ctx, pid_t nr,
				   u64 starttime, const char *func);
int ckpt_task_access(struct task_struct *task, pid_t nr);
int ckpt_task_fds(struct ckpt_ctx *ctx, struct ckpt_task_fds *a);
bool ckpt_walk_allowed(struct ckpt_ctx *ctx);
void ckpt_walk_free(struct ckpt_ctx *ctx);

/* creds.c */
int ckpt_task_creds(struct ckpt_ctx *ctx, struct ckpt_task_creds *a);

/* ctx.c */
extern const struct file_operations ckpt_fops;

#endif /* _CKPT_CTX_H */
