/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ckpt.h - the one ABI of /dev/ckpt and of the checkpoint image.
 *
 * The module, the host build of its core and the cffi binding all read this
 * file; no layout below is written anywhere else.  Rules: fixed-width types
 * only, explicit padding, every struct a multiple of 8 bytes, no pointers
 * (user addresses travel as __u64), no kernel pointer ever leaves the kernel.
 *
 * Argument structs may grow at their end.  The size userspace passes is the
 * one encoded in the ioctl number; the module accepts any size from the first
 * version's (CKPT_*_SIZE_VER0) up: a shorter struct fails with EPROTO, a longer
 * one whose extra bytes are not all zero fails with E2BIG (the rule of
 * copy_struct_from_user()), a longer one with a zero tail is accepted.
 *
 * Errors (returned as -1/errno by ioctl(2)); each is distinct on purpose:
 *   EPERM     open(): the caller lacks CAP_CHECKPOINT_RESTORE and
 *             CAP_SYS_ADMIN in the initial user namespace; any ioctl: the
 *             caller's credentials (uids, gids, user namespace) differ from
 *             the opener's, or it has fewer permitted capabilities, and it
 *             lacks both capabilities (the rule of kcmp()
 *             and pidfd_getfd(): a leaked context fd is worth nothing);
 *             TASK_FDS: the caller or the opener lacks CAP_SYS_PTRACE.  A
 *             refused caller changes nothing, not even the error log.
 *   EINTR     a fatal signal arrived while waiting for the context's lock
 *             (nothing was changed or logged)
 *   ENOTTY    unknown ioctl
 *   EPROTO    argument struct shorter than its first version
 *   E2BIG     argument struct longer than known, with a non-zero tail, or
 *             a batch item_size above CKPT_ITEM_SIZE_MAX
 *   EMSGSIZE  batch count above CKPT_BATCH_MAX, or a tag or error log
 *             buffer above CKPT_TAGS_MAX or CKPT_ERR_LOG_MAX entries
 *   ENOSPC    a per-context limit is reached: hash entries (max_objs),
 *             deferqueue entries (max_defers), test objects (max_tests),
 *             the tag log (CKPT_TAGS_MAX), or no objref is left (INT_MAX
 *             given).  See "limits" below.
 *   EINVAL    objref <= 0, unknown type/policy/action/flag, non-zero padding,
 *             a non-zero input field the ioctl does not use, a limit above
 *             the module's ceiling, a DEFER_FAIL errno outside
 *             1..CKPT_ERRNO_MAX
 *   ENOENT    objref names no object in this context
 *   EEXIST    objref already used (insert)
 *   ENOMSG    objref names an object of another type
 *   ESTALE    object's hash reference was already dropped (deferred drop)
 *   EBADF     fd is not open in the caller, or is a /dev/ckpt context
 *   ESRCH     TASK_FDS: no such task, another start time (a reused pid),
 *             a kernel thread, or a task without files
 *   EBADFD    context in the wrong state: checkpoint op on a restart context
 *             or the reverse (DEFER_DROP is a restart op), or any hash op
 *             after release
 *   EBUSY     setup after objects were added
 *   EFAULT    bad user address (nothing was changed: FETCH installs its fd
 *             only once the result is written, a failed lookup_add or insert
 *             is undone)
 *   ENOMEM    allocation failed (nothing was changed)
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

#define CKPT_ABI_VERSION	4	/* 3: file identity, TASK_FDS;
				 * 4: TASK_FDS_DETAIL */
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

/* Kinds of file, from the inode mode and filesystem. */
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
	/* image only: the coordinator resolves ANON to what it can save */
	CKPT_FILE_EVENTFD = 9,
	CKPT_FILE_EPOLL = 10,
	CKPT_FILE_SIGNALFD = 11,	/* its mask in a SIGNALFD record */
	CKPT_FILE_TIMERFD = 12,	/* its settings in a TIMERFD record */
	CKPT_FILE_MEMFD = 13,	/* path: its name; contents in CONTENTS */
	CKPT_FILE_DELETED = 14,	/* unlinked regular file: path where it was
				 * (no " (deleted)"); contents in CONTENTS */
	/* the tree's terminal: a tty or pty on any fd, any character device
	 * on fds 0-2 (a console port); followed by a TTY record */
	CKPT_FILE_TTY = 15,
	CKPT_FILE_UNIX = 17,	/* unix socket (or, external, another family) */
	CKPT_FILE_KIND_MAX
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
 *   fetch (restart):         in type, objref, flags; out handle (a new fd
 *                            for FILE, the id for TEST; INODE: EINVAL).
 * Fields that are not an input of the operation must be zero (EINVAL).
 * FETCH works on a checkpoint context too; lookup by objref is O(1) in
 * both modes.  The new fd goes through receive_fd() (the LSM's
 * file-receive hook) and is installed only once the handle is written
 * back: EFAULT leaves no fd behind.
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
#define CKPT_ITEM_SIZE_MAX	4096	/* item_size above: E2BIG */

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

struct ckpt_contained {
	__u64 buf;		/* user address of struct ckpt_leak[count] */
	__u32 count;		/* in: capacity (<= CKPT_BATCH_MAX); out: copied */
	__u32 total;		/* out: leaks found (EBUSY when not 0); in: 0 */
};
#define CKPT_CONTAINED_SIZE_VER0	16

/* ---- a task's fd table ------------------------------------------------ */

/* ckpt_fd_entry.flags (CKPT_FD_CLOEXEC is the FD record's flag, below) */
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

/* ckpt_fd_detail.detail: which of its parts the module filled */
#define CKPT_DETAIL_LINK	0x1	/* link */
#define CKPT_DETAIL_FDINFO	0x2	/* fdinfo */
#define CKPT_DETAIL_PIPE	0x4	/* pipe_* */

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
 * initial user namespace, and the context's opener had to hold it too
 * (EPERM; ptrace_may_access() is not available to a module).  pid is in
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
};
#define CKPT_TASK_FDS_SIZE_VER0	32

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

/* Copy the entries with seq > since, oldest first. */
struct ckpt_errors {
	__u64 buf;		/* user address of struct ckpt_err_entry[count] */
	__u32 count;		/* in: capacity (<= CKPT_ERR_LOG_MAX); out: copied */
	__u32 since;		/* in: last seq already seen */
	__u32 last;		/* out: newest seq; in: 0 */
	__u32 __pad;
};
#define CKPT_ERRORS_SIZE_VER0	24

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
 * PUT and STAT take id; refs, grabs and drops must be zero on input.
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
#define CKPT_IOC_LOOKUP_ADD	_IOWR(CKPT_IOC_MAGIC, 0x10, struct ckpt_obj_arg)
#define CKPT_IOC_INSERT		_IOWR(CKPT_IOC_MAGIC, 0x11, struct ckpt_obj_arg)
#define CKPT_IOC_FETCH		_IOWR(CKPT_IOC_MAGIC, 0x12, struct ckpt_obj_arg)
#define CKPT_IOC_LOOKUP_ADD_BATCH _IOWR(CKPT_IOC_MAGIC, 0x18, struct ckpt_batch)
#define CKPT_IOC_INSERT_BATCH	_IOWR(CKPT_IOC_MAGIC, 0x19, struct ckpt_batch)
#define CKPT_IOC_FETCH_BATCH	_IOWR(CKPT_IOC_MAGIC, 0x1a, struct ckpt_batch)
/* Checkpoint: a task's fds, their files lookup_add'ed (ABI 3). */
#define CKPT_IOC_TASK_FDS	_IOWR(CKPT_IOC_MAGIC, 0x1c, struct ckpt_task_fds)
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

/* ---- image records (seed 004) ------------------------------------------ */

/*
 * An image is a stream of records.  Every record starts with this header;
 * len counts the header and the record's variable part, and is a multiple
 * of 8 (zero padding); ptag is the tag (record index, from 1) of the parent
 * record, 0 at top level.  The grammar, parents in brackets:
 *
 *   HEAD TREE { TASK[TREE] { FD[TASK] ( FILE[FD] [kind] | OBJREF[FD] ) } }
 *   { EPOLL[its FILE] } TAIL
 *   kind: PIPE[FILE] | UNIX[FILE] { UNIX_MSG[UNIX] } | SIGNALFD[FILE]
 *       | TIMERFD[FILE] | CONTENTS[FILE] | TTY[FILE]
 *
 * ERROR records (ptag 0) may appear anywhere between HEAD and TAIL and count
 * in nr_records.  TREE's root_pid is the first TASK's pid.
 *
 * FD names its file's objref; the first FD of a file is followed by the FILE
 * record that defines the objref, every later one by an OBJREF.  A pipe's
 * first FILE is followed by the PIPE record (its pipe_objref, data); a unix
 * socket's FILE by its UNIX record and nr_msgs UNIX_MSG records.  EPOLL
 * records come after all tasks, so every target is already defined (linux-cr
 * deferred epoll items the same way); an epoll file without items may have
 * none.  Every objref is > 0 and defined
 * before it is used.  TAIL holds the record count (TAIL included) and the
 * CRC-32 (zlib's) of every byte before it.
 */
struct ckpt_hdr {
	__u32 type;		/* enum ckpt_hdr_type */
	__u32 len;
	__u32 ptag;
	__u32 __pad;
};

enum ckpt_hdr_type {
	CKPT_HDR_HEAD = 1,
	CKPT_HDR_TREE = 2,
	CKPT_HDR_TASK = 3,
	CKPT_HDR_FILE = 4,
	CKPT_HDR_FD = 5,
	CKPT_HDR_OBJREF = 6,
	CKPT_HDR_ERROR = 7,
	CKPT_HDR_TAIL = 8,
	CKPT_HDR_PIPE = 9,
	CKPT_HDR_EPOLL = 10,
	CKPT_HDR_UNIX = 11,
	CKPT_HDR_UNIX_MSG = 12,
	CKPT_HDR_SIGNALFD = 13,
	CKPT_HDR_TIMERFD = 14,
	CKPT_HDR_CONTENTS = 15,
	CKPT_HDR_TTY = 16,
	CKPT_HDR_TYPE_MAX
};

#define CKPT_HEAD_MAGIC		0x0a74706b63797000ULL	/* "\0pyckpt\n" */
#define CKPT_TAIL_MAGIC		0x0a6c696174797000ULL	/* "\0pytail\n" */
#define CKPT_FORMAT_VERSION	3	/* 1: no credentials in TASK, no stat in
					 * FILE; 2: no exit_status, files_pid,
					 * nr_threads in TASK (both refused) */
#define CKPT_UTS_LEN		65	/* __NEW_UTS_LEN + 1 */

/* bounds the reader enforces on the variable parts */
#define CKPT_COMM_MAX		64
#define CKPT_PATH_MAX		4096
#define CKPT_ARGV_MAX		(256 * 1024)
#define CKPT_PIPE_DATA_MAX	(16 * 1024 * 1024)
#define CKPT_EPOLL_ITEMS_MAX	(1 << 20)
#define CKPT_MSG_MAX		4096
#define CKPT_GROUPS_MAX		65536	/* NGROUPS_MAX */
#define CKPT_ENV_MAX		(256 * 1024)
#define CKPT_RLIM_NLIMITS	16	/* RLIM_NLIMITS on x86-64 */
#define CKPT_THREADS_MAX	4194304	/* PID_MAX_LIMIT */

struct ckpt_hdr_head {
	struct ckpt_hdr h;
	__u64 magic;		/* CKPT_HEAD_MAGIC */
	__u32 format_version;	/* CKPT_FORMAT_VERSION */
	__u32 abi_version;	/* CKPT_ABI_VERSION */
	__s64 time_sec;		/* when the tree was frozen */
	__u32 time_nsec;
	__u32 __pad;
	char sysname[CKPT_UTS_LEN];	/* uname(2) of the checkpointing host */
	char release[CKPT_UTS_LEN];
	char version[CKPT_UTS_LEN];
	char machine[CKPT_UTS_LEN];
	char __pad2[4];
};

struct ckpt_hdr_tree {
	struct ckpt_hdr h;
	__u32 nr_tasks;		/* TASK records that follow */
	__s32 root_pid;
};

/* one resource limit; RLIM_INFINITY is ~0ULL */
struct ckpt_rlimit {
	__u64 cur;
	__u64 max;
};

/* ckpt_hdr_task.flags */
#define CKPT_TASK_NO_NEW_PRIVS	0x1	/* prctl(PR_SET_NO_NEW_PRIVS) was set */
#define CKPT_TASK_RLIMITS	0x2	/* rlim[] holds the task's limits */
#define CKPT_TASK_ZOMBIE	0x4	/* exited, not yet reaped by its parent:
					 * exit_status is what wait(2) will
					 * read; no FD record, no credentials
					 * or limits beyond the ids */

/*
 * One process and its credentials (format 3).  Followed by comm, argv (argc
 * NUL-terminated strings), cwd, groups (ngroups __u32), environ (envc
 * NUL-terminated strings), exe and root (paths, no NUL).  Restart gives the
 * task exactly these credentials; an empty exe means "exec argv[0] from
 * PATH"; root must be "/" (a chrooted task is refused at checkpoint).  A
 * ZOMBIE task is restarted as a child that exits with exit_status and is
 * left unreaped; tasks with the same files_pid shared one fd table.
 */
struct ckpt_hdr_task {
	struct ckpt_hdr h;
	__s32 pid;
	__s32 ppid;		/* root: its parent outside the tree */
	__s32 sid;
	__s32 pgid;
	__u32 nr_fds;		/* FD records that follow */
	__u32 comm_len;		/* no NUL; <= CKPT_COMM_MAX */
	__u32 argc;
	__u32 argv_len;
	__u32 cwd_len;		/* no NUL */
	__u32 flags;		/* CKPT_TASK_* */
	__u32 ruid;		/* real, effective, saved and filesystem uid */
	__u32 euid;
	__u32 suid;
	__u32 fsuid;
	__u32 rgid;		/* the same four gids */
	__u32 egid;
	__u32 sgid;
	__u32 fsgid;
	__u32 umask;		/* <= 0777 */
	__u32 ngroups;		/* supplementary groups; <= CKPT_GROUPS_MAX */
	__u32 envc;
	__u32 env_len;		/* <= CKPT_ENV_MAX */
	__u32 exe_len;		/* no NUL */
	__u32 root_len;		/* no NUL */
	__s32 exit_status;	/* ZOMBIE: wait(2) status (0..0xffff); else 0 */
	__s32 files_pid;	/* the first task (this one or an earlier one)
				 * whose fd table it shares (CLONE_FILES,
				 * kcmp KCMP_FILES); its own pid if none */
	__u32 nr_threads;	/* threads when checkpointed; 1..CKPT_THREADS_MAX
				 * (restart makes one: it execs the command) */
	__u32 __pad;
	struct ckpt_rlimit rlim[CKPT_RLIM_NLIMITS];	/* by RLIMIT_* number */
};

/* ckpt_hdr_fd.flags */
#define CKPT_FD_CLOEXEC		0x1

struct ckpt_hdr_fd {
	struct ckpt_hdr h;
	__s32 fd;
	__s32 objref;		/* its file */
	__u32 flags;		/* CKPT_FD_* */
	__u32 __pad;
};

/* ckpt_hdr_file.flags */
#define CKPT_FILE_EXTERNAL	0x1	/* also held outside the tree */
#define CKPT_FILE_EFD_SEM_UNKNOWN 0x2	/* EVENTFD: the kernel did not say
					 * whether EFD_SEMAPHORE is set (6.1) */
#define CKPT_FILE_USER_DEVICE	0x4	/* CHR: a device the user named with
					 * --device (restart reopens it only
					 * when named there again) */

/*
 * One open file description; followed by its path (no NUL).  For a file
 * restart reopens by path (REG, DIR, FIFO) the st_* fields are what fstat()
 * said at checkpoint: restart refuses a file whose type or owner differ, or
 * whose device and inode differ (unless told the files were relocated).
 * CHR (a stateless device: null, zero, full, random, urandom, tty, or one
 * named with --device) is reopened at its path only with the recorded
 * st_rdev; TTY keeps its path and st_rdev to say which terminal it was, and
 * is never reopened (restart gives it the restarter's stdio).
 */
struct ckpt_hdr_file {
	struct ckpt_hdr h;
	__s32 objref;
	__u32 kind;		/* enum ckpt_file_kind */
	__u32 f_flags;		/* O_* of the open file description */
	__u32 f_mode;		/* CKPT_FMODE_* */
	__s64 pos;
	__s32 pipe_objref;	/* PIPE, FIFO: the pipe, shared by its ends */
	__u32 flags;		/* CKPT_FILE_* */
	__u64 count;		/* EVENTFD: counter */
	__u32 efd_flags;	/* EVENTFD: EFD_SEMAPHORE if known */
	__u32 path_len;		/* REG, DIR, FIFO (where to reopen) */
	__u64 st_dev;		/* REG, DIR, FIFO: as stat(2) gives them */
	__u64 st_ino;
	__u32 st_mode;		/* type and permission bits */
	__u32 st_uid;
	__u32 st_gid;
	__u32 __pad;
	__s64 st_size;
	__u64 st_rdev;		/* CHR, TTY: the device number (stat(2)) */
};

/* ckpt_hdr_pipe.flags */
#define CKPT_PIPE_NO_READER	0x1	/* read end closed everywhere */
#define CKPT_PIPE_NO_WRITER	0x2	/* write end closed everywhere */

/* a pipe's buffer, saved without consuming it; followed by the data */
struct ckpt_hdr_pipe {
	struct ckpt_hdr h;
	__s32 objref;		/* the pipe_objref of its files */
	__u32 flags;		/* CKPT_PIPE_* */
	__u32 size;		/* F_GETPIPE_SZ */
	__u32 data_len;
};

/* ckpt_hdr_tty.flags */
#define CKPT_TTY_TERMINAL	0x1	/* isatty(): not a plain device on fds 0-2 */
#define CKPT_TTY_PTY_MASTER	0x2	/* the master side of a pseudo-terminal */
#define CKPT_TTY_CTTY		0x4	/* controlling terminal of session sid */
#define CKPT_TTY_FLAGS_ALL	0x7

/*
 * A terminal of the tree (FILE kind TTY), right after its FILE.  Restart
 * recreates the session and controlling terminal from it as far as the
 * kernel allows; the terminal itself is replaced by the restarter's stdio.
 */
struct ckpt_hdr_tty {
	struct ckpt_hdr h;
	__s32 objref;		/* its FILE */
	__u32 flags;		/* CKPT_TTY_* (CTTY needs TERMINAL, not PTY_MASTER) */
	__s32 sid;		/* CTTY: the session it controls (> 0), else 0 */
	__s32 pgrp;		/* CTTY: its foreground process group (>= 0), else 0 */
};

/* a later reference to an object already written */
struct ckpt_hdr_objref {
	struct ckpt_hdr h;
	__s32 objref;
	__u32 type;		/* enum ckpt_obj_type */
};

struct ckpt_epoll_item {
	__s32 target;		/* objref of the target file */
	__s32 tfd;		/* the fd number it was added with */
	__u32 events;
	__u32 __pad;
	__u64 data;
};

/* an epoll file's items; followed by ckpt_epoll_item[nr_items] */
struct ckpt_hdr_epoll {
	struct ckpt_hdr h;
	__s32 objref;		/* the epoll file */
	__u32 nr_items;
};

/* ckpt_hdr_unix.flags */
#define CKPT_UNIX_PASSCRED	0x1	/* SO_PASSCRED set */
#define CKPT_UNIX_PEER_GONE	0x2	/* connected, its peer closed (or external) */
#define CKPT_UNIX_EXTERNAL_PEER	0x4	/* the peer was outside the tree */
#define CKPT_UNIX_FLAGS		0x7	/* every flag above */

/* ckpt_hdr_unix.state: the kernel's sk_state values unix sockets use */
#define CKPT_UNIX_UNCONNECTED	7	/* TCP_CLOSE: no peer (maybe bound) */
#define CKPT_UNIX_CONNECTED	1	/* TCP_ESTABLISHED: has (had) a peer */
#define CKPT_UNIX_LISTENING	10	/* TCP_LISTEN */

/* ckpt_hdr_unix.shutdown: the kernel's sk_shutdown bits */
#define CKPT_UNIX_SHUT_RCV	0x1
#define CKPT_UNIX_SHUT_SEND	0x2

#define CKPT_UNIX_NAME_MAX	108		/* sizeof(sun_path) */
#define CKPT_UNIX_MSGS_MAX	(1 << 20)	/* UNIX_MSG records of a socket */
#define CKPT_UNIX_DATA_MAX	(64 * 1024 * 1024)	/* one message's bytes */

/*
 * A unix socket (FILE.kind CKPT_FILE_UNIX), right after its FILE record
 * (ptag: the FILE's tag); followed by its bound name (sun_path bytes,
 * leading NUL for an abstract name) and by nr_msgs UNIX_MSG records, its
 * receive queue in order.  peer and listener are FILE objrefs of other
 * UNIX files of the image (defined anywhere in it).  A socket of another
 * family exists only as external (family != AF_UNIX, PEER_GONE).
 */
struct ckpt_hdr_unix {
	struct ckpt_hdr h;
	__s32 objref;		/* its FILE's objref */
	__s32 peer;		/* the peer's FILE objref; 0: none (or gone) */
	__s32 listener;		/* pending connection: its listener; else 0 */
	__u32 family;		/* AF_UNIX; else an external socket (PEER_GONE) */
	__u32 type;		/* SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET */
	__u32 state;		/* CKPT_UNIX_UNCONNECTED, _CONNECTED, _LISTENING */
	__u32 flags;		/* CKPT_UNIX_* */
	__u32 shutdown;		/* CKPT_UNIX_SHUT_* */
	__u32 backlog;		/* LISTENING: listen()'s backlog */
	__u32 sndbuf;		/* SO_SNDBUF as getsockopt() says it */
	__u32 rcvbuf;		/* SO_RCVBUF */
	__u32 name_len;		/* bound name bytes; <= CKPT_UNIX_NAME_MAX */
	__u32 nr_msgs;		/* UNIX_MSG records that follow */
	__u32 name_mode;	/* path name: the socket file's st_mode, uid, */
	__u32 name_uid;		/*   gid (0 0 0: unknown, left as bind makes it) */
	__u32 name_gid;
	__u64 vfs_dev;		/* path name: the socket file's st_dev, st_ino */
	__u64 vfs_ino;		/*   (restart replaces only that file) */
};

/*
 * One queued message of a unix socket (a datagram, or bytes of a stream),
 * ptag: its UNIX record; followed by the data, then the sender's address
 * (datagrams: sun_path bytes; 0 bytes: unnamed sender or a stream).
 */
struct ckpt_hdr_unix_msg {
	struct ckpt_hdr h;
	__s32 objref;		/* the receiving socket's FILE objref */
	__u32 data_len;		/* <= CKPT_UNIX_DATA_MAX */
	__u32 addr_len;		/* <= CKPT_UNIX_NAME_MAX */
	__u32 __pad;
};

/*
 * A signalfd's mask (after its FILE, ptag = the FILE's tag).  Bit sig - 1
 * stands for signal sig, as fdinfo's "sigmask:" prints it; SIGKILL and
 * SIGSTOP are never in it (signalfd(2) drops them).  O_NONBLOCK is the
 * FILE's f_flags, SFD_CLOEXEC the FD's flag.
 */
struct ckpt_hdr_signalfd {
	struct ckpt_hdr h;
	__s32 objref;		/* its FILE */
	__u32 __pad;
	__u64 sigmask;		/* signals it reads */
};

/* ckpt_hdr_timerfd.flags: timerfd_settime(2)'s flags of its last setting */
#define CKPT_TFD_ABSTIME	0x1	/* TFD_TIMER_ABSTIME: value is absolute */
#define CKPT_TFD_CANCEL_ON_SET	0x2	/* TFD_TIMER_CANCEL_ON_SET (REALTIME
					 * clocks, with CKPT_TFD_ABSTIME only) */
#define CKPT_TFD_FLAGS		0x3	/* every flag above */
#define CKPT_NSEC_MAX		999999999

/*
 * A timerfd's settings (after its FILE, ptag = the FILE's tag).  value is
 * 0/0 for a disarmed timer; else, with CKPT_TFD_ABSTIME, the expiry on
 * clockid's clock (restart arms it there: past, it fires at once), without
 * it the time that was left at checkpoint (restart arms it relative).
 * ticks: expirations not read yet (restart sets them, TFD_IOC_SET_TICKS).
 */
struct ckpt_hdr_timerfd {
	struct ckpt_hdr h;
	__s32 objref;		/* its FILE */
	__u32 clockid;		/* CLOCK_REALTIME, MONOTONIC, BOOTTIME, *_ALARM */
	__u32 flags;		/* CKPT_TFD_* */
	__u32 __pad;
	__u64 ticks;		/* unread expirations */
	__s64 value_sec;	/* >= 0 */
	__s64 value_nsec;	/* 0..CKPT_NSEC_MAX */
	__s64 interval_sec;	/* >= 0; 0/0: not periodic */
	__s64 interval_nsec;	/* 0..CKPT_NSEC_MAX */
};

/* bounds of a CONTENTS record */
#define CKPT_CONTENTS_DATA_MAX	(1U << 30)	/* data bytes of one file */
#define CKPT_MEMFD_NAME_MAX	249	/* MFD_NAME_MAX_LEN: a MEMFD's path */
#define CKPT_SEALS		0x3f	/* F_SEAL_SEAL .. F_SEAL_EXEC */

/*
 * What a MEMFD or DELETED file holds (after its FILE, ptag = the FILE's
 * tag); followed by data_len bytes of data.  The file is st_size bytes long
 * (its FILE's st_size): data is its start, the rest reads as zeros (a hole).
 * Files open on one inode share it: the first one's record holds the data,
 * a later one names it in same_as (data_len 0, seals 0).  Restart makes the
 * file again unlinked (memfd_create(), or an unlinked file in the
 * directory of the FILE's path), writes the data, then adds the seals.
 */
struct ckpt_hdr_contents {
	struct ckpt_hdr h;
	__s32 objref;		/* its FILE */
	__s32 same_as;		/* 0, or an earlier FILE on the same inode */
	__u32 seals;		/* MEMFD: F_GET_SEALS (CKPT_SEALS bits) */
	__u32 data_len;		/* <= CKPT_CONTENTS_DATA_MAX, <= st_size */
};

/* ckpt_write_err(): followed by the message (no NUL) */
struct ckpt_hdr_error {
	struct ckpt_hdr h;
	__s32 err;		/* negative errno, 0 for a note */
	__s32 objref;		/* 0 when none */
	__s32 pid;		/* 0 when none */
	__s32 fd;		/* -1 when none */
	__u32 msg_len;
	__u32 __pad;
};

struct ckpt_hdr_tail {
	struct ckpt_hdr h;
	__u64 magic;		/* CKPT_TAIL_MAGIC */
	__u32 nr_records;	/* HEAD to TAIL included */
	__u32 checksum;		/* CRC-32 of every byte before TAIL */
};

#endif /* _UAPI_LINUX_CKPT_H */
