// SPDX-License-Identifier: GPL-2.0
/*
 * fault.c - fault injection for ckpt.ko, always built in, off by default.
 *
 * Debian's kernel has no FAILSLAB, so this is the only way to reach the
 * module's failure paths from a test.  In the spirit of the kernel's
 * fail-nth: with the module loaded with debug=1, writing N to
 * /sys/module/ckpt/parameters/fail_nth makes the
 * Nth allocation, fd reservation or user copy of the next ioctl (of any
 * context, by the task that makes it) fail; fail_fired counts the failures
 * forced so far.  An ioctl that reaches fewer than N such points leaves
 * nothing armed behind it.
 */
#include <linux/moduleparam.h>
#include <linux/sched.h>
#include <linux/spinlock.h>
#include "ckpt_ctx.h"

static int fail_nth;
module_param(fail_nth, int, 0600);
MODULE_PARM_DESC(fail_nth,
		 "fail the Nth allocation or user copy of the next ioctl (0: off)");

static unsigned long fail_fired;
module_param(fail_fired, ulong, 0400);
MODULE_PARM_DESC(fail_fired, "failures forced by fail_nth so far");

static DEFINE_SPINLOCK(fault_lock);
static struct task_struct *fault_task;	/* the ioctl armed, or NULL */
static int fault_left;

/**
 * ckpt_fault_arm - at the start of an ioctl: take what fail_nth asks for
 */
void ckpt_fault_arm(void)
{
	/* off unless the module was loaded with debug=1 (main.c) */
	if (likely(!READ_ONCE(fail_nth)) || !READ_ONCE(ckpt_debug))
		return;
	spin_lock(&fault_lock);
	if (fail_nth > 0) {
		fault_task = current;
		fault_left = fail_nth;
	}
	fail_nth = 0;
	spin_unlock(&fault_lock);
}

/**
 * ckpt_fault_disarm - at the end of an ioctl: nothing stays armed
 */
void ckpt_fault_disarm(void)
{
	if (likely(READ_ONCE(fault_task) != current))
		return;
	spin_lock(&fault_lock);
	if (fault_task == current)
		fault_task = NULL;
	spin_unlock(&fault_lock);
}

/**
 * ckpt_fault - must the allocation or copy about to be made fail?
 *
 * Return: true once, at the Nth call within the armed ioctl.
 */
bool ckpt_fault(void)
{
	bool hit = false;

	if (likely(READ_ONCE(fault_task) != current))
		return false;
	spin_lock(&fault_lock);
	if (fault_task == current && --fault_left <= 0) {
		fault_task = NULL;
		fail_fired++;
		hit = true;
	}
	spin_unlock(&fault_lock);
	return hit;
}
