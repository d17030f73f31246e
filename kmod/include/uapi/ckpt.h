/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ckpt.h - the ioctl ABI of /dev/ckpt (the image's format is ckpt_image.h).
 *
 * The module, the host build of its core and the cffi binding all read this
 * file; no layout below is written anywhere else.  docs/uapi.md documents
 * every ioctl.  Rules: fixed-width types
 * only, explicit padding, every struct a multiple of 8 bytes, no pointers
 * (user addresses travel as __u64), no kernel pointer ever leaves the kernel.
 *
 * Argument structs may grow at their end.  The size userspace passes is the
 * one encoded in the ioctl number; the module accepts any size from the first
 * version's (CKPT_*_SIZE_VER0) up: a shorter struct fails with EINVAL, a
 * longer one whose extra bytes are not all zero fails with E2BIG (the rule
 * of copy_struct_from_user(), as openat2(2) and clone3(2) have it), a
 * longer one with a zero tail is accepted.  Every array the module reads or
 * writes has its element size in its struct (item_size, entry_size,
 * leak_size): 0 there means the element's first version.
 *
 * Errors (returned as -1/errno by ioctl(2)), each with its standard meaning;
 * the error log (CKPT_IOC_ERRORS) says which case it was:
 *   EPERM     open(): the caller lacks CAP_CHECKPOINT_RESTORE and
 *             CAP_SYS_ADMIN in the initial user namespace; any ioctl: the
 *             caller's credentials (uids, gids, user namespace) differ from
 *             the opener's, or it has fewer permitted capabilities, and it
 *             lacks both capabilities (the rule of kcmp()
 *             and pidfd_getfd(): a leaked context fd is worth nothing);
 *             TASK_FDS, TASK_CREDS: the caller or the opener lacks
 *             CAP_SYS_PTRACE, or
 *             ptrace's access check (LSMs included) refuses the caller the
 *             task; any ioctl of a context that walked tasks: the caller is
 *             not the first walker and that check refuses it one of them
 *             (or one is gone).  A refused caller changes nothing, not even
 *             the error log.
 *   EINTR     a signal arrived while waiting for the context's lock
 *             (nothing was changed or logged)
 *   ENOTTY    unknown ioctl; the TEST_* ioctls when the module was not
 *             loaded with debug=1
 *   E2BIG     argument struct longer than known, with a non-zero tail
 *   EMSGSIZE  batch count above CKPT_BATCH_MAX, or a tag or error log
 *             buffer above CKPT_TAGS_MAX or CKPT_ERR_LOG_MAX entries
 *   ENOSPC    a per-context limit is reached: hash entries (max_objs),
 *             deferqueue entries (max_defers), test objects (max_tests),
 *             the tag log (CKPT_TAGS_MAX), or no objref is left (INT_MAX
 *             given).  See "limits" below.
 *   EINVAL    argument struct shorter than its first version; an element
 *             size below its first version or above CKPT_ITEM_SIZE_MAX;
 *             objref <= 0, unknown type/policy/action/flag, non-zero
 *             padding, a non-zero input field the ioctl does not use, a
 *             limit above the module's ceiling, a DEFER_FAIL errno outside
 *             1..CKPT_ERRNO_MAX; objref names an object of another type;
 *             the context is in the wrong state for the ioctl: a checkpoint
 *             operation on a restart context or the reverse (DEFER_DROP is
 *             a restart operation), any hash operation after RELEASE
 *   ENOENT    objref names no object in this context, or one whose hash
 *             reference was already dropped (a deferred DROP ran)
 *   EEXIST    objref already used (insert)
 *   EBADF     fd is not open in the caller, or is a /dev/ckpt context
 *   ESRCH     TASK_FDS, TASK_CREDS: no such task, another start time
 *             (a reused pid), a kernel thread, or a task without files or
 *             mm (exiting)
 *   EBUSY     SETUP after objects were added; CONTAINED found leaks
 *             (its output is written)
 *   EFAULT    bad user address (nothing was changed: a failed lookup_add
 *             or insert is undone; a batch FETCH item installs its fd only
 *             once its handle is written, except on kernels before 6.8,
 *             where an item whose handle became unwritable after it was
 *             probed keeps its fd installed, its number in the error log)
 *   ENOMEM    allocation failed (nothing was changed)
 * An error a deferred FAIL returns (DEFER_RUN) is the errno it was given.
 * Every error but EPERM and EINTR also appends an entry to the context's
 * error log.
 *
 * Input fields an ioctl does not use (outputs, fields of another action)
 * must be zero (EINVAL), so that they can be given a meaning later.
 *
 * A context holds what it references until it is released or closed.  A
 * unix socket that carries its own context fd in flight (SCM_RIGHTS sent,
 * never received) and is itself in that context's hash forms a cycle that
 * only the unix garbage collector could break, and it does not know about
 * the hash: the context is never released.  Do not insert a socket whose
 * queue holds the context's fd.
 */
#ifndef _UAPI_LINUX_CKPT_H
#define _UAPI_LINUX_CKPT_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define CKPT_ABI_VERSION	5	/* 3: file identity, TASK_FDS;
				 * 4: TASK_FDS_DETAIL;
				 * 5: FETCH returns its fd, access by
				 * ptrace's rule, NSFS, PIDFD, DETAIL_BUSY,
				 * VERSION, element sizes, INSERT _IOW,
				 * standard errnos, TEST_* only in debug */
#define CKPT_DEVICE		"/dev/ckpt"

/* ---- objects ----------------------------------------------------------- */

/* Object types: each has an ops table (ref_grab, ref_drop, name). */
enum ckpt_obj_type {
	CKPT_OBJ_NONE = 0,
	CKPT_OBJ_FILE = 1,	/* struct file: handle is an fd of the caller */
	CKPT_OBJ_INODE = 2,	/* struct inode (pipe identity): handle is an fd */
	CKPT_OBJ_TEST = 3,	/* module-owned counted blob: handle is its id */
	CKPT_OBJ_MAX
};

/*
 * Kinds of file, from the filesystem (its s_magic) first, then the inode's
 * mode: a file of a pseudo filesystem whose inodes say S_IFREG (nsfs, pidfs)
 * is not REG.
 */
enum ckpt_file_kind {
	CKPT_FILE_OTHER = 0,
	CKPT_FILE_REG = 1,
	CKPT_FILE_DIR = 2,
	CKPT_FILE_FIFO = 3,	/* named FIFO */
	CKPT_FILE_PIPE = 4,	/* anonymous pipe (pipefs) */
	CKPT_FILE_CHR = 5,
	CKPT_FILE_BLK = 6,
	CKPT_FILE_SOCK = 7,
	CKPT_FILE_ANON = 8,	/* anon inode: eventfd, epoll, signalfd, ... */
	/* 9..17: the image's own kinds (ckpt_image.h), never reported here */
	CKPT_FILE_NSFS = 18,	/* a namespace file (/proc/PID/ns/...) */
	CKPT_FILE_PIDFD = 19,	/* a pidfd (pidfs since 6.9, an anon inode
				 * before) */
	CKPT_FILE_KIND_MAX	/* above every kind of both enums */
};

/* f_mode bits as exported (the kernel's internal FMODE_* bits stay inside) */
#define CKPT_FMODE_READ		0x1
#define CKPT_FMODE_WRITE	0x2

/*
 * The file record body the module fills the first time it sees a file.
 * Since ABI 3 it holds the file's identity as fstat(2) gives it to the
 * caller: st_dev and st_rdev encoded as stat(2) does (new_encode_dev()),
 * uid and gid in the caller's user namespace (overflow ids if unmapped).
 */
struct ckpt_file_info {
	__u32 kind;		/* enum ckpt_file_kind */
	__u32 f_flags;		/* O_* flags of the open file description */
	__u32 f_mode;		/* CKPT_FMODE_* */
	__s32 inode_objref;	/* objref of the file's inode (CKPT_OBJ_INODE) */
	__s64 pos;		/* file position */
	/* since ABI 3 */
	__u64 st_dev;
	__u64 st_ino;
	__u64 st_rdev;
	__s64 st_size;
	__u32 st_mode;
	__u32 st_uid;
	__u32 st_gid;
	__u32 st_nlink;
};

/* ckpt_obj_arg.flags */
#define CKPT_OBJ_FIRST		0x1	/* out (lookup_add): object is new */
#define CKPT_OBJ_CLOEXEC	0x2	/* in (fetch): new fd gets O_CLOEXEC */

/*
 * One object operation; also the element of a batch.
 *   lookup_add (checkpoint): in type, handle; out objref, flags, file.
 *   insert (restart):        in type, handle, objref (> 0, unused).
 *   fetch (restart):         in type, objref, flags; the new handle (a
 *                            new fd for FILE, the id for TEST; INODE:
 *                            EINVAL) is the ioctl's value, as
 *                            pidfd_getfd()'s fd is (the struct is not
 *                            written); a batch item's goes to its handle.
 * Fields that are not an input of the operation must be zero (EINVAL).
 * FETCH works on a checkpoint context too; lookup by objref is O(1) in
 * both modes.  The new fd goes through receive_fd() (the LSM's
 * file-receive hook).  An installed fd is never closed again.
 */
struct ckpt_obj_arg {
	__u32 type;		/* enum ckpt_obj_type */
	__s32 handle;		/* fd for FILE/INODE, id for TEST */
	__s32 objref;
	__u32 flags;		/* CKPT_OBJ_* */
	struct ckpt_file_info file;	/* FILE, first time only */
};
#define CKPT_OBJ_ARG_SIZE_VER0	40
#define CKPT_OBJ_ARG_SIZE_VER1	88	/* ABI 3: the file's identity */

/*
 * A batch of ckpt_obj_arg.  Items run in order; the first failure stops the
 * batch and the ioctl returns its errno.  Items before it stay done (the
 * objhash never removes one object) and 'done' says how many.
 */
struct ckpt_batch {
	__u64 items;		/* user address of struct ckpt_obj_arg[count] */
	__u32 count;		/* at most CKPT_BATCH_MAX */
	__u32 item_size;	/* sizeof(struct ckpt_obj_arg) of the caller */
	__u32 done;		/* out: items completed (in: 0) */
	__u32 __pad;
};
#define CKPT_BATCH_SIZE_VER0	24
#define CKPT_BATCH_MAX		(1U << 16)
#define CKPT_ITEM_SIZE_MAX	4096	/* any element size above: EINVAL */

/*
 * Leak detection (linux-cr's ckpt_obj_contained()): after every task was
 * collected, each object must be referenced exactly as often as lookup_add
 * met it.  What is counted:
 *   FILE   file_count() less the hash's own reference, less the mappings of
 *          the file (VMAs whose vm_file is it, found through its
 *          address_space): a mapping is not a holder the image restores,
 *          whoever maps it.  Every other reference counts: fd table slots of
 *          any process, the caller's own included (the coordinator's
 *          pidfd_getfd() copies are holders until it closes them: call
 *          CONTAINED with only the hash holding what it collected), files
 *          in flight in a unix socket, and short-lived kernel references
 *          (a concurrent read()).
 *   INODE  of a pipe or FIFO: the files open on it (pipe->files); each
 *          distinct file lookup_add met counts once.
 * More references than 'users' means something outside the collected tree
 * holds the object; fewer is not reported (fd tables shared between tasks
 * are met once per task).  Other types (TEST, other inodes) are not
 * checked.  A context with nothing added yet has no leaks; a restart
 * context: EBADFD.
 */
struct ckpt_leak {
	__s32 objref;
	__u32 type;		/* enum ckpt_obj_type */
	__u64 users;		/* references collected (lookup_add hits) */
	__u64 refs;		/* references the kernel counts */
};
#define CKPT_LEAK_SIZE_VER0	24

struct ckpt_contained {
	__u64 buf;		/* user address of struct ckpt_leak[count] */
	__u32 count;		/* in: capacity (<= CKPT_BATCH_MAX); out: copied */
	__u32 total;		/* out: leaks found (EBUSY when not 0); in: 0 */
	/* since ABI 5 */
	__u32 leak_size;	/* sizeof(struct ckpt_leak) of the caller;
				 * 0: CKPT_LEAK_SIZE_VER0 */
	__u32 __pad;
};
#define CKPT_CONTAINED_SIZE_VER0	16
#define CKPT_CONTAINED_SIZE_VER1	24	/* ABI 5: leak_size */

/* ---- a task's fd table ------------------------------------------------ */

/* ckpt_fd_entry.flags; CKPT_FD_CLOEXEC is also the image's FD record flag */
#define CKPT_FD_CLOEXEC		0x1	/* the fd is close-on-exec */
#define CKPT_FD_FIRST		0x2	/* the file is new in the hash */

/*
 * One fd of a task (CKPT_IOC_TASK_FDS): its number, its file's objref (the
 * file is lookup_add'ed), and the file's record body when FIRST.
 */
struct ckpt_fd_entry {
	__s32 fd;
	__u32 flags;		/* CKPT_FD_CLOEXEC, CKPT_FD_FIRST */
	__s32 objref;		/* the file's (CKPT_OBJ_FILE) */
	__u32 __pad;
	struct ckpt_file_info file;	/* FIRST only, else zero */
};
#define CKPT_FD_ENTRY_SIZE_VER0	88

/* ckpt_fd_detail.detail: which of its parts the module filled */
#define CKPT_DETAIL_LINK	0x1	/* link */
#define CKPT_DETAIL_FDINFO	0x2	/* fdinfo */
#define CKPT_DETAIL_PIPE	0x4	/* pipe_* */
#define CKPT_DETAIL_BUSY	0x8	/* a lock of the file was held: the
					 * part needing it is absent */

/* ckpt_fd_detail.pipe_flags; also the image's PIPE record flags */
#define CKPT_PIPE_NO_READER	0x1	/* read end closed everywhere */
#define CKPT_PIPE_NO_WRITER	0x2	/* write end closed everywhere */

#define CKPT_DETAIL_TEXT_MAX	256	/* link, fdinfo: bytes with the NUL */

/*
 * With CKPT_TASK_FDS_DETAIL, one fd's entry and, when FIRST, what userspace
 * would otherwise read from /proc or ask a copy of the fd, one syscall each
 * while the tree is frozen:
 *   link:   readlink(2) of /proc/PID/fd/FD (d_path(), the caller's root);
 *           absent when it does not fit;
 *   fdinfo: the file's own lines of /proc/PID/fdinfo/FD (after pos, flags,
 *           mnt_id and ino), for eventfd, epoll, signalfd and timerfd only;
 *           absent when they do not fit (an epoll with many items);
 *   pipe_*: an anonymous pipe's state, as FIONREAD, F_GETPIPE_SZ and the
 *           open ends count it (CKPT_PIPE_NO_READER, CKPT_PIPE_NO_WRITER).
 * The walk never sleeps on a lock a task of the tree may hold: a pipe whose
 * mutex, or an epoll whose mutex, is held (a task stalled inside a read,
 * write or epoll_wait() on it) gets BUSY instead of pipe_* or fdinfo;
 * userspace cannot read that state either until the holder moves (retry
 * once the tree is thawed, or refuse).  The identity fields are what the
 * kernel has cached (AT_STATX_DONT_SYNC): a FUSE daemon or a network
 * server is not asked.
 * Text is NUL-terminated; unused bytes are zero.
 */
struct ckpt_fd_detail {
	struct ckpt_fd_entry entry;
	__u32 detail;		/* CKPT_DETAIL_* */
	__u32 pipe_bytes;	/* bytes buffered */
	__u32 pipe_size;	/* its capacity in bytes */
	__u32 pipe_flags;	/* CKPT_PIPE_NO_READER, CKPT_PIPE_NO_WRITER */
	char link[CKPT_DETAIL_TEXT_MAX];
	char fdinfo[CKPT_DETAIL_TEXT_MAX];
};
#define CKPT_FD_DETAIL_SIZE_VER0	616

/* ckpt_task_fds.flags */
#define CKPT_TASK_FDS_DETAIL	0x1	/* entries are struct ckpt_fd_detail */

/*
 * Walk the fd table of a task from next_fd up, lookup_add each open file
 * and write one ckpt_fd_entry per fd, in fd order, up to nr.  Call again
 * with the returned next_fd until it is -1 (the table's end); fds opened
 * or closed meanwhile may or may not be seen.  A checkpoint operation (a
 * restart context: EBADFD).
 *
 * The caller needs, besides what open() checks, CAP_SYS_PTRACE in the
 * initial user namespace, and the context's opener had to hold it too; and
 * ptrace's access check must allow it the task, as pidfd_getfd() asks:
 * the module opens /proc/PID/mem as the caller, which runs that check
 * (ptrace_may_access() is not exported), so /proc must be the caller's pid
 * namespace's procfs, mounted at /proc (EPERM, nothing logged).  From then
 * on every ioctl of the context asks the same of its caller, for every
 * task walked, unless it is the first walker's credentials.  pid is in
 * the caller's pid namespace; starttime (field 22 of /proc/PID/stat, in
 * clock ticks, as the caller reads it) ties the number to the task the
 * caller froze: another task (a reused pid), a kernel thread or a task
 * without files: ESRCH.  Unknown flags, nr 0 or above CKPT_BATCH_MAX,
 * next_fd < 0: EINVAL.  An fd on a /dev/ckpt context: EBADF (next_fd is
 * that fd).  On an error nr (then below the room given) and next_fd still
 * say how far the walk went: the entries before stay written and their
 * files stay in the hash (as in a batch); an unwritable entry (EFAULT) is
 * undone and nothing else is.  An unwritable header fails first (EFAULT,
 * nr left as given, nothing done).
 */
struct ckpt_task_fds {
	__s32 pid;
	__u32 nr;		/* in: room in entries; out: entries written */
	__u64 starttime;	/* /proc/PID/stat field 22 */
	__s32 next_fd;		/* in: first fd to look at; out: where to
				 * resume, -1 at the table's end */
	__u32 flags;		/* CKPT_TASK_FDS_DETAIL */
	__u64 entries;		/* user address of struct ckpt_fd_entry[nr]
				 * (ckpt_fd_detail[nr] with DETAIL) */
	/* since ABI 5 */
	__u32 entry_size;	/* sizeof(either) of the caller; 0: its
				 * first version's */
	__u32 __pad;
};
#define CKPT_TASK_FDS_SIZE_VER0	32
#define CKPT_TASK_FDS_SIZE_VER1	40	/* ABI 5: entry_size */

/* ---- a task's credentials --------------------------------------------- */

/*
 * What limits a task beyond its ids, as its real credentials (the ones
 * /proc/PID/status shows) have it: securebits, which /proc does not show,
 * and the five capability sets, each a mask of bit CAP_* (raw, as the
 * task's own user namespace reads them).  Access exactly as TASK_FDS:
 * CAP_SYS_PTRACE of the caller and of the opener (EPERM), ptrace's access
 * check allowing the caller the task, LSMs included (EPERM, nothing
 * logged); pid and starttime name the task as they do there (ESRCH: no
 * such task, another start time, a kernel thread, a task without mm).
 * The task is not recorded as walked: nothing of it enters the context.
 * Any context state.  flags, the outputs and padding must be zero on
 * input (EINVAL).
 */
struct ckpt_task_creds {
	__s32 pid;
	__u32 flags;		/* none yet: 0 */
	__u64 starttime;	/* /proc/PID/stat field 22 */
	/* out */
	__u32 securebits;	/* SECBIT_* of <linux/securebits.h> */
	__u32 __pad;
	__u64 cap_inheritable;
	__u64 cap_permitted;
	__u64 cap_effective;
	__u64 cap_bset;		/* the bounding set */
	__u64 cap_ambient;
};
#define CKPT_TASK_CREDS_SIZE_VER0	64

/* ---- context setup ----------------------------------------------------- */

/*
 * When the objhash is cleared (references dropped, entries moved to the free
 * list) and freed (entries and buckets kfree'd), relative to CKPT_IOC_RELEASE,
 * the moment restarted tasks are let go (seed 000).
 */
enum ckpt_policy {
	CKPT_POLICY_CLEAR_EARLY = 0,	/* clear at release, free at teardown */
	CKPT_POLICY_CLEAR_AT_END = 1,	/* clear and free at teardown */
	CKPT_POLICY_FREE_UPFRONT = 2,	/* clear and free at release */
	CKPT_POLICY_MAX
};

#define CKPT_HASH_BITS_DEFAULT	10	/* the seeds' CKPT_OBJ_HASH_NBITS */
#define CKPT_HASH_BITS_MIN	1
#define CKPT_HASH_BITS_MAX	20

/* ckpt_setup.flags */
#define CKPT_SETUP_AUTOGROW	0x1	/* double buckets past 2 objects each */

/*
 * Limits: every per-context collection is bounded, so that nothing a caller
 * sends pins unbounded kernel memory.  A full collection refuses one more
 * with ENOSPC.  SETUP may choose each limit (0: the default below) up to a
 * ceiling the module parameter of the same name sets
 * (/sys/module/ckpt/parameters/max_objs, ...; defaults CKPT_*_CEILING);
 * above it: EINVAL.  The tag log (CKPT_TAGS_MAX) and the error log (a ring
 * of CKPT_ERR_LOG_MAX) have fixed sizes.  A DROP holds one reference per
 * queued entry, so max_defers also bounds repeated DROPs of one objref.
 */
#define CKPT_MAX_OBJS_DEFAULT	(1U << 20)	/* hash entries */
#define CKPT_MAX_DEFERS_DEFAULT	(1U << 16)	/* queued deferqueue entries */
#define CKPT_MAX_TESTS_DEFAULT	(1U << 16)	/* live test objects made */
#define CKPT_MAX_OBJS_CEILING	(1U << 22)
#define CKPT_MAX_DEFERS_CEILING	(1U << 20)
#define CKPT_MAX_TESTS_CEILING	(1U << 20)

struct ckpt_setup {
	__u32 policy;		/* enum ckpt_policy */
	__u32 hash_bits;	/* 0: CKPT_HASH_BITS_DEFAULT */
	__u32 flags;		/* CKPT_SETUP_* */
	__u32 __pad;
	/* since ABI 2; a 16-byte struct gets the defaults */
	__u32 max_objs;		/* 0: CKPT_MAX_OBJS_DEFAULT */
	__u32 max_defers;	/* 0: CKPT_MAX_DEFERS_DEFAULT */
	__u32 max_tests;	/* 0: CKPT_MAX_TESTS_DEFAULT */
	__u32 __pad2;
};
#define CKPT_SETUP_SIZE_VER0	16
#define CKPT_SETUP_SIZE_VER1	32	/* ABI 2: the limits */

/* ---- deferqueue (seed 002) --------------------------------------------- */

/* Actions userspace may enqueue; it cannot pass function pointers. */
enum ckpt_defer_action {
	CKPT_DEFER_NONE = 0,
	CKPT_DEFER_LOG = 1,	/* append 'tag' to the tag log */
	CKPT_DEFER_DROP = 2,	/* drop the hash's reference of 'objref' */
	CKPT_DEFER_FAIL = 3,	/* fail with errno 'arg' (1..CKPT_ERRNO_MAX) */
	CKPT_DEFER_EPOLL = 4,	/* reserved: add an epoll item (EINVAL) */
	CKPT_DEFER_ACTION_MAX
};

/* the last errno userspace may see (EHWPOISON); above are kernel-internal */
#define CKPT_ERRNO_MAX		133

/*
 * DROP is a restart operation (a checkpoint context: EBADFD; there a dropped
 * entry would stay findable by pointer without a reference).  It resolves
 * objref when enqueued (ENOENT/ENOMSG then) and holds its own reference on
 * the object until it runs or the queue is destroyed unrun.  Fields the
 * action does not use must be zero: LOG uses tag, DROP objref, FAIL arg.
 *
 * CKPT_IOC_RELEASE destroys whatever is still queued, unrun (each entry's
 * reference dropped): work not run by then is not run, so no reference
 * outlives what the policy promises.  linux-cr's restart ran its queue as a
 * step of its own before letting the tasks go, which DEFER_RUN is here;
 * running it inside RELEASE could fail half way through the one call that
 * must always succeed.
 */
struct ckpt_defer {
	__u32 action;		/* enum ckpt_defer_action */
	__s32 objref;		/* DROP */
	__s32 arg;		/* FAIL: positive errno */
	__u32 __pad;
	__u64 tag;		/* LOG */
};
#define CKPT_DEFER_SIZE_VER0	24

/* Tag log written by CKPT_DEFER_LOG, read by CKPT_IOC_TAGS. */
#define CKPT_TAGS_MAX		4096

struct ckpt_tags {
	__u64 buf;		/* user address of __u64[count] */
	__u32 count;		/* in: capacity (<= CKPT_TAGS_MAX) */
	__u32 total;		/* out: tags logged so far; in: 0 */
};
#define CKPT_TAGS_SIZE_VER0	16

/* ---- error log (ckpt_write_err, seed 003) ------------------------------- */

#define CKPT_ERR_LOG_MAX	64	/* entries kept; older ones dropped */
#define CKPT_ERR_FUNC_LEN	32
#define CKPT_ERR_MSG_LEN	96

struct ckpt_err_entry {
	__u32 seq;		/* 1, 2, ...: position in the context's log */
	__s32 err;		/* negative errno */
	__s32 objref;		/* 0 when none */
	__u32 __pad;
	char func[CKPT_ERR_FUNC_LEN];	/* NUL-terminated */
	char msg[CKPT_ERR_MSG_LEN];	/* NUL-terminated, no kernel pointers */
};
#define CKPT_ERR_ENTRY_SIZE_VER0	144

/* Copy the entries with seq > since, oldest first. */
struct ckpt_errors {
	__u64 buf;		/* user address of struct ckpt_err_entry[count] */
	__u32 count;		/* in: capacity (<= CKPT_ERR_LOG_MAX); out: copied */
	__u32 since;		/* in: last seq already seen */
	__u32 last;		/* out: newest seq; in: 0 */
	__u32 entry_size;	/* sizeof(struct ckpt_err_entry) of the caller;
				 * 0: CKPT_ERR_ENTRY_SIZE_VER0 (ABI 5) */
};
#define CKPT_ERRORS_SIZE_VER0	24

/* ---- version and features ---------------------------------------------- */

/* ckpt_version.features */
#define CKPT_FEATURE_TASK_FDS	0x1	/* CKPT_IOC_TASK_FDS (ABI 3) */
#define CKPT_FEATURE_FDS_DETAIL	0x2	/* CKPT_TASK_FDS_DETAIL (ABI 4) */
#define CKPT_FEATURE_PTRACE_ACCESS 0x4	/* walks checked as pidfd_getfd()
					 * is, LSMs included (ABI 5) */
#define CKPT_FEATURE_DEBUG	0x8	/* loaded with debug=1: the TEST_*
					 * ioctls and fail_nth work */
#define CKPT_FEATURE_TASK_CREDS	0x10	/* CKPT_IOC_TASK_CREDS */

/*
 * What the module speaks (CKPT_IOC_VERSION), for userspace to check before
 * anything else: the ABI version of its ckpt.h and the features it has.
 * Allowed on any context in any state; writes only.
 */
struct ckpt_version {
	__u32 abi_version;	/* CKPT_ABI_VERSION */
	__u32 __pad;
	__u64 features;		/* CKPT_FEATURE_* */
};
#define CKPT_VERSION_SIZE_VER0	16

/* ---- statistics --------------------------------------------------------- */

/* ckpt_stats.state */
#define CKPT_STATE_CHECKPOINT	0x1	/* lookup_add used: keyed by pointer */
#define CKPT_STATE_RESTART	0x2	/* insert used: keyed by objref */
#define CKPT_STATE_RELEASED	0x4
#define CKPT_STATE_CLEARED	0x8
#define CKPT_STATE_FREED	0x10

struct ckpt_stats {
	/* this context */
	__u32 policy;
	__u32 state;		/* CKPT_STATE_* */
	__u32 hash_bits;
	__u32 nr_buckets;
	__u64 nr_objs;		/* entries in the hash */
	__u64 nr_free;		/* entries on the free list */
	__u32 max_chain;	/* longest bucket chain */
	__u32 nr_grows;		/* bucket array doublings */
	__s32 next_objref;	/* INT_MAX once objref INT_MAX is used */
	__u32 defer_pending;
	__u64 lookups;		/* hash probes (lookup_add, fetch, ...) */
	__u64 probes;		/* entries compared by those probes */
	/* module-wide, all contexts: the live counts return to 0 */
	__u64 mod_contexts;
	__u64 mod_objs;		/* ckpt_obj entries allocated, not kfree'd */
	__u64 mod_defers;	/* deferqueue entries allocated */
	__u64 mod_test_live;	/* test objects not freed */
	__u64 mod_test_grabs;	/* cumulative ref_grab of test objects */
	__u64 mod_test_drops;	/* cumulative ref_drop of test objects */
	__u64 mod_test_frees;	/* cumulative frees of test objects */
	/* since ABI 2: this context's limits (ckpt_setup) and test objects */
	__u32 max_objs;
	__u32 max_defers;
	__u32 max_tests;
	__u32 nr_tests;		/* test objects made here and alive */
};
#define CKPT_STATS_SIZE_VER0	120
#define CKPT_STATS_SIZE_VER1	136	/* ABI 2: limits, nr_tests */

/* ---- test objects ------------------------------------------------------- */

/*
 * A module-owned refcounted blob, private to the context that made it.  The
 * creator holds one reference (its handle) until CKPT_IOC_TEST_PUT or close.
 * PUT and STAT take id; refs, grabs and drops must be zero on input.  The
 * TEST_* ioctls exist only for the tests, as the fail_nth knob does: unless
 * the module was loaded with debug=1 (or root wrote 1 to
 * /sys/module/ckpt/parameters/debug) they fail with ENOTTY.
 */
struct ckpt_test_obj {
	__s32 id;		/* out (new), in (put, stat) */
	__u32 refs;		/* out (stat): current reference count */
	__u64 grabs;		/* out (stat): ref_grab calls on it */
	__u64 drops;		/* out (stat): ref_drop calls on it */
};
#define CKPT_TEST_OBJ_SIZE_VER0	24

/* ---- ioctls ------------------------------------------------------------- */

/*
 * 0xC7: free in Documentation/userspace-api/ioctl/ioctl-number.rst (0xCB,
 * the first version's, is the CBM serial IEC bus's).
 */
#define CKPT_IOC_MAGIC		0xC7

#define CKPT_IOC_SETUP		_IOW(CKPT_IOC_MAGIC, 0x01, struct ckpt_setup)
#define CKPT_IOC_STATS		_IOR(CKPT_IOC_MAGIC, 0x02, struct ckpt_stats)
#define CKPT_IOC_ERRORS		_IOWR(CKPT_IOC_MAGIC, 0x03, struct ckpt_errors)
#define CKPT_IOC_VERSION	_IOR(CKPT_IOC_MAGIC, 0x04, struct ckpt_version)
#define CKPT_IOC_LOOKUP_ADD	_IOWR(CKPT_IOC_MAGIC, 0x10, struct ckpt_obj_arg)
/* writes nothing back (ABI 5: _IOW) */
#define CKPT_IOC_INSERT		_IOW(CKPT_IOC_MAGIC, 0x11, struct ckpt_obj_arg)
/* returns the new fd (or test id), as pidfd_getfd() does (ABI 5) */
#define CKPT_IOC_FETCH		_IOW(CKPT_IOC_MAGIC, 0x12, struct ckpt_obj_arg)
#define CKPT_IOC_LOOKUP_ADD_BATCH _IOWR(CKPT_IOC_MAGIC, 0x18, struct ckpt_batch)
#define CKPT_IOC_INSERT_BATCH	_IOWR(CKPT_IOC_MAGIC, 0x19, struct ckpt_batch)
#define CKPT_IOC_FETCH_BATCH	_IOWR(CKPT_IOC_MAGIC, 0x1a, struct ckpt_batch)
/* Checkpoint: a task's fds, their files lookup_add'ed (ABI 3). */
#define CKPT_IOC_TASK_FDS	_IOWR(CKPT_IOC_MAGIC, 0x1c, struct ckpt_task_fds)
/* A task's securebits and capability sets (feature TASK_CREDS). */
#define CKPT_IOC_TASK_CREDS	_IOWR(CKPT_IOC_MAGIC, 0x1d, struct ckpt_task_creds)
/* Checkpoint: list objects referenced from outside; EBUSY if any. */
#define CKPT_IOC_CONTAINED	_IOWR(CKPT_IOC_MAGIC, 0x1b, struct ckpt_contained)
/* Let restarted tasks go: destroy the unrun deferqueue, clear/free the hash
 * per policy.  No hash op after it. */
#define CKPT_IOC_RELEASE	_IO(CKPT_IOC_MAGIC, 0x20)
#define CKPT_IOC_DEFER_ADD	_IOW(CKPT_IOC_MAGIC, 0x30, struct ckpt_defer)
/* Run the queue in FIFO order: returns the count run, or the first error
 * (entries after the failing one stay queued). */
#define CKPT_IOC_DEFER_RUN	_IO(CKPT_IOC_MAGIC, 0x31)
#define CKPT_IOC_TAGS		_IOWR(CKPT_IOC_MAGIC, 0x32, struct ckpt_tags)
#define CKPT_IOC_TEST_NEW	_IOR(CKPT_IOC_MAGIC, 0x40, struct ckpt_test_obj)
#define CKPT_IOC_TEST_PUT	_IOW(CKPT_IOC_MAGIC, 0x41, struct ckpt_test_obj)
#define CKPT_IOC_TEST_STAT	_IOWR(CKPT_IOC_MAGIC, 0x42, struct ckpt_test_obj)

#endif /* _UAPI_LINUX_CKPT_H */
