"""Build pyckpt._ckpt (cffi API mode, out of line) from kmod/include/uapi/ckpt.h.

The header is the single truth for every layout and constant: the cdef below
is generated from it, and the C compiler supplies every value and offset
(``#define NAME ...``), so no number of the ABI is retyped in Python.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent
UAPI_DIR = ROOT / "kmod" / "include" / "uapi"
HEADER = UAPI_DIR / "ckpt.h"

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
# lacks and that checkpoint and the tests need (kcmp, pidfd_getfd, tee(2),
# epoll_ctl(2) with a chosen 64-bit data: select.epoll only stores the fd), the
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
long ckpt_unix_peers(unsigned int *ino, unsigned int *peer, long max);
#define SPLICE_F_NONBLOCK ...
#define EPOLL_CTL_ADD ...
#define KCMP_FILE ...
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
#include <unistd.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <linux/kcmp.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include "ckpt.h"

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
 * Every connected unix socket of this network namespace, as sock_diag (what
 * ss -x prints) says: its inode in ino[], its peer's in peer[].  Returns how
 * many there are (only the first max stored: call again with more room), or
 * -errno.
 */
static long ckpt_unix_peers(unsigned int *ino, unsigned int *peer, long max)
{
	struct {
		struct nlmsghdr nlh;
		struct unix_diag_req req;
	} msg = {
		.nlh = {
			.nlmsg_len = sizeof(msg),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
			.nlmsg_seq = 1,
		},
		.req = {
			.sdiag_family = AF_UNIX,
			.udiag_states = ~0U,
			.udiag_show = UDIAG_SHOW_PEER,
		},
	};
	struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
	long buf[8192];	/* 64 KiB, aligned for the headers */
	long n = 0;
	int fd, err = 0;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	if (sendto(fd, &msg, sizeof(msg), 0, (struct sockaddr *)&nl,
		   sizeof(nl)) < 0) {
		err = errno;
		goto out;
	}
	for (;;) {
		struct nlmsghdr *h = (struct nlmsghdr *)buf;
		int len = recv(fd, buf, sizeof(buf), 0);

		if (len < 0 && errno == EINTR)
			continue;
		if (len <= 0) {
			err = len < 0 ? errno : EIO;
			goto out;
		}
		for (; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
			struct unix_diag_msg *m = NLMSG_DATA(h);
			struct rtattr *a = (struct rtattr *)(m + 1);
			int alen = h->nlmsg_len - NLMSG_LENGTH(sizeof(*m));

			if (h->nlmsg_type == NLMSG_DONE)
				goto out;
			if (h->nlmsg_type == NLMSG_ERROR) {
				err = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
				goto out;
			}
			for (; alen > 0 && RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
				unsigned int p;

				if (a->rta_type != UNIX_DIAG_PEER ||
				    RTA_PAYLOAD(a) < sizeof(p))
					continue;
				p = *(unsigned int *)RTA_DATA(a);
				if (!p)
					continue;	/* not connected */
				if (n < max) {
					ino[n] = m->udiag_ino;
					peer[n] = p;
				}
				n++;
			}
		}
	}
out:
	close(fd);
	return err ? -err : n;
}
"""

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_DEFINE = re.compile(r"#\s*define\s+([A-Za-z_]\w*)(\(?)\s*(.*)")
_ARRAY_LEN = re.compile(r"\[\s*[A-Za-z_]\w*\s*\]")


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined, as the preprocessor sees them."""
    return text.replace("\\\n", " ").splitlines()


def header_cdef(text: str) -> str:
    """The cdef for ckpt.h: its declarations, and every macro as ``...``.

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


def make_ffibuilder(header: Path = HEADER) -> FFI:
    builder = FFI()
    builder.cdef(header_cdef(header.read_text()) + HELPERS_CDEF)
    builder.set_source(
        "pyckpt._ckpt",
        HELPERS_SRC,
        include_dirs=[str(UAPI_DIR)],
        depends=[str(header)],
    )
    return builder


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(ROOT), verbose=True)
