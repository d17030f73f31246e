/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Host stand-in for <linux/slab.h>.  Every allocation is counted, and the
 * tests can make the Nth one fail (the kernel's failslab, which Debian's
 * kernel is built without), so every allocation failure path is exercised.
 */
#ifndef _HOST_LINUX_SLAB_H
#define _HOST_LINUX_SLAB_H
#include <stddef.h>

#define GFP_KERNEL 0
#define GFP_KERNEL_ACCOUNT 0
#define __GFP_NOWARN 0

void *host_alloc(size_t size, int zero);
void host_free(const void *p);

#define kmalloc(size, gfp) host_alloc(size, 0)
#define kzalloc(size, gfp) host_alloc(size, 1)
#define kfree(p) host_free(p)
#define kvfree(p) host_free(p)

static inline void *kvcalloc(size_t n, size_t size, int gfp)
{
	if (size && n > (size_t)-1 / size)
		return NULL;
	return host_alloc(n * size, 1);
}
#endif
