"""The process the sandbox starts: applies the limits to itself, then runs the untrusted program.

Run as ``python -I -B _sandbox_child.py VERDICT_FD`` by ``verl_gain.rewards.sandbox.run_python``; it reads one JSON
object from stdin (``program``, optional ``data``, ``nonce``, ``limits``, ``drop_to_uid``, ``guard``, ``workdir``,
``readonly_fs``, ``cgroup_procs``). Standard library only,
and nothing imported after the limits are set except by the program itself.

Order matters: stdin is consumed and replaced by /dev/null, privileges are dropped (when the parent asked for it), the
resource limits are applied, the Python guard is installed, and only then is the program compiled and executed.
The verdict goes to VERDICT_FD as one JSON line: ``{"status": "passed", "nonce": ...}`` only when the program returned
normally in this very process (not in a forked copy); ``{"status": "error" | "memory", "detail": ...}`` otherwise.
"""

import builtins
import json
import os
import re
import resource
import signal
import sys
import traceback

BYTES_PER_MB = 1024 * 1024
# RLIMIT_CPU: the soft limit sends SIGXCPU, the hard limit one second later SIGKILL (a handler cannot outlive it).
CPU_HARD_MARGIN_S = 1
DETAIL_CHARS = 2000
# The global through which the program receives the ``data`` passed to run_python.
DATA_NAME = "SANDBOX_DATA"

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
    security boundary: audit hooks cannot be removed from Python, but native code (ctypes) can bypass them.
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


# mount(2) flags (linux/mount.h) and the mountinfo options that must be kept on a bind remount.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
KEPT_MOUNT_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}


def make_filesystem_readonly(workdir: str) -> bool:
    """In the child's own mount namespace: every mount read-only except ``workdir`` (bind-mounted onto itself first).

    Returns whether every remount succeeded. Only ever called inside a fresh mount namespace (``unshare --mount``):
    the parent's mounts are not touched.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    root = os.path.realpath(workdir)
    encoded = root.encode()
    if libc.mount(encoded, encoded, None, MS_BIND, None) != 0:
        return False
    os.chdir(root)  # the old working directory is on the mount below the bind mount, which becomes read-only
    complete = True
    with open("/proc/self/mountinfo") as mountinfo:
        mounts = [line.split() for line in mountinfo]
    for fields in mounts:
        # mountinfo: id parent major:minor root mount_point options ...; octal escapes for spaces and tabs.
        target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if target == root or target.startswith(root + os.sep):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in fields[5].split(","):
            flags |= KEPT_MOUNT_OPTIONS.get(option, 0)
        if libc.mount(None, target.encode(), None, flags, None) != 0:
            complete = False
    return complete


def drop_privileges(uid: int) -> None:
    """Become an unprivileged user (as root, RLIMIT_NPROC is not enforced and every file is writable)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def main() -> None:
    verdict_fd = int(sys.argv[1])
    config = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)
    runner_pid = os.getpid()
    if config.get("cgroup_procs"):  # join the pids cgroup before anything can fork
        with open(config["cgroup_procs"], "w") as procs:
            procs.write(str(runner_pid))
    nonce = config.pop("nonce")

    def report(status: str, detail: str = "", secret: str | None = None) -> None:
        if os.getpid() != runner_pid:  # a forked copy of this process never speaks for the program
            return
        line = {"status": status, "detail": detail[-DETAIL_CHARS:]}
        if secret is not None:
            line["nonce"] = secret
        try:
            os.write(verdict_fd, (json.dumps(line) + "\n").encode("utf-8"))
        except OSError:
            pass

    readonly = False
    if config.get("readonly_fs"):
        try:
            readonly = make_filesystem_readonly(config["workdir"])
        except OSError:
            readonly = False
    # A first line on the verdict pipe says which layers are in place, even if the program later dies without a word.
    os.write(verdict_fd, (json.dumps({"setup": {"readonly_fs": readonly}}) + "\n").encode("utf-8"))
    if config.get("drop_to_uid") is not None:
        drop_privileges(int(config["drop_to_uid"]))
    apply_limits(config["limits"])
    if config.get("guard", True):
        install_guard(config["workdir"], runner_pid)
    program = config.pop("program")
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__file__": "solution.py"}
    if "data" in config:  # test data for a harness: handed over as objects, not compiled as a huge literal
        namespace[DATA_NAME] = config.pop("data")
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
