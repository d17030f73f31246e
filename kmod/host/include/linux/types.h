/* SPDX-License-Identifier: GPL-2.0 */
/* Host stand-in: the uapi __u32 family from the system, plus kernel names. */
#ifndef _HOST_LINUX_TYPES_H
#define _HOST_LINUX_TYPES_H
#include_next <linux/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))
#endif
