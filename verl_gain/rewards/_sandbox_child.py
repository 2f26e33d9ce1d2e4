"""The process the sandbox starts: locks itself in, then runs the untrusted program.

Run as ``python -I -S -B _sandbox_child.py VERDICT_FD`` by ``verl_gain.rewards.sandbox``; it reads on stdin one JSON
object (``program``, optional ``data`` and ``channel``, ``nonce``, ``limits``, ``jail``, ``drop_to_uid``,
``landlock``, ``seccomp``, ``guard``, ``site_dir``, ``cgroup_procs``). Standard library only; nothing is imported
after the limits are set except by the program itself.

Order matters, and every step that was asked for must succeed or the program does not run (``sandbox_error``):

1. stdin is consumed and replaced by /dev/null; the process joins its pids cgroup (before anything can fork).
2. ``jail`` (in fresh mount, PID, network, IPC and UTS namespaces): a new root file system on a small tmpfs holding
   only read-only bind mounts of what the interpreter needs (its binary, standard library, the system libraries,
   the allowed packages), ``/dev/{null,zero,random,urandom}``, a ``/proc`` of the new PID namespace, and a
   size-limited tmpfs ``/work`` (the total disk quota) as working directory; ``pivot_root`` into it and the old
   root detached, so nothing else of the host (``/etc/shadow``, the project, other users' files) is even there.
3. privileges: every capability dropped from the bounding set, the process moves to a throw-away uid (as root),
   the remaining capability sets are cleared, and ``no_new_privs`` is set (no set-uid binary can give any back).
4. ``landlock`` (where the kernel has it): reads only beneath the listed paths, writes only in the working
   directory, no TCP bind/connect, no signals or abstract Unix sockets outside the sandbox.
5. ``seccomp``: a filter refusing the system calls a program never needs and an escape would (mount, namespaces,
   ptrace, pidfd signals, kernel modules, io_uring, ...); in ``guard`` mode without a PID namespace also process
   creation, exec, sockets and signals to other processes.
6. resource limits, then the Python audit-hook guard, then the program.

The verdict goes to VERDICT_FD as one JSON line: ``{"status": "passed", "nonce": ...}`` only when the program
returned normally in this very process (not in a forked copy); ``{"status": "error" | "memory", "detail": ...}``
otherwise. The program (a test harness) can send JSON values to the parent with ``SANDBOX_SEND(value)``.
"""

import builtins
import ctypes
import json
import os
import platform
import resource
import signal
import struct
import sys
import traceback

BYTES_PER_MB = 1024 * 1024
# RLIMIT_CPU: the soft limit sends SIGXCPU, the hard limit one second later SIGKILL (a handler cannot outlive it).
CPU_HARD_MARGIN_S = 1
DETAIL_CHARS = 2000
# The globals through which the program receives the ``data`` passed to run_python and sends values back.
DATA_NAME = "SANDBOX_DATA"
SEND_NAME = "SANDBOX_SEND"
CHANNEL_NAME = "SANDBOX_CHANNEL"

# Audit events (https://docs.python.org/3/library/audit_events.html) the guard refuses outright: new processes,
# signals to other processes, and sockets of every family (so also Unix sockets of local services).
BLOCKED_EVENTS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.startfile",
        "subprocess.Popen",
        "pty.spawn",
        "socket.__new__",
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "socket.sendto",
    }
)
# Audit events that change the file system, with the positions of their path arguments: refused outside the workdir.
PATH_WRITE_EVENTS = {
    "os.chflags": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.link": (0, 1),
    "os.mkdir": (0,),
    "os.mkfifo": (0,),
    "os.mknod": (0,),
    "os.remove": (0,),
    "os.removexattr": (0,),
    "os.rename": (0, 1),
    "os.rmdir": (0,),
    "os.setxattr": (0,),
    "os.symlink": (1,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
}
# The argument of those events that carries a directory descriptor (a relative path is then not under the cwd).
DIR_FD_EVENTS = {
    "os.chmod": (2,),
    "os.chown": (3,),
    "os.link": (2, 3),
    "os.mkdir": (2,),
    "os.mkfifo": (2,),
    "os.mknod": (3,),
    "os.remove": (1,),
    "os.rename": (2, 3),
    "os.rmdir": (1,),
    "os.symlink": (2,),
    "os.utime": (3,),
}
# What CPython reports as the dir_fd of a call without one (-1), and AT_FDCWD.
DEFAULT_DIR_FDS = (None, -1, -100)
WRITE_MODE_CHARS = frozenset("wax+")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _inside(path, root: str) -> bool:
    """Whether ``path`` (str, bytes or PathLike; relative to the current directory) resolves inside ``root``."""
    if isinstance(path, int):  # a file descriptor: already open, nothing new is reached
        return True
    real = os.path.realpath(os.fsdecode(os.fspath(path)))
    return real == root or real.startswith(root + os.sep)


def install_guard(workdir: str, pid: int) -> None:
    """Refuse process creation, sockets, signals to other processes and file-system writes outside ``workdir``.

    A guard against the accidents of generated code (a stray ``os.system``, a socket, a file written to /tmp), not a
    security boundary by itself: native code (ctypes) bypasses audit hooks. The kernel layers (jail, landlock,
    seccomp, dropped privileges) are the boundary.
    """
    root = os.path.realpath(workdir)

    def hook(event: str, args: tuple) -> None:
        if event in BLOCKED_EVENTS:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event in ("os.kill", "os.killpg") and args and args[0] not in (0, pid, os.getpid()):
            raise PermissionError(f"sandbox: {event} of another process is not allowed")
        if event == "open":
            path, mode, flags = (*tuple(args), None, None, None)[:3]
            writes = (isinstance(mode, str) and bool(WRITE_MODE_CHARS & set(mode))) or (
                mode is None and isinstance(flags, int) and bool(flags & WRITE_FLAGS)
            )
            if writes and path is not None and not _inside(path, root):
                raise PermissionError(f"sandbox: writing {path!r} outside the working directory is not allowed")
            return
        positions = PATH_WRITE_EVENTS.get(event)
        if positions:
            for position in DIR_FD_EVENTS.get(event, ()):
                if position < len(args) and args[position] not in DEFAULT_DIR_FDS:
                    raise PermissionError(f"sandbox: {event} relative to a directory descriptor is not allowed")
            for position in positions:
                if position < len(args) and args[position] is not None and not _inside(args[position], root):
                    raise PermissionError(f"sandbox: {event} on {args[position]!r} outside the working directory")

    sys.addaudithook(hook)


def apply_limits(limits: dict) -> None:
    """Set the resource limits (soft = hard, so the program cannot raise them again)."""
    memory = int(limits["memory_mb"]) * BYTES_PER_MB
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + CPU_HARD_MARGIN_S))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["max_file_mb"]) * BYTES_PER_MB,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(limits["max_open_files"]),) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.get("max_processes"):
        resource.setrlimit(resource.RLIMIT_NPROC, (int(limits["max_processes"]),) * 2)
    # Past RLIMIT_FSIZE a write then fails with an OSError instead of killing the process without a verdict.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


class SetupError(Exception):
    """A layer that was asked for could not be put in place: the program must not run."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(errno)}")
    return result


# ------------------------------------------------------------------------------------------------------- the jail
# mount(2) flags (linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
READ_ONLY_BIND = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
JAIL_ROOT_SIZE = "size=1m,nr_inodes=4096,mode=755"
# The device nodes a Python program may open.
DEVICES = ("null", "zero", "random", "urandom")


def _mount(source, target, fstype, flags: int, options) -> None:
    encode = lambda value: None if value is None else os.fsencode(value)  # noqa: E731
    result = _libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(options))
    _check(result, f"mount {target}")


MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
# statvfs flags of the source mount that a remount must keep where the mount is locked (inside a user namespace).
STATVFS_TO_MOUNT_FLAGS = {
    os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: MS_NOATIME,
    os.ST_NODIRATIME: MS_NODIRATIME,
    os.ST_RELATIME: MS_RELATIME,
}


def _kept_flags(path: str) -> int:
    flags = os.statvfs(path).f_flag
    return sum(mount_flag for statvfs_flag, mount_flag in STATVFS_TO_MOUNT_FLAGS.items() if flags & statvfs_flag)


def _make_parents(path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)


def build_jail(jail: dict, uid: int | None) -> None:
    """The new root file system (see the module docstring), entered with ``pivot_root``; cwd = ``/work``."""
    root = jail["staging"]
    os.umask(0o022)  # the folders made for the mount points must be traversable by the sandbox's uid
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing below propagates back to the host
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, JAIL_ROOT_SIZE)
    for entry in jail["plan"]:
        target = root + entry["path"]
        if os.path.lexists(target):
            continue  # inside a folder bound earlier
        _make_parents(target)
        if "symlink" in entry:
            os.symlink(entry["symlink"], target)
            continue
        if entry["dir"]:
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(entry["path"], target, None, MS_BIND, None)
        _mount(None, target, None, READ_ONLY_BIND | _kept_flags(entry["path"]), None)
    os.mkdir(root + "/dev", 0o755)
    for name in DEVICES:
        node = f"{root}/dev/{name}"
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(f"/dev/{name}", node, None, MS_BIND, None)
        _mount(None, node, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC, None)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
        os.symlink(target, f"{root}/dev/{name}")
    os.symlink("/proc/self/fd/2", f"{root}/dev/stderr")
    os.mkdir(root + "/proc", 0o555)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    work = root + jail["workdir"]
    os.makedirs(work, mode=0o755)
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    disk = int(jail["disk_mb"])
    _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk}m,nr_inodes={jail['max_files']},mode=700{owner}")
    if not os.path.lexists(root + "/tmp"):  # programs that write to /tmp write to the working directory
        os.symlink(jail["workdir"], root + "/tmp")
    os.chdir(root)
    _check(_libc.syscall(SYSCALLS["pivot_root"], b".", b"."), "pivot_root")  # the old root now sits below "."
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    os.chdir(jail["workdir"])


# ------------------------------------------------------------------------------------------------------ privileges
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECUREBITS = 28
# SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP... kept simple: NOROOT (+ locked) means uid 0 gains no
# capabilities on exec.
SECBITS_NOROOT_LOCKED = 0x3
LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_privileges(uid: int | None) -> None:
    """Empty the capability bounding set, move to ``uid`` (as root), clear every capability set, set no_new_privs."""
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last = int(handle.read())
    if os.geteuid() == 0 or uid is not None:
        for cap in range(last + 1):
            _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap} from the bounding set")
        _libc.prctl(PR_SET_SECUREBITS, SECBITS_NOROOT_LOCKED, 0, 0, 0)  # best effort: the bounding set is empty
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("II", LINUX_CAPABILITY_VERSION_3, 0)
    empty = bytes(24)  # two __user_cap_data_struct of (effective, permitted, inheritable) u32s
    _check(_libc.syscall(SYSCALLS["capset"], header, empty), "clear the capability sets")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")


def capabilities_left() -> int:
    """The effective, permitted and ambient capability sets, or-ed (0 when no capability is left to use)."""
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":", 1) for line in handle if ":" in line)
    return int(fields["CapEff"], 16) | int(fields["CapPrm"], 16) | int(fields["CapAmb"], 16)


# ------------------------------------------------------------------------------------------------------- landlock
# linux/landlock.h
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK, FS_MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
READ_RIGHTS = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR


def apply_landlock(rules: dict) -> int:
    """Restrict this process (and its children) to the rules; returns the Landlock ABI used."""
    abi = _libc.syscall(SYSCALLS["landlock_create_ruleset"], None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    _check(abi, "landlock")
    handled_fs = FS_RIGHTS_BY_ABI[min(abi, max(FS_RIGHTS_BY_ABI))]
    attr = struct.pack("Q", handled_fs)
    if abi >= 4:
        attr += struct.pack("Q", NET_BIND_TCP | NET_CONNECT_TCP)  # no rule: no TCP at all
    if abi >= 6:
        attr += struct.pack("Q", SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    ruleset = _check(_libc.syscall(SYSCALLS["landlock_create_ruleset"], attr, len(attr), 0), "landlock ruleset")
    own_process = [f"/proc/{os.getpid()}"] if rules.get("own_process") else []  # its own status, fds, limits
    grants = [(path, READ_RIGHTS) for path in [*rules["read"], *own_process]]
    grants += [(path, FS_READ_DIR) for path in rules.get("list", ())]
    grants += [(path, FS_READ_FILE | FS_WRITE_FILE) for path in rules["devices"]]
    grants += [(path, handled_fs & ~(FS_MAKE_CHAR | FS_MAKE_BLOCK)) for path in rules["write"]]
    for path, rights in grants:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            if not os.path.isdir(path):
                rights &= FILE_RIGHTS
            rule = struct.pack("=Qi", rights & handled_fs, fd)
            _check(_libc.syscall(SYSCALLS["landlock_add_rule"], ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0), path)
        finally:
            os.close(fd)
    _check(_libc.syscall(SYSCALLS["landlock_restrict_self"], ruleset, 0), "landlock_restrict_self")
    os.close(ruleset)
    return abi


# -------------------------------------------------------------------------------------------------------- seccomp
# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl); other architectures run without this layer.
SYSCALLS = {
    "socket": 41,
    "connect": 42,
    "bind": 49,
    "socketpair": 53,
    "clone": 56,
    "fork": 57,
    "vfork": 58,
    "execve": 59,
    "kill": 62,
    "ptrace": 101,
    "syslog": 103,
    "setsid": 112,
    "capset": 126,
    "rt_sigqueueinfo": 129,
    "personality": 135,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "tkill": 200,
    "clock_settime": 227,
    "tgkill": 234,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "rt_tgsigqueueinfo": 297,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "seccomp": 317,
    "kexec_file_load": 320,
    "bpf": 321,
    "execveat": 322,
    "userfaultfd": 323,
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_open": 434,
    "clone3": 435,
    "pidfd_getfd": 438,
    "landlock_create_ruleset": 444,
    "landlock_add_rule": 445,
    "landlock_restrict_self": 446,
    "mount_setattr": 442,
}
# Refused in every mode: nothing a test program needs, everything an escape or a kernel attack would.
DENIED_ALWAYS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "open_by_handle_at",
    "name_to_handle_at",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "syslog",
    "acct",
    "quotactl",
    "iopl",
    "ioperm",
    "sethostname",
    "setdomainname",
    "personality",
    "tkill",
)
# Refused in guard mode (no PID namespace to contain children, no network namespace): no new process, no exec, no
# socket, no session escape.
DENIED_WITHOUT_NAMESPACES = ("fork", "vfork", "execve", "execveat", "socket", "socketpair", "setsid")
# Signals: without a PID namespace only this process (or its own group: the sandbox's session) may be signalled.
SIGNAL_SYSCALLS_BY_TARGET = ("kill", "rt_sigqueueinfo", "tgkill", "rt_tgsigqueueinfo")
# clone(2) flags that create namespaces; clone without CLONE_THREAD creates a process.
CLONE_NEW_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET (+ NEWTIME is clone3 only)
CLONE_THREAD = 0x00010000
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
# BPF (linux/filter.h, linux/seccomp.h)
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K, BPF_ALU_AND_K = 0x20, 0x15, 0x35, 0x45, 0x06, 0x54
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
EPERM = 1
ENOSYS = 38
SECCOMP_SET_MODE_FILTER = 1
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0_LOW = 0, 4, 16


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_program(with_namespaces: bool, own_pid: int) -> bytes:
    """The BPF filter (see the module docstring): a list of ``struct sock_filter``."""
    deny = SECCOMP_RET_ERRNO | EPERM
    out = [
        _bpf(BPF_LD_W_ABS, OFFSET_ARCH),
        _bpf(BPF_JEQ_K, AUDIT_ARCH_X86_64, jt=1),
        _bpf(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),  # another ABI (i386 int 0x80) could dodge the numbers below
        _bpf(BPF_LD_W_ABS, OFFSET_NR),
        _bpf(BPF_JGE_K, X32_SYSCALL_BIT, jf=1),
        _bpf(BPF_RET_K, deny),
        # clone3 passes its flags in memory, where a filter cannot look: ENOSYS makes the C library fall back to clone
        _bpf(BPF_JEQ_K, SYSCALLS["clone3"], jf=1),
        _bpf(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS),
    ]
    denied = list(DENIED_ALWAYS) + ([] if with_namespaces else list(DENIED_WITHOUT_NAMESPACES))
    for name in denied:
        out += [_bpf(BPF_JEQ_K, SYSCALLS[name], jf=1), _bpf(BPF_RET_K, deny)]
    # clone: no namespace flags; without namespaces also only threads.
    clone_checks = [_bpf(BPF_LD_W_ABS, OFFSET_ARG0_LOW), _bpf(BPF_JSET_K, CLONE_NEW_FLAGS, jt=0, jf=1)]
    clone_checks.append(_bpf(BPF_RET_K, deny))
    if not with_namespaces:
        clone_checks += [_bpf(BPF_JSET_K, CLONE_THREAD, jt=1), _bpf(BPF_RET_K, deny)]
    clone_checks.append(_bpf(BPF_RET_K, SECCOMP_RET_ALLOW))
    out += [_bpf(BPF_JEQ_K, SYSCALLS["clone"], jf=len(clone_checks)), *clone_checks]
    if not with_namespaces:
        for name in SIGNAL_SYSCALLS_BY_TARGET:  # first argument: the target pid (or tgid); 0 = own process group
            target_checks = [
                _bpf(BPF_LD_W_ABS, OFFSET_ARG0_LOW),
                _bpf(BPF_JEQ_K, own_pid, jt=2),
                _bpf(BPF_JEQ_K, 0, jt=1),
                _bpf(BPF_RET_K, deny),
                _bpf(BPF_RET_K, SECCOMP_RET_ALLOW),
            ]
            out += [_bpf(BPF_LD_W_ABS, OFFSET_NR), _bpf(BPF_JEQ_K, SYSCALLS[name], jf=len(target_checks))]
            out += target_checks
    out.append(_bpf(BPF_RET_K, SECCOMP_RET_ALLOW))
    return b"".join(out)


def apply_seccomp(with_namespaces: bool, own_pid: int) -> int:
    """Install the filter (needs no_new_privs); returns the number of BPF instructions."""
    if platform.machine() != "x86_64":
        raise SetupError(f"seccomp filter: no system call table for {platform.machine()}")
    program = seccomp_program(with_namespaces, own_pid)
    count = len(program) // 8
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HxxxxxxQ", count, ctypes.addressof(buffer))
    _check(_libc.syscall(SYSCALLS["seccomp"], SECCOMP_SET_MODE_FILTER, 0, fprog), "seccomp")
    return count


# ----------------------------------------------------------------------------------------------------------- main
def main() -> None:
    verdict_fd = int(sys.argv[1])
    config = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)
    runner_pid = os.getpid()
    nonce = config.pop("nonce")

    def write_line(line: dict) -> None:
        try:
            os.write(verdict_fd, (json.dumps(line) + "\n").encode("utf-8"))
        except OSError:
            pass

    def report(status: str, detail: str = "", secret: str | None = None) -> None:
        if os.getpid() != runner_pid:  # a forked copy of this process never speaks for the program
            return
        line = {"status": status, "detail": detail[-DETAIL_CHARS:]}
        if secret is not None:
            line["nonce"] = secret
        write_line(line)

    def send(value) -> None:
        """Send a JSON value to the parent (a harness reports results this way)."""
        write_line({"message": value})

    layers: dict = {}
    try:
        if config.get("cgroup_procs"):  # join the pids cgroup before anything can fork
            with open(config["cgroup_procs"], "w") as procs:
                procs.write(str(runner_pid))
        uid = config.get("drop_to_uid")
        if config.get("jail"):
            build_jail(config["jail"], uid)
            layers["jail"] = True
        drop_privileges(uid)
        layers["caps_dropped"] = capabilities_left() == 0
        if not layers["caps_dropped"]:
            raise SetupError("capabilities are left after dropping them")
        if config.get("landlock"):
            layers["landlock"] = apply_landlock(config["landlock"])
        if config.get("seccomp"):
            layers["seccomp"] = apply_seccomp(bool(config.get("jail")), runner_pid)
    except (SetupError, OSError) as exc:
        write_line({"setup": layers})
        report("sandbox_error", f"sandbox set-up failed: {exc}")
        os._exit(1)
    # A first line on the verdict pipe says which layers are in place, even if the program later dies without a word.
    write_line({"setup": layers})
    apply_limits(config["limits"])
    if config.get("site_dir"):
        sys.path.append(config["site_dir"])
    if config.get("guard", True):
        install_guard(os.getcwd(), runner_pid)
    for name in ("exit", "quit"):  # what the site module (off: -S) would add, and solutions call
        if not hasattr(builtins, name):
            setattr(builtins, name, sys.exit)
    program = config.pop("program")
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__file__": "solution.py", SEND_NAME: send}
    if "data" in config:  # test data for a harness: handed over as objects, not compiled as a huge literal
        namespace[DATA_NAME] = config.pop("data")
    if config.get("channel"):  # (read fd, write fd) of the pipe to the other program of a pair
        namespace[CHANNEL_NAME] = tuple(config["channel"])
    sys.argv = ["solution.py"]
    exit_code = 1
    try:
        code = compile(program, "solution.py", "exec")
        del program
        exec(code, namespace)
    except MemoryError:
        report("memory", "MemoryError")
    except SystemExit as exc:
        report("error", f"SystemExit({exc.code!r}) before the tests finished")
    except BaseException as exc:
        # The traceback from the program's frames on (the runner's own frame is noise).
        report("error", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next)))
    else:
        report("passed", secret=nonce)
        exit_code = 0
    # Skip interpreter shutdown: no atexit handlers or non-daemon threads of the program run after the verdict.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(exit_code)


if __name__ == "__main__":
    main()
