/* SPDX-License-Identifier: GPL-2.0 */
/* Host stand-in for <linux/string.h>. */
#include <string.h>
