// SPDX-License-Identifier: GPL-2.0
/*
 * main.c - ckpt.ko: the core of linux-cr (objhash, delayed free,
 * deferqueue) behind the misc device /dev/ckpt.
 */
#include <linux/miscdevice.h>
#include <linux/module.h>
#include "ckpt_ctx.h"

static struct miscdevice ckpt_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ckpt",
	.fops = &ckpt_fops,
	.mode = 0600,
};

static int __init ckpt_init(void)
{
	return misc_register(&ckpt_misc);
}

static void __exit ckpt_exit(void)
{
	struct ckpt_stats st = {};

	misc_deregister(&ckpt_misc);
	/* no context can be open here: each holds a module reference */
	ckpt_test_counts(&st);
	if (atomic_long_read(&ckpt_objs_live) ||
	    atomic_long_read(&ckpt_defers_live) || st.mod_test_live)
		pr_err("ckpt: leaked %ld objects, %ld deferred, %llu test\n",
		       atomic_long_read(&ckpt_objs_live),
		       atomic_long_read(&ckpt_defers_live), st.mod_test_live);
}

module_init(ckpt_init);
module_exit(ckpt_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("linux-cr objhash and deferqueue behind /dev/ckpt");
