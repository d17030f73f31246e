// SPDX-License-Identifier: GPL-2.0
/*
 * objtypes.c - the object types the objhash can hold and how userspace
 * names them: FILE (a struct file, by fd), INODE (a file's inode: the two
 * ends of a pipe share it), TEST (a module-owned counted blob, by id).
 */
#include <linux/cred.h>
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/rbtree.h>
#include <linux/version.h>
#include <linux/kdev_t.h>
#include <linux/kref.h>
#include <linux/magic.h>
#include <linux/pipe_fs_i.h>
#include <linux/slab.h>
#include <linux/stat.h>
#include <linux/string.h>
#include "ckpt_ctx.h"

static void file_grab(void *ptr)
{
	get_file(ptr);
}

static void file_drop(void *ptr)
{
	fput(ptr);
}

/*
 * The mappings of @file: each VMA whose vm_file is @file holds one
 * reference on it.  They sit in the interval tree of the file's
 * address_space, with the VMAs of every other open of the same inode.
 */
static long file_mappings(struct file *file)
{
	struct address_space *mapping = file->f_mapping;
	struct vm_area_struct *vma;
	struct rb_node *node;
	long nr = 0, seen = 0;

	if (!mapping)
		return 0;
	i_mmap_lock_read(mapping);
	for (node = rb_first_cached(&mapping->i_mmap); node;
	     node = rb_next(node)) {
		vma = rb_entry(node, struct vm_area_struct, shared.rb);
		if (vma->vm_file == file)
			nr++;
		if (!(++seen & 1023))
			cond_resched();
	}
	i_mmap_unlock_read(mapping);
	return nr;
}

/*
 * Every reference but the hash's own and the mappings' (ckpt.h, leak
 * detection): fd table slots of any process, files in flight, ...
 */
static long file_users(void *ptr)
{
	struct file *file = ptr;

	return file_count(file) - 1 - file_mappings(file);
}

/*
 * An inode reference alone does not keep its filesystem mounted: after the
 * last file on it closed, umount would shut the superblock down under the
 * hash ("Busy inodes after unmount") and the later iput() would touch freed
 * memory.  So the hash also holds an active reference on the superblock,
 * taken while the caller's file still pins it.
 */
static void inode_grab(void *ptr)
{
	struct inode *inode = ptr;

	atomic_inc(&inode->i_sb->s_active);
	ihold(inode);
}

static void inode_drop(void *ptr)
{
	struct inode *inode = ptr;
	struct super_block *sb = inode->i_sb;

	iput(inode);
	deactivate_super(sb);
}

/*
 * A pipe or FIFO counts the files open on it; lookup_add meets the inode
 * once per distinct file, so a surplus is an end open outside the tree.
 * Other inodes are not checked (-1).
 */
static long inode_users(void *ptr)
{
	struct inode *inode = ptr;
	long files = -1;

	if (!S_ISFIFO(inode->i_mode))
		return -1;
	spin_lock(&inode->i_lock);
	if (inode->i_pipe)
		files = inode->i_pipe->files;
	spin_unlock(&inode->i_lock);
	return files;
}

static const struct ckpt_obj_ops ckpt_file_ops = {
	.name = "file",
	.type = CKPT_OBJ_FILE,
	.ref_grab = file_grab,
	.ref_drop = file_drop,
	.ref_users = file_users,
};

static const struct ckpt_obj_ops ckpt_inode_ops = {
	.name = "inode",
	.type = CKPT_OBJ_INODE,
	.ref_grab = inode_grab,
	.ref_drop = inode_drop,
	.ref_users = inode_users,
};

/* ---- test objects: every grab, drop and free is counted ---------------- */

struct ckpt_testobj {
	struct kref ref;
	struct ckpt_ctx *ctx;	/* its maker, which outlives it */
	struct list_head node;	/* ctx->test_objs while alive */
	int id;
	bool handle;		/* the creator's reference is still held */
	u64 grabs;
	u64 drops;
};

static atomic_long_t test_live = ATOMIC_LONG_INIT(0);
static atomic64_t test_grabs = ATOMIC64_INIT(0);
static atomic64_t test_drops = ATOMIC64_INIT(0);
static atomic64_t test_frees = ATOMIC64_INIT(0);

static void testobj_release(struct kref *ref)
{
	struct ckpt_testobj *t = container_of(ref, struct ckpt_testobj, ref);

	list_del(&t->node);
	t->ctx->nr_tests--;
	kfree(t);
	atomic_long_dec(&test_live);
	atomic64_inc(&test_frees);
}

static void test_grab(void *ptr)
{
	struct ckpt_testobj *t = ptr;

	kref_get(&t->ref);
	t->grabs++;
	atomic64_inc(&test_grabs);
}

static void test_drop(void *ptr)
{
	struct ckpt_testobj *t = ptr;

	t->drops++;
	atomic64_inc(&test_drops);
	kref_put(&t->ref, testobj_release);
}

static const struct ckpt_obj_ops ckpt_test_ops = {
	.name = "test",
	.type = CKPT_OBJ_TEST,
	.ref_grab = test_grab,
	.ref_drop = test_drop,
};

const struct ckpt_obj_ops *const ckpt_obj_ops_table[CKPT_OBJ_MAX] = {
	[CKPT_OBJ_FILE] = &ckpt_file_ops,
	[CKPT_OBJ_INODE] = &ckpt_inode_ops,
	[CKPT_OBJ_TEST] = &ckpt_test_ops,
};

static struct ckpt_testobj *testobj_find(struct ckpt_ctx *ctx, int id)
{
	struct ckpt_testobj *t;

	list_for_each_entry(t, &ctx->test_objs, node)
		if (t->id == id && t->handle)
			return t;
	return NULL;
}

/**
 * ckpt_test_new - make a test object owned by @ctx
 * @ctx: the context; its creator reference is the object's first
 *
 * Return: the new id (> 0), -ENOSPC when @ctx has max_tests alive or has
 * used every id up to INT_MAX, or -ENOMEM.
 */
int ckpt_test_new(struct ckpt_ctx *ctx)
{
	struct ckpt_testobj *t;

	if (ctx->nr_tests >= ctx->max_tests || ctx->next_test_id == INT_MAX)
		return -ENOSPC;
	t = ckpt_fault() ? NULL : kzalloc(sizeof(*t), GFP_KERNEL_ACCOUNT);
	if (!t)
		return -ENOMEM;
	kref_init(&t->ref);
	t->ctx = ctx;
	ctx->nr_tests++;
	t->id = ++ctx->next_test_id;
	t->handle = true;
	list_add_tail(&t->node, &ctx->test_objs);
	atomic_long_inc(&test_live);
	return t->id;
}

/**
 * ckpt_test_put - drop the creator's reference of test object @id
 * @ctx: the context
 * @id: the object
 *
 * Return: 0, or -ENOENT when @id is unknown or already put.
 */
int ckpt_test_put(struct ckpt_ctx *ctx, int id)
{
	struct ckpt_testobj *t = testobj_find(ctx, id);

	if (!t)
		return -ENOENT;
	t->handle = false;
	kref_put(&t->ref, testobj_release);
	return 0;
}

/**
 * ckpt_test_stat - the counts of one test object
 * @ctx: the context
 * @arg: in: id; out: refs, grabs, drops
 *
 * Return: 0, or -ENOENT.
 */
int ckpt_test_stat(struct ckpt_ctx *ctx, struct ckpt_test_obj *arg)
{
	struct ckpt_testobj *t = testobj_find(ctx, arg->id);

	if (!t)
		return -ENOENT;
	arg->refs = kref_read(&t->ref);
	arg->grabs = t->grabs;
	arg->drops = t->drops;
	return 0;
}

/**
 * ckpt_test_put_all - drop every creator reference still held (teardown)
 * @ctx: the context
 */
void ckpt_test_put_all(struct ckpt_ctx *ctx)
{
	struct ckpt_testobj *t, *n;

	list_for_each_entry_safe(t, n, &ctx->test_objs, node) {
		if (t->handle) {
			t->handle = false;
			kref_put(&t->ref, testobj_release);
		}
	}
}

/**
 * ckpt_test_counts - the module-wide test object counters
 * @st: filled in
 */
void ckpt_test_counts(struct ckpt_stats *st)
{
	st->mod_test_live = atomic_long_read(&test_live);
	st->mod_test_grabs = atomic64_read(&test_grabs);
	st->mod_test_drops = atomic64_read(&test_drops);
	st->mod_test_frees = atomic64_read(&test_frees);
}

/* ---- handles: how userspace names an object ---------------------------- */

/**
 * ckpt_handle_get - the object userspace names by @handle, referenced
 * @ctx: the context (test ids are private to it)
 * @type: enum ckpt_obj_type, already checked
 * @handle: an fd of the caller, or a test id
 * @ptr: set to the object; release it with ckpt_handle_put()
 *
 * Return: 0, -EBADF for an fd that is not open or is /dev/ckpt itself,
 * -ENOENT for an unknown id.
 */
int ckpt_handle_get(struct ckpt_ctx *ctx, u32 type, int handle, void **ptr)
{
	struct ckpt_testobj *t;
	struct file *file;

	if (type == CKPT_OBJ_TEST) {
		t = testobj_find(ctx, handle);
		if (!t)
			return -ENOENT;
		kref_get(&t->ref);
		*ptr = t;
		return 0;
	}
	file = handle < 0 ? NULL : fget(handle);
	if (!file)
		return -EBADF;
	/* a context holding its own file (or another's) would never close */
	if (file->f_op == &ckpt_fops) {
		fput(file);
		return -EBADF;
	}
	if (type == CKPT_OBJ_INODE) {
		*ptr = file_inode(file);
		inode_grab(*ptr);
		fput(file);
	} else {
		*ptr = file;
	}
	return 0;
}

/**
 * ckpt_handle_put - release what ckpt_handle_get() took
 * @type: the type given to ckpt_handle_get()
 * @ptr: the object
 */
void ckpt_handle_put(u32 type, void *ptr)
{
	struct ckpt_testobj *t = ptr;

	switch (type) {
	case CKPT_OBJ_FILE:
		fput(ptr);
		break;
	case CKPT_OBJ_INODE:
		inode_drop(ptr);
		break;
	case CKPT_OBJ_TEST:
		kref_put(&t->ref, testobj_release);
		break;
	}
}

/*
 * Install a new fd on @file for the caller, through receive_fd() (the LSM's
 * file-receive hook).  With @ufd (a batch item), its number is written
 * there: receive_fd() takes @ufd from 6.8 on and writes before it installs.
 * 6.1's installs at once (the variant taking a ufd, __receive_fd(), is not
 * exported there): the destination is probed first, and if the write still
 * fails after the install (another thread unmapped it meanwhile) the fd
 * stays installed: by then another thread may have used, dup'ed or replaced
 * that number, so closing it could close someone else's file.  Without
 * @ufd (a single FETCH) nothing is written: the fd is the ioctl's value.
 */
static int ckpt_receive_fd(struct file *file, int __user *ufd,
			   unsigned int o_flags, int *installed)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	if (ckpt_fault())
		return -EMFILE;
	if (ufd && ckpt_fault())
		return -EFAULT;
	return receive_fd(file, ufd, o_flags);
#else
	int fd;

	if (ckpt_fault())
		return -EMFILE;
	if (ufd && (ckpt_fault() || put_user(-1, ufd)))
		return -EFAULT;
	fd = receive_fd(file, o_flags);
	if (fd < 0 || !ufd)
		return fd;
	if (ckpt_fault() || put_user(fd, ufd)) {
		*installed = fd;
		return -EFAULT;
	}
	return fd;
#endif
}

/**
 * ckpt_handle_install - give userspace a handle on an object (fetch)
 * @type: its type
 * @ptr: the object, referenced by the hash
 * @flags: CKPT_OBJ_CLOEXEC
 * @uhandle: where a batch item's handle goes (written before an fd is
 *           installed, but see ckpt_receive_fd() for 6.1), or NULL
 * @installed: set to the fd left installed when the write failed after the
 *             install (6.1 only), else -1
 *
 * Return: a new fd on the same open file description (FILE), the id (TEST),
 * -EINVAL for an INODE (no handle exists for it), -EMFILE, or -EFAULT.
 */
int ckpt_handle_install(u32 type, void *ptr, u32 flags, int __user *uhandle,
			int *installed)
{
	struct ckpt_testobj *t = ptr;

	*installed = -1;
	switch (type) {
	case CKPT_OBJ_FILE:
		return ckpt_receive_fd(ptr, uhandle, flags & CKPT_OBJ_CLOEXEC ?
				       O_CLOEXEC : 0, installed);
	case CKPT_OBJ_TEST:
		if (uhandle && (ckpt_fault() || put_user(t->id, uhandle)))
			return -EFAULT;
		return t->id;
	default:
		return -EINVAL;
	}
}

/*
 * The filesystem first: pseudo filesystems whose inodes say S_IFREG (nsfs,
 * and pidfs since 6.9) hold no regular file; anon inodes carry no S_IFMT
 * type of their own in 6.1.
 */
static u32 file_kind(struct file *file)
{
	struct inode *inode = file_inode(file);

	switch (inode->i_sb->s_magic) {
	case ANON_INODE_FS_MAGIC:
		/* before pidfs (6.9), a pidfd was an anon inode file */
		if (!strcmp(file->f_path.dentry->d_name.name, "[pidfd]"))
			return CKPT_FILE_PIDFD;
		return CKPT_FILE_ANON;
	case NSFS_MAGIC:
		return CKPT_FILE_NSFS;
#ifdef PID_FS_MAGIC
	case PID_FS_MAGIC:
		return CKPT_FILE_PIDFD;
#endif
	}
	switch (inode->i_mode & S_IFMT) {
	case S_IFREG:
		return CKPT_FILE_REG;
	case S_IFDIR:
		return CKPT_FILE_DIR;
	case S_IFIFO:
		return inode->i_sb->s_magic == PIPEFS_MAGIC ?
			CKPT_FILE_PIPE : CKPT_FILE_FIFO;
	case S_IFCHR:
		return CKPT_FILE_CHR;
	case S_IFBLK:
		return CKPT_FILE_BLK;
	case S_IFSOCK:
		return CKPT_FILE_SOCK;
	}
	return CKPT_FILE_OTHER;
}

/**
 * ckpt_file_info_fill - the record body of a file checkpoint meets first
 * @h: the checkpoint hash, where the file's inode gets its objref
 * @file: the file
 * @info: filled in
 * @inode_first: set to whether the inode was added now
 *
 * Return: 0, an error of vfs_getattr() (nothing added then), or one of
 * ckpt_obj_lookup_add() for the inode.
 */
int ckpt_file_info_fill(struct ckpt_obj_hash *h, struct file *file,
			struct ckpt_file_info *info, bool *inode_first)
{
	struct kstat st;
	int objref;

	/*
	 * First, so that a failure leaves no inode in the hash to undo.  What
	 * the kernel has cached: a FUSE daemon in the frozen tree (or a
	 * network server) is not asked, so this cannot stall.
	 */
	objref = ckpt_fault() ? -ENOMEM :
		 vfs_getattr(&file->f_path, &st, STATX_BASIC_STATS,
			     AT_STATX_DONT_SYNC);
	if (objref)
		return objref;
	objref = ckpt_obj_lookup_add(h, file_inode(file), &ckpt_inode_ops,
				     inode_first);
	if (objref < 0)
		return objref;
	/* what fstat(2) tells the caller: cp_new_stat()'s encoding */
	info->st_dev = new_encode_dev(st.dev);
	info->st_ino = st.ino;
	info->st_rdev = new_encode_dev(st.rdev);
	info->st_size = st.size;
	info->st_mode = st.mode;
	info->st_uid = from_kuid_munged(current_user_ns(), st.uid);
	info->st_gid = from_kgid_munged(current_user_ns(), st.gid);
	info->st_nlink = st.nlink;
	info->kind = file_kind(file);
	info->f_flags = file->f_flags;
	info->f_mode = (file->f_mode & FMODE_READ ? CKPT_FMODE_READ : 0) |
		       (file->f_mode & FMODE_WRITE ? CKPT_FMODE_WRITE : 0);
	info->inode_objref = objref;
	info->pos = file->f_pos;
	return 0;
}
