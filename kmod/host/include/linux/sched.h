/* SPDX-License-Identifier: GPL-2.0 */
/* Host stand-in for <linux/sched.h>: nothing to yield to in a test. */
#ifndef _HOST_LINUX_SCHED_H
#define _HOST_LINUX_SCHED_H
#define cond_resched() do { } while (0)
#endif
