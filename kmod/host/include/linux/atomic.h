/* SPDX-License-Identifier: GPL-2.0 */
/* Host stand-in for <linux/atomic.h>: the atomic_long_t the core counts in. */
#ifndef _HOST_LINUX_ATOMIC_H
#define _HOST_LINUX_ATOMIC_H

typedef struct {
	long counter;
} atomic_long_t;

#define ATOMIC_LONG_INIT(i) { (i) }

static inline void atomic_long_inc(atomic_long_t *v)
{
	__atomic_add_fetch(&v->counter, 1, __ATOMIC_SEQ_CST);
}

static inline void atomic_long_dec(atomic_long_t *v)
{
	__atomic_sub_fetch(&v->counter, 1, __ATOMIC_SEQ_CST);
}

static inline long atomic_long_read(const atomic_long_t *v)
{
	return __atomic_load_n(&v->counter, __ATOMIC_SEQ_CST);
}
#endif
