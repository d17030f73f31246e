// SPDX-License-Identifier: GPL-2.0
/*
 * creds.c - CKPT_IOC_TASK_CREDS: what limits a task beyond its ids
 * (securebits, which /proc does not show, and its capability sets), read
 * from its real credentials as /proc/PID/status reads them, so that
 * restart can give the task back no more than it had.
 *
 * kernel_cap_t is two __u32 on 6.1 and one u64 since 6.3: cap_u64() hides
 * that.  __task_cred() is rcu_dereference() of task->real_cred, nothing
 * exported is needed.
 */
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include "ckpt_ctx.h"

static u64 cap_u64(const kernel_cap_t *cap)
{
#ifdef CAP_FOR_EACH_U32	/* before 6.3: __u32 cap[2] */
	return cap->cap[0] | (u64)cap->cap[1] << 32;
#else
	return cap->val;
#endif
}

/**
 * ckpt_task_creds - CKPT_IOC_TASK_CREDS: a task's securebits and cap sets
 * @ctx: the context, locked
 * @a: in pid, starttime (the rest zero); out the securebits and the sets
 *
 * The caller's CAP_SYS_PTRACE (and the opener's) was checked before the
 * context was locked; here ptrace's access check, LSMs included, as
 * TASK_FDS runs it (ckpt_task_access()).  Nothing enters the context.
 *
 * Return: 0, -EINVAL, -ESRCH or -EPERM.
 */
int ckpt_task_creds(struct ckpt_ctx *ctx, struct ckpt_task_creds *a)
{
	struct task_struct *task;
	const struct cred *cred;
	int ret;

	if (a->flags || a->securebits || a->__pad || a->cap_inheritable ||
	    a->cap_permitted || a->cap_effective || a->cap_bset ||
	    a->cap_ambient) {
		ckpt_err(ctx, -EINVAL, 0, "ioc_task_creds",
			 "flags %#x, or a non-zero output or padding",
			 a->flags);
		return -EINVAL;
	}
	task = ckpt_find_task(ctx, a->pid, a->starttime, "ioc_task_creds");
	if (IS_ERR(task))
		return PTR_ERR(task);
	/* as TASK_FDS: refused (EPERM) before anything is logged */
	ret = ckpt_task_access(task, a->pid);
	if (ret) {
		if (ret == -ESRCH)
			ckpt_err(ctx, ret, 0, "ioc_task_creds",
				 "task %d is exiting", a->pid);
		put_task_struct(task);
		return ret;
	}
	rcu_read_lock();
	cred = __task_cred(task);
	a->securebits = cred->securebits;
	a->cap_inheritable = cap_u64(&cred->cap_inheritable);
	a->cap_permitted = cap_u64(&cred->cap_permitted);
	a->cap_effective = cap_u64(&cred->cap_effective);
	a->cap_bset = cap_u64(&cred->cap_bset);
	a->cap_ambient = cap_u64(&cred->cap_ambient);
	rcu_read_unlock();
	put_task_struct(task);
	return 0;
}
