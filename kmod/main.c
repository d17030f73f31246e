// SPDX-License-Identifier: GPL-2.0
/*
 * main.c - ckpt.ko: the core of linux-cr (objhash, delayed free,
 * deferqueue) behind the misc device /dev/ckpt.
 */
#include <linux/miscdevice.h>
#include <linux/module.h>
#include "ckpt_ctx.h"

/* ceilings of the per-context limits (ckpt.h, "Limits"); root may move them */
unsigned int ckpt_max_objs = CKPT_MAX_OBJS_CEILING;
module_param_named(max_objs, ckpt_max_objs, uint, 0644);
MODULE_PARM_DESC(max_objs, "most hash entries SETUP may allow a context");
unsigned int ckpt_max_defers = CKPT_MAX_DEFERS_CEILING;
module_param_named(max_defers, ckpt_max_defers, uint, 0644);
MODULE_PARM_DESC(max_defers, "most deferqueue entries SETUP may allow");
unsigned int ckpt_max_tests = CKPT_MAX_TESTS_CEILING;
module_param_named(max_tests, ckpt_max_tests, uint, 0644);
MODULE_PARM_DESC(max_tests, "most test objects SETUP may allow a context");

/*
 * The TEST_* ioctls and the fail_nth knob exist for the tests, as the
 * kernel's own fault injection does: off unless the module is loaded with
 * debug=1 (root may also set it later, as it could a debugfs knob).
 */
bool ckpt_debug;
module_param_named(debug, ckpt_debug, bool, 0600);
MODULE_PARM_DESC(debug, "enable the TEST_* ioctls and fail_nth (tests only)");

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
