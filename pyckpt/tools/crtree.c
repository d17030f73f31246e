// SPDX-License-Identifier: GPL-2.0
/*
 * crtree: the process tree `python -m pyckpt.tools.bench criu` checkpoints with
 * pyckpt and with CRIU.  Static and tiny, so that CRIU's memory dump costs
 * little and both tools spend their time on the fds.
 *
 *   crtree TASKS FDS SCRATCH READY_FD
 *
 * The root opens FDS/2 fds that every task inherits, forks TASKS-1
 * children, and then every task (the root too) opens FDS - FDS/2 fds of its
 * own: by fours a pipe with data buffered in it (both ends), an eventfd and
 * SCRATCH opened read-only; the remainder (FDS/2 not a multiple of 4) is
 * more opens of SCRATCH.  Each task thus holds exactly 3 + FDS fds (0-2
 * are whatever it was started with: /dev/null for the bench).  Each task
 * closes READY_FD once its fds are all open and then pause()s, so the
 * starter reads READY_FD's pipe until EOF to know the whole tree is built.
 *
 *   crtree pause
 *
 * only pause()s: what pyckpt's restarted tasks exec (they keep their fds).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	_exit(1);
}

static void open_fds(int n, const char *scratch, int tag)
{
	char buf[32];
	int p[2];
	int i, len;

	for (i = 0; i + 4 <= n; i += 4) {
		if (pipe(p))
			die("pipe");
		len = snprintf(buf, sizeof(buf), "buffered %d.%d", tag, i);
		if (write(p[1], buf, len) != len)
			die("write");
		if (eventfd(i, 0) < 0)
			die("eventfd");
		if (open(scratch, O_RDONLY) < 0)
			die("open");
	}
	for (; i < n; i++)
		if (open(scratch, O_RDONLY) < 0)
			die("open");
}

static void __attribute__((noreturn)) task(int ready, int own,
					   const char *scratch, int tag)
{
	open_fds(own, scratch, tag);
	close(ready);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	int tasks, fds, ready, i;
	pid_t pid;

	if (argc == 2 && !strcmp(argv[1], "pause"))
		for (;;)
			pause();
	if (argc != 5) {
		fprintf(stderr, "usage: crtree TASKS FDS SCRATCH READY_FD | crtree pause\n");
		return 2;
	}
	tasks = atoi(argv[1]);
	fds = atoi(argv[2]);
	ready = atoi(argv[4]);
	if (tasks < 1 || fds < 0 || fds > 1 << 20 || ready < 0) {
		fprintf(stderr, "crtree: bad TASKS or FDS or READY_FD\n");
		return 2;
	}
	/* room for the fds, and for READY_FD above them */
	if (getrlimit(RLIMIT_NOFILE, &rl))
		die("getrlimit");
	if (rl.rlim_cur < (rlim_t)fds + 64) {
		rl.rlim_cur = fds + 64;
		if (rl.rlim_max < rl.rlim_cur)
			rl.rlim_max = rl.rlim_cur;
		if (setrlimit(RLIMIT_NOFILE, &rl))
			die("setrlimit");
	}
	/* out of the way of the numbers the tree's fds take */
	i = fcntl(ready, F_DUPFD_CLOEXEC, fds + 32);
	if (i < 0)
		die("ready fd");
	close(ready);
	ready = i;

	open_fds(fds / 2, argv[3], 0);
	for (i = 1; i < tasks; i++) {
		pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0)
			task(ready, fds - fds / 2, argv[3], i);
	}
	task(ready, fds - fds / 2, argv[3], 0);
}
