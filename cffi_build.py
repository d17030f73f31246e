"""Build pyckpt._ckpt (cffi API mode, out of line) from kmod/include/uapi/.

The headers (ckpt.h, the ioctl ABI; ckpt_image.h, the image format) are the
single truth for every layout and constant: the cdef below
is generated from them, and the C compiler supplies every value and offset
(``#define NAME ...``), so no number of the ABI is retyped in Python.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent
UAPI_DIR = ROOT / "kmod" / "include" / "uapi"
HEADER = UAPI_DIR / "ckpt.h"  # the ioctl ABI (the module includes only it)
IMAGE_HEADER = UAPI_DIR / "ckpt_image.h"  # the image format
HEADERS = (HEADER, IMAGE_HEADER)

# <linux/types.h> cannot be read by cdef; these are its x86_64/all-Linux
# definitions (asm-generic/int-ll64.h), checked by the compiler in API mode.
TYPEDEFS = """
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
"""

# Small helpers compiled into the extension: ioctl(2) returning -errno (no
# errno race between the call and its reading), the syscalls that Python
# lacks and that checkpoint, restart and the tests need (kcmp, pidfd_getfd,
# tee(2), epoll_ctl(2) with a chosen 64-bit data: select.epoll only stores the
# fd; signalfd, timerfd_*, clock_gettime on any clock id, fstatfs, setfs*id,
# prctl), each returning -errno too and wrapped by pyckpt/syscalls.py; the
# ioctl number encoding of <asm/ioctl.h> so tests can build odd-sized numbers;
# the unix socket peers of NETLINK_SOCK_DIAG (pyckpt ls), whose layouts come
# from the kernel's headers here rather than from Python.
HELPERS_CDEF = """
int ckpt_ioctl(int fd, unsigned long req, void *arg);
long ckpt_kcmp(int pid1, int pid2, int type, unsigned long idx1, unsigned long idx2);
int ckpt_pidfd_getfd(int pidfd, int targetfd);
long ckpt_kcmp_epoll_tfd(int pid1, int fd1, int pid2, int efd, int tfd,
			 int toff);
long ckpt_tee(int fd_in, int fd_out, size_t len, unsigned int flags);
int ckpt_epoll_ctl(int epfd, int op, int fd, unsigned int events,
		   unsigned long long data);
int ckpt_signalfd(int fd, unsigned long long mask, int flags);
int ckpt_timerfd_create(int clockid, int flags);
int ckpt_timerfd_settime(int fd, int flags, const long long spec[4]);
int ckpt_timerfd_gettime(int fd, long long spec[4]);
int ckpt_timerfd_set_ticks(int fd, unsigned long long ticks);
int ckpt_clock_gettime(int clockid, long long *ns);
int ckpt_fstatfs_type(int fd, long long *f_type);
int ckpt_setfsuid(unsigned int uid);
int ckpt_setfsgid(unsigned int gid);
int ckpt_prctl(int option, unsigned long arg2, unsigned long arg3,
	       unsigned long arg4, unsigned long arg5);
int ckpt_capget(int pid, unsigned long long caps[3]);
int ckpt_capset(const unsigned long long caps[3]);
int ckpt_seccomp_filters(int pid, void *buf, size_t room, unsigned int *lens,
			 int max);
int ckpt_seccomp_execve(const char *path, char *const argv[],
			char *const envp[], const void *insns,
			const unsigned int *lens, int n);
#define SPLICE_F_NONBLOCK ...
#define PR_GET_KEEPCAPS ...
#define PR_SET_KEEPCAPS ...
#define PR_CAPBSET_READ ...
#define PR_CAPBSET_DROP ...
#define PR_GET_SECUREBITS ...
#define PR_SET_SECUREBITS ...
#define PR_CAP_AMBIENT ...
#define PR_CAP_AMBIENT_IS_SET ...
#define PR_CAP_AMBIENT_RAISE ...
#define PR_CAP_AMBIENT_CLEAR_ALL ...
#define SECBIT_NOROOT ...
#define SECBIT_NOROOT_LOCKED ...
#define SECBIT_NO_SETUID_FIXUP ...
#define SECBIT_KEEP_CAPS ...
#define SECBIT_KEEP_CAPS_LOCKED ...
#define SECBIT_NO_CAP_AMBIENT_RAISE ...
#define SECCOMP_INSN_SIZE ...
#define EPOLL_CTL_ADD ...
#define KCMP_FILE ...
#define KCMP_FILES ...
#define PR_SET_PDEATHSIG ...
#define PR_SET_DUMPABLE ...
#define PR_GET_DUMPABLE ...
#define PR_SET_CHILD_SUBREAPER ...
#define PR_SET_NO_NEW_PRIVS ...
#define PR_GET_NO_NEW_PRIVS ...
#define KCMP_EPOLL_TFD ...
#define _IOC_NONE ...
#define _IOC_WRITE ...
#define _IOC_READ ...
#define _IOC_NRSHIFT ...
#define _IOC_TYPESHIFT ...
#define _IOC_SIZESHIFT ...
#define _IOC_DIRSHIFT ...
#define _IOC_NRMASK ...
#define _IOC_TYPEMASK ...
#define _IOC_SIZEMASK ...
#define _IOC_DIRMASK ...
"""

HELPERS_SRC = """
#define _GNU_SOURCE	/* tee() */
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/vfs.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/kcmp.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <linux/types.h>
#include "ckpt.h"
#include "ckpt_image.h"

/*
 * <linux/timerfd.h> has it (CONFIG_CHECKPOINT_RESTORE), but its flag macros
 * clash with the enum of glibc's <sys/timerfd.h>: the same definition here.
 */
#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS	_IOW('T', 0, __u64)
#endif

static int ckpt_ioctl(int fd, unsigned long req, void *arg)
{
	int ret = ioctl(fd, req, arg);

	return ret < 0 ? -errno : ret;
}

static long ckpt_kcmp(int pid1, int pid2, int type, unsigned long idx1,
		      unsigned long idx2)
{
	long ret = syscall(SYS_kcmp, pid1, pid2, type, idx1, idx2);

	return ret < 0 ? -errno : ret;
}

static int ckpt_pidfd_getfd(int pidfd, int targetfd)
{
	long ret = syscall(SYS_pidfd_getfd, pidfd, targetfd, 0);

	return ret < 0 ? -errno : (int)ret;
}

/* is fd1 of pid1 the target (tfd, toff) of epoll fd efd of pid2? */
static long ckpt_kcmp_epoll_tfd(int pid1, int fd1, int pid2, int efd, int tfd,
				int toff)
{
	struct kcmp_epoll_slot slot = { .efd = efd, .tfd = tfd, .toff = toff };
	long ret = syscall(SYS_kcmp, pid1, pid2, KCMP_EPOLL_TFD, fd1,
			   (unsigned long)&slot);

	return ret < 0 ? -errno : ret;
}

static long ckpt_tee(int fd_in, int fd_out, size_t len, unsigned int flags)
{
	long ret = tee(fd_in, fd_out, len, flags);

	return ret < 0 ? -errno : ret;
}

static int ckpt_epoll_ctl(int epfd, int op, int fd, unsigned int events,
			  unsigned long long data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };

	return epoll_ctl(epfd, op, fd, &ev) < 0 ? -errno : 0;
}

/*
 * signalfd4(2) itself: the kernel's sigset is 8 bytes on every 64-bit
 * arch (glibc's sigset_t is 128, and its signalfd() passes 8 of them).
 */
static int ckpt_signalfd(int fd, unsigned long long mask, int flags)
{
	__u64 set = mask;
	long ret = syscall(SYS_signalfd4, fd, &set, sizeof(set), flags);

	return ret < 0 ? -errno : (int)ret;
}

static int ckpt_timerfd_create(int clockid, int flags)
{
	int ret = timerfd_create(clockid, flags);

	return ret < 0 ? -errno : ret;
}

/* spec: value sec, nsec, interval sec, nsec */
static int ckpt_timerfd_settime(int fd, int flags, const long long spec[4])
{
	struct itimerspec its = {
		.it_value = { .tv_sec = spec[0], .tv_nsec = spec[1] },
		.it_interval = { .tv_sec = spec[2], .tv_nsec = spec[3] },
	};

	return timerfd_settime(fd, flags, &its, NULL) < 0 ? -errno : 0;
}

/* spec: time left sec, nsec, interval sec, nsec */
static int ckpt_timerfd_gettime(int fd, long long spec[4])
{
	struct itimerspec its;

	if (timerfd_gettime(fd, &its) < 0)
		return -errno;
	spec[0] = its.it_value.tv_sec;
	spec[1] = its.it_value.tv_nsec;
	spec[2] = its.it_interval.tv_sec;
	spec[3] = its.it_interval.tv_nsec;
	return 0;
}

static int ckpt_timerfd_set_ticks(int fd, unsigned long long ticks)
{
	__u64 t = ticks;

	return ioctl(fd, TFD_IOC_SET_TICKS, &t) < 0 ? -errno : 0;
}

static int ckpt_clock_gettime(int clockid, long long *ns)
{
	struct timespec ts;

	if (clock_gettime(clockid, &ts) < 0)
		return -errno;
	*ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
	return 0;
}

static int ckpt_fstatfs_type(int fd, long long *f_type)
{
	struct statfs st;

	if (fstatfs(fd, &st) < 0)
		return -errno;
	*f_type = st.f_type;
	return 0;
}

/* setfs*id() report no error: they return the previous id */
static int ckpt_setfsuid(unsigned int uid)
{
	return setfsuid(uid);
}

static int ckpt_setfsgid(unsigned int gid)
{
	return setfsgid(gid);
}

/* capget(2), capset(2), version 3: caps[0] effective, [1] permitted,
 * [2] inheritable, 64 bits each (pid 0: the calling thread) */
static int ckpt_capget(int pid, unsigned long long caps[3])
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = pid,
	};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &hdr, d) < 0)
		return -errno;
	caps[0] = d[0].effective | (unsigned long long)d[1].effective << 32;
	caps[1] = d[0].permitted | (unsigned long long)d[1].permitted << 32;
	caps[2] = d[0].inheritable | (unsigned long long)d[1].inheritable << 32;
	return 0;
}

static int ckpt_capset(const unsigned long long caps[3])
{
	struct __user_cap_header_struct hdr = {
		.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0,
	};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
	int i;

	for (i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
		d[i].effective = caps[0] >> (32 * i);
		d[i].permitted = caps[1] >> (32 * i);
		d[i].inheritable = caps[2] >> (32 * i);
	}
	return syscall(SYS_capset, &hdr, d) < 0 ? -errno : 0;
}

#define SECCOMP_INSN_SIZE	sizeof(struct sock_filter)

/*
 * The seccomp filters of a task the caller froze (SIGSTOP or the cgroup
 * freezer), read as CRIU reads them: PTRACE_SEIZE, PTRACE_INTERRUPT, wait
 * for the trap (__WALL), PTRACE_SECCOMP_GET_FILTER from index 0 (the
 * first filter installed: get_nth_filter() counts from the oldest) until
 * ENOENT, PTRACE_DETACH.  The kernel's detach puts the task back where it
 * was: a group-stopped task stops again (SIGNAL_STOP_STOPPED
 * still holds), a frozen one goes back to the freezer's trap; neither
 * returns to user space in between.  A signal-delivery stop (none is
 * expected: the traps come first in get_signal()) gets its signal back at
 * the detach.  Filter i's instruction count is lens[i], its instructions
 * packed in buf after those of the filters before it.
 * Returns the count of filters, or -errno (-ENOSPC: buf or lens too small;
 * the ptrace errors: EPERM for a task traced by another).
 */
static int ckpt_seccomp_filters(int pid, void *buf, size_t room,
				unsigned int *lens, int max)
{
	size_t used = 0;
	int status, sig = 0, n = 0, ret;
	long len;

	if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) < 0)
		return -errno;
	if (ptrace(PTRACE_INTERRUPT, pid, NULL, NULL) < 0) {
		ret = -errno;
		goto detach;
	}
	while (waitpid(pid, &status, __WALL) < 0) {
		if (errno != EINTR) {
			ret = -errno;
			goto detach;
		}
	}
	if (!WIFSTOPPED(status))
		return -ESRCH;	/* it died (SIGKILL): no tracee left */
	if (!(status >> 16))
		sig = WSTOPSIG(status);	/* signal-delivery stop: give it back */
	for (;;) {
		len = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, (void *)(long)n,
			     NULL);
		if (len < 0) {
			/* past the last filter; EINVAL at 0: not in filter mode */
			ret = errno == ENOENT || (errno == EINVAL && !n) ?
			      n : -errno;
			break;
		}
		if (n == max || (size_t)len > (room - used) / SECCOMP_INSN_SIZE) {
			ret = -ENOSPC;
			break;
		}
		len = ptrace(PTRACE_SECCOMP_GET_FILTER, pid, (void *)(long)n,
			     (char *)buf + used);
		if (len < 0) {
			ret = -errno;
			break;
		}
		lens[n++] = len;
		used += len * SECCOMP_INSN_SIZE;
	}
detach:
	if (ptrace(PTRACE_DETACH, pid, NULL, (void *)(long)sig) < 0 && ret >= 0)
		ret = -errno;
	return ret;
}

/*
 * Install n seccomp filters (lens[i] instructions each, packed in insns,
 * the first installed first), then execve(2): no other system call in
 * between, so a filter that forbids what the interpreter would do next
 * (mmap, close, sigprocmask) cannot stop it half way.  An unprivileged
 * caller needs no_new_privs (or CAP_SYS_ADMIN).  Returns -errno only.
 */
static int ckpt_seccomp_execve(const char *path, char *const argv[],
			       char *const envp[], const void *insns,
			       const unsigned int *lens, int n)
{
	const char *at = insns;
	struct sock_fprog prog;
	int i;

	for (i = 0; i < n; i++) {
		prog.len = lens[i];
		prog.filter = (struct sock_filter *)at;
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
			return -errno;
		at += (size_t)lens[i] * SECCOMP_INSN_SIZE;
	}
	execve(path, argv, envp);
	return -errno;
}

static int ckpt_prctl(int option, unsigned long arg2, unsigned long arg3,
		      unsigned long arg4, unsigned long arg5)
{
	int ret = prctl(option, arg2, arg3, arg4, arg5);

	return ret < 0 ? -errno : ret;
}
"""

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_DEFINE = re.compile(r"#\s*define\s+([A-Za-z_]\w*)(\(?)\s*(.*)")
_ARRAY_LEN = re.compile(r"\[\s*[A-Za-z_]\w*\s*\]")


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined, as the preprocessor sees them."""
    return text.replace("\\\n", " ").splitlines()


def header_cdef(text: str) -> str:
    """The cdef for one header: its declarations, and every macro as ``...``.

    Preprocessor lines are dropped (cdef cannot take them); each object-like
    ``#define`` becomes ``#define NAME ...`` (or a ``char *`` constant for a
    string) so that the compiler gives the value, ioctl numbers included.
    Array lengths named by a macro become ``[...]`` for the same reason.
    """
    text = _COMMENT.sub(" ", text)
    decls: list[str] = []
    macros: list[str] = []
    guard = None
    for line in _logical_lines(text):
        stripped = line.strip()
        if not stripped.startswith("#"):
            decls.append(_ARRAY_LEN.sub("[...]", line))
            continue
        ifndef = re.match(r"#\s*ifndef\s+(\w+)", stripped)
        if ifndef and guard is None:
            guard = ifndef.group(1)
            continue
        m = _DEFINE.match(stripped)
        if not m:
            continue  # #include, #endif, ...
        name, paren, value = m.groups()
        if paren or name == guard or not value:
            continue  # function-like macros and the include guard
        if value.startswith('"'):
            macros.append(f"static const char *const {name};")
        else:
            macros.append(f"#define {name} ...")
    return "\n".join([TYPEDEFS, *decls, *macros])


def headers_cdef(headers: tuple[Path, ...] = HEADERS) -> str:
    """The cdef for every header, in order (the typedefs once)."""
    parts = [header_cdef(h.read_text()).removeprefix(TYPEDEFS) for h in headers]
    return TYPEDEFS + "\n".join(parts)


def make_ffibuilder(headers: tuple[Path, ...] = HEADERS) -> FFI:
    builder = FFI()
    builder.cdef(headers_cdef(headers) + HELPERS_CDEF)
    builder.set_source(
        "pyckpt._ckpt",
        HELPERS_SRC,
        include_dirs=[str(UAPI_DIR)],
        depends=[str(h) for h in headers],
    )
    return builder


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT), verbose=True)
