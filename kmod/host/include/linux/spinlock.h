/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Host stand-in for <linux/spinlock.h>: the tests are single-threaded, so a
 * lock only checks its own discipline (no recursion, no unbalanced unlock),
 * which is what lockdep would catch and Debian's kernel lacks.
 */
#ifndef _HOST_LINUX_SPINLOCK_H
#define _HOST_LINUX_SPINLOCK_H
#include <linux/list.h>

typedef struct {
	int locked;
} spinlock_t;

static inline void spin_lock_init(spinlock_t *lock)
{
	lock->locked = 0;
}

static inline void spin_lock(spinlock_t *lock)
{
	if (lock->locked)
		host_list_bug("spin_lock: recursive locking");
	lock->locked = 1;
}

static inline void spin_unlock(spinlock_t *lock)
{
	if (!lock->locked)
		host_list_bug("spin_unlock: not locked");
	lock->locked = 0;
}
#endif
