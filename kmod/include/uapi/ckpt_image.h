/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ckpt_image.h - the checkpoint image: its records, their grammar, the
 * image's own file kinds and its format version.
 *
 * Apart from the ioctl ABI (ckpt.h), as linux-cr kept checkpoint_hdr.h
 * apart from its syscalls: the module never reads or writes an image and
 * does not include this file; the coordinator (pyckpt) writes and reads
 * images.  What both share (object types, the module's file kinds, f_mode,
 * fd and pipe flags, CKPT_ABI_VERSION recorded in HEAD) comes from ckpt.h.
 * The same rules hold: fixed-width types, explicit padding, every struct a
 * multiple of 8 bytes, no pointers.
 */
#ifndef _UAPI_LINUX_CKPT_IMAGE_H
#define _UAPI_LINUX_CKPT_IMAGE_H

#include <linux/types.h>
#include "ckpt.h"

/*
 * The kinds a FILE record may hold besides those of enum ckpt_file_kind
 * (ckpt.h, what the module reports): the coordinator resolves a reported
 * kind (ANON, REG, CHR, SOCK) to one of these when it knows how to save the
 * file.  Both enums share one numbering, so FILE.kind holds either.
 */
enum ckpt_image_file_kind {
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
	/* below CKPT_FILE_KIND_MAX (ckpt.h), the bound of both enums */
};

/* ---- records (seed 004) --------------------------------------------------- */

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
	CKPT_HDR_SECCOMP = 17,
	CKPT_HDR_TYPE_MAX
};

#define CKPT_HEAD_MAGIC		0x0a74706b63797000ULL	/* "\0pyckpt\n" */
#define CKPT_TAIL_MAGIC		0x0a6c696174797000ULL	/* "\0pytail\n" */
#define CKPT_FORMAT_VERSION	4	/* 1: no credentials in TASK, no stat in
					 * FILE; 2: no exit_status, files_pid,
					 * nr_threads in TASK; 3: no capability
					 * sets, securebits, seccomp filters or
					 * cwd identity in TASK (all refused) */
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
#define CKPT_LABEL_MAX		4096	/* an LSM label (attr/current) */
#define CKPT_SECCOMP_FILTERS_MAX 512	/* MAX_INSNS_PER_PATH / 8: the kernel
					 * refuses more filters than this */
#define CKPT_SECCOMP_INSNS_MAX	4096	/* BPF_MAXINSNS */

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
#define CKPT_TASK_AT_SECURE	0x8	/* its last exec was privileged: setuid,
					 * setgid or file capabilities (AT_SECURE
					 * in its auxv) */
#define CKPT_TASK_CAPS		0x10	/* cap_* hold the task's capability sets */
#define CKPT_TASK_SECUREBITS	0x20	/* securebits holds the task's */
#define CKPT_TASK_CWD_STAT	0x40	/* cwd_* hold what stat(2) said of the
					 * cwd (restart checks it) */

/*
 * One process and its credentials (format 4).  Followed by comm, argv (argc
 * NUL-terminated strings), cwd, groups (ngroups __u32), environ (envc
 * NUL-terminated strings), exe, root (paths, no NUL) and label (the LSM
 * label of /proc/PID/attr/current, no NUL; empty when none).  Then
 * nr_seccomp SECCOMP records (ptag = the TASK's tag), then its FDs.  Restart gives the
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
	/* format 4: what survives an exec and limits the task (CAPS,
	 * SECUREBITS: restart restores them), and the cwd's identity */
	__u64 cap_inheritable;
	__u64 cap_permitted;	/* as checkpointed: shown, not restored (the
				 * exec computes it again) */
	__u64 cap_effective;	/* the same */
	__u64 cap_bset;
	__u64 cap_ambient;
	__u32 securebits;	/* SECBIT_* (SECUREBITS) */
	__u32 nr_seccomp;	/* SECCOMP records that follow, oldest filter
				 * first; <= CKPT_SECCOMP_FILTERS_MAX */
	__u64 cwd_dev;		/* CWD_STAT: st_dev (new_encode_dev) */
	__u64 cwd_ino;
	__u32 cwd_mode;		/* st_mode: a directory */
	__u32 cwd_uid;
	__u32 cwd_gid;
	__u32 label_len;	/* no NUL; <= CKPT_LABEL_MAX */
};

/*
 * One seccomp filter of a task (format 4; PTRACE_SECCOMP_GET_FILTER), after
 * its TASK; followed by nr_insns struct sock_filter (8 bytes each: __u16
 * code, __u8 jt, __u8 jf, __u32 k).  Restart installs them in order, last
 * thing before the exec.
 */
struct ckpt_hdr_seccomp {
	struct ckpt_hdr h;
	__u32 nr_insns;		/* 1..CKPT_SECCOMP_INSNS_MAX */
	__u32 __pad;
};

/* ckpt_hdr_fd.flags: CKPT_FD_CLOEXEC (ckpt.h) */

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

/* ckpt_hdr_pipe.flags: CKPT_PIPE_NO_READER, CKPT_PIPE_NO_WRITER (ckpt.h) */

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

#endif /* _UAPI_LINUX_CKPT_IMAGE_H */
