/* SPDX-License-Identifier: GPL-2.0 */
/* Host stand-in for <linux/err.h>. */
#ifndef _HOST_LINUX_ERR_H
#define _HOST_LINUX_ERR_H
#include <stdbool.h>

#define MAX_ERRNO 4095
#define IS_ERR_VALUE(x) ((unsigned long)(void *)(x) >= (unsigned long)-MAX_ERRNO)

static inline void *ERR_PTR(long error)
{
	return (void *)error;
}

static inline long PTR_ERR(const void *ptr)
{
	return (long)ptr;
}

static inline bool IS_ERR(const void *ptr)
{
	return IS_ERR_VALUE((unsigned long)ptr);
}

static inline void *ERR_CAST(const void *ptr)
{
	return (void *)ptr;
}
#endif
