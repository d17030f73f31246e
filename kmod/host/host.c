// SPDX-License-Identifier: GPL-2.0
/*
 * host.c - what the host build adds around objhash.c and deferqueue.c:
 * a counted allocator that can be told to fail.
 */
#include <stdlib.h>
#include <string.h>
#include "host.h"
#include "../ckpt_core.h"

long host_allocs_live;
long host_alloc_calls;
long host_fail_at;		/* fail the call with this number (from 1) */

void *host_alloc(size_t size, int zero)
{
	void *p;

	if (host_fail_at && ++host_alloc_calls == host_fail_at)
		return NULL;
	p = zero ? calloc(1, size ? size : 1) : malloc(size ? size : 1);
	if (p)
		host_allocs_live++;
	return p;
}

void host_free(const void *p)
{
	if (!p)
		return;
	host_allocs_live--;
	free((void *)p);
}

void host_fail_nth(long n)
{
	host_alloc_calls = 0;
	host_fail_at = n;
}

/* the module's fail_nth knob; here host_fail_nth() does that job */
bool ckpt_fault(void)
{
	return false;
}
