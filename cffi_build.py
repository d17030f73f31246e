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
#include "ckpt.h"
#include "ckpt_image.h"

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
