// SPDX-License-Identifier: GPL-2.0
/*
 * fdtable.c - CKPT_IOC_TASK_FDS: the module walks a task's fd table and
 * lookup_adds each file, as linux-cr collected a task's files in the
 * kernel, instead of userspace copying every fd out with pidfd_getfd().
 * With CKPT_TASK_FDS_DETAIL it also says, of each file met first, what
 * userspace would read from /proc (its link, an anonymous file's fdinfo
 * lines) or from a copy of the fd (a pipe's FIONREAD, size and ends).
 *
 * What both kernels export decides the shape: iterate_fd() walks the table
 * under files->file_lock, where nothing may sleep, so each round only takes
 * a reference on up to FDWALK_ROUND files; the hash work (which allocates)
 * and the copy to userspace run after the lock is dropped.  The task's
 * files pointer is read under task_lock(), as kcmp() does (get_files_struct()
 * is not exported).
 */
#include <linux/cred.h>
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/math64.h>
#include <linux/mutex.h>
#include <linux/magic.h>
#include <linux/pid.h>
#include <linux/pipe_fs_i.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/time_namespace.h>
#include <linux/uaccess.h>
#include "ckpt_ctx.h"

/* files referenced per spinlock hold: bounds the hold and the stack */
#define FDWALK_ROUND	32

struct fdwalk_round {
	struct files_struct *files;
	unsigned int room;
	unsigned int n;
	struct {
		struct file *file;
		int fd;
		bool cloexec;
	} slot[FDWALK_ROUND];
};

/* under files->file_lock: must not sleep; nonzero stops iterate_fd() */
static int fdwalk_take(const void *arg, struct file *file, unsigned int fd)
{
	struct fdwalk_round *r = (struct fdwalk_round *)arg;

	r->slot[r->n].file = get_file(file);
	r->slot[r->n].fd = fd;
	r->slot[r->n].cloexec = test_bit(fd,
					 files_fdtable(r->files)->close_on_exec);
	return ++r->n == r->room;
}

/*
 * Up to @room files of @task's table from fd @start on, referenced.
 * Return: 0, or -ESRCH when the task has no files (any more).
 */
static int fdwalk_round(struct task_struct *task, unsigned int start,
			unsigned int room, struct fdwalk_round *r)
{
	int ret = 0;

	r->room = min_t(unsigned int, room, FDWALK_ROUND);
	r->n = 0;
	task_lock(task);
	r->files = task->files;
	if (r->files)
		iterate_fd(r->files, start, fdwalk_take, r);
	else
		ret = -ESRCH;
	task_unlock(task);
	return ret;
}

/* /proc/PID/stat's field 22 as the caller reads it (its time namespace) */
static u64 task_starttime(struct task_struct *task)
{
	return div_u64(timens_add_boottime_ns(task->start_boottime),
		       NSEC_PER_SEC / USER_HZ);
}

/**
 * ckpt_find_task - the task the caller names, if it is still the one it froze
 * @ctx: the context, locked (for its error log)
 * @nr: pid in the caller's pid namespace
 * @starttime: /proc/@nr/stat's field 22 as the caller read it
 * @func: the ioctl, for the error log
 *
 * Return: the task, referenced, or ERR_PTR(-ESRCH) (no such task, a kernel
 * thread, another start time: logged).
 */
struct task_struct *ckpt_find_task(struct ckpt_ctx *ctx, pid_t nr,
				   u64 starttime, const char *func)
{
	struct task_struct *task = NULL;
	struct pid *pid;

	pid = nr > 0 ? find_get_pid(nr) : NULL;
	if (pid) {
		task = get_pid_task(pid, PIDTYPE_PID);
		put_pid(pid);
	}
	if (!task) {
		ckpt_err(ctx, -ESRCH, 0, func, "no task %d", nr);
		return ERR_PTR(-ESRCH);
	}
	if (task->flags & PF_KTHREAD || task_starttime(task) != starttime) {
		ckpt_err(ctx, -ESRCH, 0, func,
			 "task %d: %s", nr, task->flags & PF_KTHREAD ?
			 "a kernel thread" : "another start time (pid reused)");
		put_task_struct(task);
		return ERR_PTR(-ESRCH);
	}
	return task;
}

/*
 * May the caller take @task's files, as pidfd_getfd() asks
 * ptrace_may_access(PTRACE_MODE_ATTACH_REALCREDS)?  Neither that nor
 * security_ptrace_access_check() is exported on 6.1 or 6.12, but opening
 * /proc/@nr/mem as the caller runs the same check: mem_open() calls
 * mm_access(), that is ptrace_may_access(PTRACE_MODE_ATTACH_FSCREDS): the
 * uid and dumpable rules, CAP_SYS_PTRACE in the task's user namespace, then
 * the LSMs' ptrace hooks (Landlock's domains, Yama's scope, SELinux,
 * AppArmor).  The mm the open granted is the file's private_data; it must
 * be @task's, or the /proc the caller sees belongs to another pid namespace:
 * refused too.  A failed check is EPERM whatever the reason (no /proc,
 * EACCES from ptrace, another task); a task without an mm (exiting, a
 * zombie) is ESRCH, as it would be for having no files.
 */
int ckpt_task_access(struct task_struct *task, pid_t nr)
{
	struct mm_struct *mm;
	struct file *mem;
	char path[32];
	int ret = 0;

	if (nr <= 0)
		return -EPERM;
	/* exiting (a zombie): no files to take either */
	mm = get_task_mm(task);
	if (!mm)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/mem", nr);
	mem = filp_open(path, O_RDONLY | O_LARGEFILE, 0);
	if (IS_ERR(mem)) {
		ret = -EPERM;
	} else {
		if (mem->private_data != mm)
			ret = -EPERM;
		fput(mem);
	}
	mmput(mm);
	return ret;
}

/*
 * Remember that @task was walked (after ckpt_task_access() allowed it), so that
 * every later ioctl of the context asks the same of its caller.  The first
 * walker's credentials are kept: the check ran for exactly them.
 */
static int walk_record(struct ckpt_ctx *ctx, struct task_struct *task)
{
	struct pid *pid = get_task_pid(task, PIDTYPE_PID);
	struct pid **more;
	u32 room;

	if (!ctx->walk_cred)
		ctx->walk_cred = get_current_cred();
	/* a task is walked in rounds: one entry for consecutive calls */
	if (ctx->nr_walked && ctx->walked[ctx->nr_walked - 1] == pid) {
		put_pid(pid);
		return 0;
	}
	if (ctx->nr_walked == ctx->walked_room) {
		room = max(16U, ctx->walked_room * 2);
		more = ctx->nr_walked >= ctx->objhash.max_objs || ckpt_fault() ?
		       NULL : krealloc_array(ctx->walked, room, sizeof(*more),
					     GFP_KERNEL_ACCOUNT);
		if (!more) {
			put_pid(pid);
			return ctx->nr_walked >= ctx->objhash.max_objs ?
			       -ENOSPC : -ENOMEM;
		}
		ctx->walked = more;
		ctx->walked_room = room;
	}
	ctx->walked[ctx->nr_walked++] = pid;
	return 0;
}

/**
 * ckpt_walk_allowed - may the caller use a context that walked tasks?
 * @ctx: the context, locked
 *
 * A context that walked a task hands out that task's files (FETCH), says
 * who else holds them (CONTAINED) and logs what it met (ERRORS): so every
 * ioctl asks of its caller what TASK_FDS asked of the walker.  The first
 * walker's own credentials pass; any other caller needs CAP_SYS_PTRACE and
 * ptrace access (ckpt_task_access()) to every task walked, which must still
 * exist.  Nothing is logged for a refused caller.
 *
 * Return: true if the caller may go on.
 */
bool ckpt_walk_allowed(struct ckpt_ctx *ctx)
{
	struct task_struct *task;
	bool ok = true;
	u32 i;

	if (!ctx->nr_walked || current_cred() == ctx->walk_cred)
		return true;
	if (!capable(CAP_SYS_PTRACE))
		return false;
	for (i = 0; ok && i < ctx->nr_walked; i++) {
		task = get_pid_task(ctx->walked[i], PIDTYPE_PID);
		ok = task && !ckpt_task_access(task, pid_vnr(ctx->walked[i]));
		if (task)
			put_task_struct(task);
		cond_resched();
	}
	return ok;
}

/**
 * ckpt_walk_free - drop what the context kept of its walks (teardown)
 * @ctx: the context
 */
void ckpt_walk_free(struct ckpt_ctx *ctx)
{
	u32 i;

	for (i = 0; i < ctx->nr_walked; i++)
		put_pid(ctx->walked[i]);
	kfree(ctx->walked);
	if (ctx->walk_cred)
		put_cred(ctx->walk_cred);
}

/* readlink(2) of /proc/PID/fd/FD, if it fits: proc_fd_link() is d_path() */
static void detail_link(struct file *file, struct ckpt_fd_detail *d)
{
	char *p = d_path(&file->f_path, d->link, sizeof(d->link));
	size_t len;

	if (IS_ERR(p)) {
		memset(d->link, 0, sizeof(d->link));
		return;
	}
	/* d_path() writes at the end of the buffer: move it to the start */
	len = strlen(p);
	memmove(d->link, p, len + 1);
	memset(d->link + len, 0, sizeof(d->link) - len);
	d->detail |= CKPT_DETAIL_LINK;
}

/*
 * The anonymous files whose fdinfo userspace reads.  Only these: their
 * show_fdinfo() writes to the seq_file alone, where other files' may need
 * what /proc sets up (pidfd's reads m->file).
 */
static const char *const detail_fdinfo_names[] = {
	"[eventfd]", "[eventpoll]", "[signalfd]", "[timerfd]",
};

/*
 * Is the mutex an epoll's show_fdinfo() takes free?  struct eventpoll is
 * private to fs/eventpoll.c; its first member is that mutex (6.1 and 6.12
 * alike), which epoll_wait() holds while it copies events out: a task of
 * the tree stalled there (a userfaultfd page, FUSE) would hold it for as
 * long as it likes.  A probe, not a lock: ep_show_fdinfo() takes it itself,
 * and a task frozen before this probe cannot take it after.
 */
static bool epoll_busy(struct file *file)
{
	struct mutex *mtx = file->private_data;

	if (!mutex_trylock(mtx))
		return true;
	mutex_unlock(mtx);
	return false;
}

/* the file's own lines of its fdinfo, as /proc's seq_show() gets them */
static void detail_fdinfo(struct file *file, struct ckpt_fd_detail *d)
{
	const char *name;
	struct seq_file m = {
		.buf = d->fdinfo,
		.size = sizeof(d->fdinfo) - 1,	/* room for the NUL */
	};
	int i;

	if (file_inode(file)->i_sb->s_magic != ANON_INODE_FS_MAGIC ||
	    !file->f_op->show_fdinfo)
		return;
	/* anon_inodefs names never change: no rename on that filesystem */
	name = file->f_path.dentry->d_name.name;
	for (i = 0; i < ARRAY_SIZE(detail_fdinfo_names); i++)
		if (!strcmp(name, detail_fdinfo_names[i]))
			break;
	if (i == ARRAY_SIZE(detail_fdinfo_names))
		return;
	if (!strcmp(name, "[eventpoll]") && epoll_busy(file)) {
		d->detail |= CKPT_DETAIL_BUSY;
		return;
	}
	file->f_op->show_fdinfo(&m, file);
	if (seq_has_overflowed(&m)) {
		memset(d->fdinfo, 0, sizeof(d->fdinfo));
		return;
	}
	d->fdinfo[m.count] = '\0';
	d->detail |= CKPT_DETAIL_FDINFO;
}

/* an anonymous pipe: FIONREAD, F_GETPIPE_SZ and which ends are still open */
static void detail_pipe(struct file *file, struct ckpt_fd_detail *d)
{
	struct pipe_inode_info *pipe = file->private_data;
	unsigned int tail, mask;

	/* PIPEFS holds only pipes, whose private_data is the pipe */
	if (file_inode(file)->i_sb->s_magic != PIPEFS_MAGIC || !pipe)
		return;
	/*
	 * pipe_lock() would sleep for as long as a task of the tree holds the
	 * mutex: one stalled in a read or write on it (copying from a
	 * userfaultfd or FUSE page) holds it until it is let go.
	 */
	if (!mutex_trylock(&pipe->mutex)) {
		d->detail |= CKPT_DETAIL_BUSY;
		return;
	}
	mask = pipe->ring_size - 1;
	for (tail = pipe->tail; tail != pipe->head; tail++)
		d->pipe_bytes += pipe->bufs[tail & mask].len;
	d->pipe_size = pipe->max_usage * PAGE_SIZE;
	d->pipe_flags = (pipe->readers ? 0 : CKPT_PIPE_NO_READER) |
			(pipe->writers ? 0 : CKPT_PIPE_NO_WRITER);
	mutex_unlock(&pipe->mutex);
	d->detail |= CKPT_DETAIL_PIPE;
}

/*
 * lookup_add one fd's file and write its entry to @uentry; a failure
 * (the hash full, no memory, the entry unwritable) undoes what this fd
 * added, as LOOKUP_ADD does.
 */
static int fdwalk_add(struct ckpt_ctx *ctx, struct file *file, int fd,
		      bool cloexec, struct ckpt_fd_detail *d, bool detail,
		      void __user *uentry, u32 stride)
{
	const struct ckpt_obj_ops *ops = ckpt_obj_ops_table[CKPT_OBJ_FILE];
	struct ckpt_obj_hash *h = &ctx->objhash;
	struct ckpt_fd_entry *e = &d->entry;
	s64 next = h->next_objref, next_inode = 0;
	bool first, inode_first = false;
	int ret;

	/* a context holding its own file (or another's) would never close */
	if (file->f_op == &ckpt_fops) {
		ckpt_err(ctx, -EBADF, 0, "ioc_task_fds",
			 "fd %d is a /dev/ckpt context", fd);
		return -EBADF;
	}
	ret = ckpt_obj_lookup_add(h, file, ops, &first);
	if (ret < 0) {
		ckpt_err(ctx, ret, 0, "ckpt_obj_lookup_add", "file of fd %d%s",
			 fd, ret == -ENOSPC ? ": hash full" :
			 ret == -EBADFD ? ": not a checkpoint context" : "");
		return ret;
	}
	memset(d, 0, detail ? sizeof(*d) : sizeof(*e));
	e->fd = fd;
	e->objref = ret;
	e->flags = (cloexec ? CKPT_FD_CLOEXEC : 0) | (first ? CKPT_FD_FIRST : 0);
	if (first) {
		next_inode = h->next_objref;
		ret = ckpt_file_info_fill(h, file, &e->file, &inode_first);
		if (ret) {
			ckpt_err(ctx, ret, e->objref, "ckpt_file_info_fill",
				 "fd %d%s", fd,
				 ret == -ENOSPC ? ": hash full" : "");
			goto undo_file;
		}
		if (detail) {
			detail_link(file, d);
			detail_fdinfo(file, d);
			detail_pipe(file, d);
		}
	}
	if (!ckpt_copy_elem(uentry, stride, d, detail ? sizeof(*d) : sizeof(*e)))
		return 0;
	ret = -EFAULT;
	ckpt_err(ctx, ret, e->objref, "ioc_task_fds",
		 "entry of fd %d unwritable", fd);
	if (first) {
		if (inode_first)
			ckpt_obj_unadd(h, e->file.inode_objref, next_inode);
		else
			ckpt_obj_unmeet(h, e->file.inode_objref);
	}
undo_file:
	if (first)
		ckpt_obj_unadd(h, e->objref, next);
	else
		ckpt_obj_unmeet(h, e->objref);
	return ret;
}

/**
 * ckpt_task_fds - CKPT_IOC_TASK_FDS: lookup_add the files of a task's fds
 * @ctx: a checkpoint context (or one not used yet), locked
 * @a: the caller's request: pid, starttime, next_fd, nr, flags (DETAIL:
 *     entries are struct ckpt_fd_detail), entries; on return
 *     nr is the count of entries written and next_fd where to resume (-1:
 *     the table's end), whatever the result
 *
 * The caller's CAP_SYS_PTRACE was checked before the context was locked;
 * here its ptrace access to the task, LSMs included (ckpt_task_access()).
 * Each round holds the task's alloc_lock and the table's file_lock only
 * while taking references on at most FDWALK_ROUND files; the hash work
 * runs after.  The entries written before a failure stay valid, their
 * files in the hash (as in LOOKUP_ADD_BATCH).
 *
 * Return: 0, -EINVAL, -EBADFD, -ESRCH, -EPERM, -EBADF, -ENOSPC, -ENOMEM or
 * -EFAULT
 * (ckpt.h, CKPT_IOC_TASK_FDS).
 */
int ckpt_task_fds(struct ckpt_ctx *ctx, struct ckpt_task_fds *a)
{
	char __user *uentries = u64_to_user_ptr(a->entries);
	bool detail = a->flags & CKPT_TASK_FDS_DETAIL;
	unsigned int want = a->nr, i;
	u32 stride;
	struct ckpt_fd_detail *d;
	struct fdwalk_round *r;
	struct task_struct *task;
	int ret = 0;

	a->nr = 0;	/* what the header says if this fails before the walk */
	if (a->flags & ~CKPT_TASK_FDS_DETAIL || !want ||
	    want > CKPT_BATCH_MAX || a->next_fd < 0 || a->__pad) {
		ckpt_err(ctx, -EINVAL, 0, "ioc_task_fds",
			 "flags %#x nr %u next_fd %d, or non-zero padding",
			 a->flags, want, a->next_fd);
		return -EINVAL;
	}
	if (ckpt_elem_size(ctx, a->entry_size, detail ?
			   CKPT_FD_DETAIL_SIZE_VER0 : CKPT_FD_ENTRY_SIZE_VER0,
			   "ioc_task_fds", &stride))
		return -EINVAL;
	if (ctx->released || ctx->objhash.mode == CKPT_MODE_RESTART) {
		ckpt_err(ctx, -EBADFD, 0, "ioc_task_fds", "%s",
			 ctx->released ? "context already released" :
			 "not a checkpoint context");
		return -EBADFD;
	}
	task = ckpt_find_task(ctx, a->pid, a->starttime, "ioc_task_fds");
	if (IS_ERR(task))
		return PTR_ERR(task);
	/* as pidfd_getfd(): refused (EPERM) before anything is logged */
	ret = ckpt_task_access(task, a->pid);
	if (ret) {
		if (ret == -ESRCH)
			ckpt_err(ctx, ret, 0, "ioc_task_fds",
				 "task %d is exiting", a->pid);
		put_task_struct(task);
		return ret;
	}
	ret = walk_record(ctx, task);
	if (ret) {
		ckpt_err(ctx, ret, 0, "ioc_task_fds", "%s",
			 ret == -ENOSPC ? "too many tasks walked" : "no memory");
		put_task_struct(task);
		return ret;
	}
	/* the round's slots and one entry, off the stack: ~1.2 KiB */
	r = kmalloc(sizeof(*r), GFP_KERNEL);
	d = kmalloc(sizeof(*d), GFP_KERNEL);
	if (!r || !d || ckpt_fault()) {
		ret = -ENOMEM;
		ckpt_err(ctx, ret, 0, "ioc_task_fds", "no memory");
		goto out;
	}
	while (a->nr < want) {
		ret = fdwalk_round(task, a->next_fd, want - a->nr, r);
		if (ret) {
			ckpt_err(ctx, ret, 0, "ioc_task_fds",
				 "task %d has no files", a->pid);
			break;
		}
		for (i = 0; i < r->n; i++) {
			if (!ret) {
				ret = fdwalk_add(ctx, r->slot[i].file,
						 r->slot[i].fd, r->slot[i].cloexec,
						 d, detail,
						 uentries + (size_t)a->nr * stride,
						 stride);
				if (ret)
					a->next_fd = r->slot[i].fd;
				else
					a->nr++;
			}
			fput(r->slot[i].file);
		}
		if (ret)
			break;
		if (r->n < r->room) {
			a->next_fd = -1;	/* iterate_fd() reached the end */
			break;
		}
		a->next_fd = r->slot[r->n - 1].fd + 1;
		cond_resched();
	}
out:
	kfree(d);
	kfree(r);
	put_task_struct(task);
	return ret;
}
