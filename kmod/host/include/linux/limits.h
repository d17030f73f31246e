/* SPDX-License-Identifier: GPL-2.0 */
/* Host stand-in for <linux/limits.h>: INT_MAX and friends. */
#ifndef _HOST_LINUX_LIMITS_H
#define _HOST_LINUX_LIMITS_H
#include <limits.h>
#endif
