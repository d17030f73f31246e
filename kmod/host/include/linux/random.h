/* SPDX-License-Identifier: GPL-2.0 */
/* Host stand-in for <linux/random.h>: the objhash's per-context seed. */
#ifndef _HOST_LINUX_RANDOM_H
#define _HOST_LINUX_RANDOM_H
#include <stdlib.h>
#include <linux/types.h>

static inline u64 get_random_u64(void)
{
	return ((u64)random() << 33) ^ ((u64)random() << 11) ^ (u64)random();
}
#endif
