/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _HOST_H
#define _HOST_H
#include <linux/slab.h>

extern long host_allocs_live;
extern long host_alloc_calls;
/* make the nth allocation from now fail; 0: none */
void host_fail_nth(long n);
#endif
