"""Run untrusted Python (generated code) in a separate, locked-in process and return a verdict.

``run_python(program, limits, data, on_message)`` never raises for anything the program does: a crash, a hang, a
memory hog, a fork bomb, a disk fill, output floods or escape attempts all end in a ``SandboxResult`` within
``limits.timeout_s`` (plus process start-up and clean-up). ``run_python_pair`` runs two programs connected by a pipe
(a test and a solution, so that the test's expected values live in a process the solution cannot reach). Both are
thread-safe (verl's reward loop scores in a thread pool) and use no ``preexec_fn`` (unsafe with threads): the child
(``_sandbox_child.py``) locks itself in before it compiles the program.

Layers (``SandboxResult.isolation`` names those a run had; docs/rewards.md maps each guarantee to its test):

- ``timeout``: a wall-clock limit; on expiry the whole process group is killed with SIGKILL. RLIMIT_CPU backs it.
- ``rlimits``: RLIMIT_AS (memory), RLIMIT_FSIZE (largest file, output included), RLIMIT_NOFILE, no core dumps.
- ``pidns``, ``netns``: new PID, network, IPC and UTS namespaces (``unshare``): no network but a down loopback, and
  every process the program started dies with the sandbox.
- ``jail``: in its own mount namespace the child builds a new root file system on a tmpfs holding only read-only
  bind mounts of the interpreter, its standard library, the system libraries and the allowed ``packages``, plus
  ``/dev/null`` & co, its own ``/proc`` and the working directory, and ``pivot_root``s into it: nothing else of the
  host exists for it (``/etc/shadow``, the project, the trainer's files).
- ``disk_quota``: the working directory is a tmpfs of ``disk_mb`` MiB and ``max_files`` inodes (the jail); without
  the jail the parent measures the directory while the program runs and kills it past the quota.
- ``caps_dropped``: after the namespaces are set up, the bounding set is emptied, the child moves to a throw-away
  uid (as root), its capability sets are cleared and ``no_new_privs`` is set: no ``mount``, no raw sockets, no
  ``ptrace`` of others, nothing regained through a set-uid binary.
- ``landlock`` (kernel >= 5.13): reads only beneath the listed paths, writes only in the working directory, no TCP,
  and (ABI >= 6) no signals or abstract Unix sockets outside the sandbox.
- ``seccomp`` (x86_64): mount, namespaces, ptrace, pidfd, io_uring, kernel modules and other system calls no test
  needs are refused; without PID and network namespaces also fork, exec, sockets and signals to other processes.
- ``pids_cgroup``: where a cgroup-v1 pids hierarchy is writable, a fresh cgroup caps the number of processes.
- ``guard``: a Python audit hook refuses process creation, sockets, signals to others and writes outside the
  working directory: it catches the accidents of honest code early with a clear message; it is not a boundary
  (ctypes bypasses it), the layers above are.

Where namespaces cannot be created (an unprivileged container) the run is in *guard-only mode*: landlock, seccomp,
dropped capabilities, rlimits, the disk watchdog and the guard, but no jail and no namespaces; see docs/rewards.md.

A "passed" verdict needs a per-run secret that the child writes only after the program returned normally in its own
process, so ``sys.exit(0)``/``os._exit(0)`` before the tests, or a forked copy, cannot fake a pass.
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import importlib.util
import json
import os
import platform
import secrets
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHILD_SCRIPT = Path(__file__).with_name("_sandbox_child.py")
# Throw-away uids for the child when running as root: far above the ranges that distributions hand out.
SANDBOX_UID_BASE = 2_000_000_000
SANDBOX_UID_SPAN = 100_000_000
OUTPUT_TAIL_BYTES = 2000
VERDICT_READ_BYTES = 1 << 16
# Start-up of the child interpreter and clean-up are not charged to the program: the wall limit gets this much slack
# before the kill (measured: ~50 ms to start python -I and build the jail here; generous for loaded machines).
STARTUP_ALLOWANCE_S = 0.5
PROBE_TIMEOUT_S = 20.0
# How often the parent looks at the verdict pipe, the process and (without the jail) the disk use.
POLL_INTERVAL_S = 0.02
DISK_CHECK_INTERVAL_S = 0.05
# A cgroup can be removed once its killed processes are reaped; that takes milliseconds.
CGROUP_REMOVE_TRIES = 50
CGROUP_REMOVE_WAIT_S = 0.02
# The interpreter of the child itself (the PID namespace's init when namespaces are used) counts against the pids
# limit; the program may add ``max_processes`` to it.
RUNNER_TASKS = 1
JAIL_WORKDIR = "/sandbox"
"""The working directory inside the jail (a suffix is added where a bound host path lies below it)."""
# What the interpreter needs of the host besides its own files: the system libraries (as symlinks and folders, the
# dynamic loader's paths included) and the loader's cache.
SYSTEM_LIBRARY_PATHS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/etc/ld.so.cache")
BYTES_PER_MB = 1024 * 1024
BYTES_PER_BLOCK = 512  # st_blocks unit
DEFAULT_PACKAGES = ("numpy",)
"""Packages a program may import besides the standard library (solutions to numeric problems use numpy)."""

STATUS_PASSED = "passed"
STATUS_ERROR = "error"
STATUS_MEMORY = "memory"
STATUS_TIMEOUT = "timeout"
STATUS_CRASHED = "crashed"
STATUS_SANDBOX_ERROR = "sandbox_error"


@dataclass
class SandboxLimits:
    """Limits for one sandboxed run.

    timeout_s: wall-clock seconds for the program (RLIMIT_CPU is set to the same, rounded up).
    memory_mb: address-space limit (RLIMIT_AS) in MiB; Python with numpy needs ~300.
    max_file_mb: the largest file the program may write (RLIMIT_FSIZE), its captured output included.
    disk_mb: all files of the working directory together (the tmpfs size, or the watchdog's limit).
    max_files: files and folders the working directory may hold (tmpfs inodes).
    max_processes: processes the program may add (pids cgroup and RLIMIT_NPROC of the throw-away uid).
    max_open_files: RLIMIT_NOFILE.
    max_message_mb: what the program may send back through ``SANDBOX_SEND`` (a harness's results).
    packages: importable packages besides the standard library (found in this interpreter's path).
    guard: install the Python audit-hook guard. use_namespaces / drop_privileges / use_cgroup / use_landlock /
        use_seccomp: use those layers where this machine allows them. Turn one off only to test the others.
    """

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_file_mb: int = 16
    disk_mb: int = 64
    max_files: int = 4096
    max_processes: int = 16
    max_open_files: int = 256
    max_message_mb: int = 64
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    guard: bool = True
    use_namespaces: bool = True
    drop_privileges: bool = True
    use_cgroup: bool = True
    use_landlock: bool = True
    use_seccomp: bool = True

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"SandboxLimits.timeout_s must be > 0 seconds, got {self.timeout_s}")
        if self.memory_mb < 64:
            raise ValueError(
                f"SandboxLimits.memory_mb must be >= 64 (Python itself needs ~30 MiB), got {self.memory_mb}"
            )
        for name in ("max_file_mb", "disk_mb", "max_files", "max_processes", "max_message_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"SandboxLimits.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_open_files < 16:
            raise ValueError(
                f"SandboxLimits.max_open_files must be >= 16 (the interpreter needs some), got {self.max_open_files}"
            )
        self.packages = tuple(self.packages)


@dataclass
class SandboxResult:
    """The verdict of one run.

    status: ``passed`` (returned normally), ``error`` (an exception: a failed assert, wrong answer, syntax error...),
    ``memory`` (MemoryError), ``timeout`` (wall or CPU limit), ``crashed`` (died without a verdict: a signal,
    ``os._exit``), or ``sandbox_error`` (the sandbox itself could not run the program).
    messages: the JSON values the program sent with ``SANDBOX_SEND`` (a harness's results), in order.
    """

    status: str
    detail: str = ""
    output: str = ""
    wall_s: float = 0.0
    returncode: int | None = None
    isolation: tuple[str, ...] = field(default_factory=tuple)
    messages: list[Any] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == STATUS_PASSED


# ----------------------------------------------------------------------------------------- what this machine has
_probe_lock = threading.RLock()  # re-entered: the jail probe runs a sandbox
_probe_cache: dict[str, Any] = {}


def _interpreter() -> str:
    """The real interpreter binary (not a virtual environment's link to it): the jail binds this one file."""
    return os.path.realpath(sys.executable)


def _namespace_prefix() -> list[str] | None:
    """The ``unshare`` command that gives the child new mount, PID, network, IPC and UTS namespaces, or None."""
    with _probe_lock:
        if "namespaces" not in _probe_cache:
            _probe_cache["namespaces"] = None
            unshare = shutil.which("unshare")
            if unshare:
                prefix = [unshare, "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child"]
                if os.geteuid() != 0:  # an unprivileged user needs a user namespace to create the others
                    prefix[1:1] = ["--user", "--map-root-user"]
                try:
                    probe = subprocess.run(
                        [*prefix, _interpreter(), "-I", "-S", "-c", "pass"],
                        capture_output=True,
                        timeout=PROBE_TIMEOUT_S,
                    )
                    if probe.returncode == 0:
                        _probe_cache["namespaces"] = prefix
                except (OSError, subprocess.SubprocessError):
                    pass
        return _probe_cache["namespaces"]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none). The system call numbers are the same on every architecture."""
    with _probe_lock:
        if "landlock" not in _probe_cache:
            landlock_create_ruleset, version_flag = 444, 1
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.syscall.restype = ctypes.c_long
                abi = int(libc.syscall(landlock_create_ruleset, None, 0, version_flag))
            except (OSError, AttributeError):
                abi = -1
            _probe_cache["landlock"] = max(abi, 0)
        return _probe_cache["landlock"]


def seccomp_supported() -> bool:
    """Whether the child can install its filter: seccomp filters in the kernel, and an x86_64 system call table."""
    return platform.machine() == "x86_64" and Path("/proc/sys/kernel/seccomp/actions_avail").is_file()


def _jail_works(packages: tuple[str, ...]) -> bool:
    """Whether a jailed run works here (namespaces, mounts, pivot_root, a throw-away uid): probed by running one."""
    with _probe_lock:
        key = ("jail", packages)
        if key not in _probe_cache:
            _probe_cache[key] = False
            prefix = _namespace_prefix()
            if prefix is not None:
                limits = SandboxLimits(timeout_s=PROBE_TIMEOUT_S, packages=packages, use_cgroup=False)
                plan = _Plan(limits, prefix, jail=True, landlock=0, seccomp=False)
                result = _run_one("import json, math, decimal, fractions, heapq, collections", limits, plan)
                _probe_cache[key] = result.passed
        return _probe_cache[key]


def _pids_cgroup_base() -> Path | None:
    """A cgroup-v1 ``pids`` hierarchy directory this process may create children in, or None.

    RLIMIT_NPROC does not bind root; a pids cgroup does. Found where cgroups are writable (root in a VM or on bare
    metal; usually not inside an unprivileged container, where the other layers still hold).
    """
    with _probe_lock:
        if "cgroup" not in _probe_cache:
            _probe_cache["cgroup"] = None
            try:
                with open("/proc/self/cgroup") as own:
                    lines = [line.strip().split(":", 2) for line in own]
            except OSError:
                lines = []
            for _, controllers, path in (line for line in lines if len(line) == 3):
                if "pids" not in controllers.split(","):
                    continue
                base = Path("/sys/fs/cgroup/pids") / path.lstrip("/")
                probe = base / f"verl-gain-probe-{os.getpid()}-{secrets.token_hex(4)}"
                try:
                    probe.mkdir()
                    try:
                        if (probe / "pids.max").is_file():
                            _probe_cache["cgroup"] = base
                    finally:
                        probe.rmdir()
                except OSError:
                    pass
        return _probe_cache["cgroup"]


def _make_pids_cgroup(max_processes: int) -> Path | None:
    """A fresh pids cgroup allowing ``max_processes`` tasks (the child joins it itself), or None."""
    base = _pids_cgroup_base()
    if base is None:
        return None
    cgroup = base / f"verl-gain-sandbox-{os.getpid()}-{secrets.token_hex(6)}"
    try:
        cgroup.mkdir()
        (cgroup / "pids.max").write_text(str(max_processes))
    except OSError:
        _remove_cgroup(cgroup)
        return None
    return cgroup


def _remove_cgroup(cgroup: Path) -> None:
    """Kill what is left in ``cgroup`` and remove it."""
    for _ in range(CGROUP_REMOVE_TRIES):
        try:
            for pid in (cgroup / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(CGROUP_REMOVE_WAIT_S)


# --------------------------------------------------------------------------------------- what the child may read
def _package_paths(packages: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(folders of the packages and their bundled libraries, the site folders holding them) in this interpreter."""
    folders: list[str] = []
    sites: list[str] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        folder = os.path.realpath(next(iter(spec.submodule_search_locations)))
        site = os.path.dirname(folder)
        folders.append(folder)
        libs = os.path.join(site, f"{name}.libs")  # manylinux wheels keep their shared libraries beside the package
        if os.path.isdir(libs):
            folders.append(os.path.realpath(libs))
        if site not in sites:
            sites.append(site)
    return folders, sites


def _readable_paths(packages: tuple[str, ...]) -> list[str]:
    """Everything the child may read: the interpreter, its standard library and shared library, the system
    libraries, the allowed packages."""
    # The child runs the base interpreter (-I -S): its standard library, not a virtual environment's folders.
    base = {
        "base": sys.base_prefix,
        "installed_base": sys.base_prefix,
        "platbase": sys.base_exec_prefix,
        "installed_platbase": sys.base_exec_prefix,
    }
    paths = [_interpreter(), sysconfig.get_path("stdlib", vars=base), sysconfig.get_path("platstdlib", vars=base)]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        library = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("INSTSONAME") or "")
        if os.path.isfile(library):
            paths.append(os.path.realpath(library))
    paths += [p for p in SYSTEM_LIBRARY_PATHS if os.path.lexists(p)]
    paths += _package_paths(packages)[0]
    unique: list[str] = []
    for path in paths:
        if path and path not in unique:
            unique.append(path)
    return unique


def _jail_plan(paths: list[str]) -> list[dict[str, Any]]:
    """The jail's entries for ``paths``: ``{"path", "symlink"}`` for each symlink on the way (recreated as such) and
    ``{"path", "dir"}`` for each real file or folder (bind-mounted read-only), folders first."""
    plan: list[dict[str, Any]] = []
    bound: list[str] = []

    def covered(path: str) -> bool:
        return any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound)

    def expose(path: str, depth: int = 0) -> None:
        if depth > 40 or covered(path):  # 40: the kernel's own limit on symlinks followed in one lookup
            return
        current = "/"
        parts = Path(path).parts[1:]
        for index, part in enumerate(parts):
            candidate = os.path.join(current, part)
            if covered(candidate):
                return
            if os.path.islink(candidate):
                target = os.readlink(candidate)
                plan.append({"path": candidate, "symlink": target})
                resolved = os.path.normpath(os.path.join(current, target))
                expose(os.path.join(resolved, *parts[index + 1 :]), depth + 1)
                return
            current = candidate
        if os.path.exists(current):
            plan.append({"path": current, "dir": os.path.isdir(current)})
            bound.append(current)

    for path in sorted(paths, key=lambda p: (not os.path.isdir(p), p)):
        expose(path)
    return plan


def _jail_workdir(plan: list[dict[str, Any]]) -> str:
    """``JAIL_WORKDIR``, or a variant of it where a bound host path lies below it (its tmpfs would hide it)."""
    workdir = JAIL_WORKDIR
    while any(e["path"] == workdir or e["path"].startswith(workdir + "/") for e in plan):
        workdir = f"{JAIL_WORKDIR}-{secrets.token_hex(4)}"
    return workdir


@functools.lru_cache(maxsize=8)
def _paths_for(packages: tuple[str, ...]) -> tuple[list[str], list[str], list[dict[str, Any]], str]:
    """(readable paths, package site folders, jail plan, jail working directory) for a set of packages: computed
    once per process."""
    readable = _readable_paths(packages)
    plan = _jail_plan(readable)
    return readable, _package_paths(packages)[1], plan, _jail_workdir(plan)


def _user_task_count(uid: int) -> int:
    """Processes and threads of ``uid`` (what RLIMIT_NPROC counts), from /proc; 0 where /proc is unreadable."""
    count = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1").strip())
    return count


@dataclass
class _Plan:
    """The layers a run asks the child for."""

    limits: SandboxLimits
    namespaces: list[str] | None
    jail: bool
    landlock: int
    seccomp: bool

    @classmethod
    def for_limits(cls, limits: SandboxLimits) -> _Plan:
        namespaces = _namespace_prefix() if limits.use_namespaces else None
        jail = bool(namespaces) and _jail_works(limits.packages)
        return cls(
            limits=limits,
            namespaces=namespaces,
            jail=jail,
            landlock=landlock_abi() if limits.use_landlock else 0,
            seccomp=limits.use_seccomp and seccomp_supported(),
        )


# ---------------------------------------------------------------------------------------------- running a child
def _child_env(workdir: str) -> dict[str, str]:
    """A minimal environment: no secrets of the trainer's environment reach the program."""
    return {
        "PATH": os.defpath,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        # Numeric libraries size thread pools (and their address space) to the machine otherwise.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _read_tail(path: Path, size: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _disk_use(folder: Path, max_entries: int) -> tuple[int, int]:
    """(bytes allocated, entries) below ``folder``; stops counting past ``max_entries``."""
    used = entries = 0
    stack = [str(folder)]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as listing:
                for entry in listing:
                    entries += 1
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    used += info.st_blocks * BYTES_PER_BLOCK
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return used, entries


class _Child:
    """One sandboxed interpreter: its folder, cgroup, verdict pipe and process."""

    def __init__(
        self,
        program: str,
        plan: _Plan,
        data: object = None,
        channel: tuple[int, int] | None = None,
    ) -> None:
        limits = plan.limits
        self.plan = plan
        self.isolation = ["timeout", "rlimits", "tmpdir"]
        self.root = Path(tempfile.mkdtemp(prefix="verl-gain-sandbox-"))
        self.cgroup: Path | None = None
        self.process: subprocess.Popen | None = None
        self.lines: list[dict] = []
        self.messages: list[Any] = []
        self.received = 0
        self.buffer = b""
        self.stop_reason = ""
        self.nonce = secrets.token_hex(16)
        readable, sites, jail_plan, jail_workdir = _paths_for(limits.packages)
        uid = None
        max_processes = None
        if plan.jail and os.geteuid() == 0 and limits.drop_privileges:
            uid = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_SPAN)
            max_processes = limits.max_processes + RUNNER_TASKS
            self.isolation.append("uid")
        elif os.geteuid() != 0:  # RLIMIT_NPROC counts every process of the user, the trainer's included
            max_processes = _user_task_count(os.geteuid()) + limits.max_processes
        if plan.jail:
            self.workdir = jail_workdir
            self.host_workdir: Path | None = None
        else:
            self.host_workdir = self.root / "work"
            self.host_workdir.mkdir()
            self.workdir = str(self.host_workdir)
        config: dict[str, Any] = {
            "program": program,
            "nonce": self.nonce,
            "drop_to_uid": uid,
            "guard": limits.guard,
            "site_dir": sites[0] if sites else None,
            "limits": {
                "memory_mb": limits.memory_mb,
                "cpu_s": max(1, int(limits.timeout_s + 0.999)),
                "max_file_mb": limits.max_file_mb,
                "max_open_files": limits.max_open_files,
                "max_processes": max_processes,
            },
        }
        if data is not None:
            config["data"] = data
        if channel is not None:
            config["channel"] = list(channel)
        if plan.jail:
            config["jail"] = {
                "staging": str(self.root),
                "plan": jail_plan,
                "workdir": jail_workdir,
                "disk_mb": limits.disk_mb,
                "max_files": limits.max_files,
            }
            self.isolation += ["jail", "disk_quota"]
        if plan.namespaces:
            self.isolation += ["pidns", "netns"]
        if plan.landlock:
            config["landlock"] = {
                "read": [*readable, *(["/proc"] if plan.jail else [])],
                "list": sites,  # names only: the packages' own folders are in "read"
                "own_process": not plan.jail,  # the host's /proc: only the child's own entry
                "devices": [f"/dev/{name}" for name in ("null", "zero", "random", "urandom")],
                "write": [self.workdir],
            }
        config["seccomp"] = plan.seccomp
        if limits.use_cgroup:
            self.cgroup = _make_pids_cgroup(limits.max_processes + RUNNER_TASKS)
            if self.cgroup is not None:
                config["cgroup_procs"] = str(self.cgroup / "cgroup.procs")
                self.isolation.append("pids_cgroup")
        if limits.guard:
            self.isolation.append("guard")
        self.config = config
        self.output_path = self.root / "output.txt"
        self.verdict_read, self.verdict_write = os.pipe()
        fcntl.fcntl(self.verdict_read, fcntl.F_SETFL, fcntl.fcntl(self.verdict_read, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.channel = channel

    def start(self) -> str | None:
        """Start the child; an error message when it could not be started."""
        command = [
            *(self.plan.namespaces or []),
            _interpreter(),
            "-I",
            "-S",
            "-B",
            str(CHILD_SCRIPT),
            str(self.verdict_write),
        ]
        try:
            with open(self.output_path, "wb") as output:
                self.process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.host_workdir or self.root,
                    env=_child_env(self.workdir),
                    pass_fds=(self.verdict_write, *(self.channel or ())),
                    start_new_session=True,
                )
        except OSError as exc:
            return f"could not start the sandbox: {exc}"
        finally:
            os.close(self.verdict_write)
        try:
            self.process.stdin.write(json.dumps(self.config).encode("utf-8"))
            self.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        return None

    def drain(self, on_message: Callable[[Any], bool] | None = None) -> bool:
        """Read what the child wrote; False when ``on_message`` asked to stop or the child sent too much."""
        keep_going = True
        limit = self.plan.limits.max_message_mb * BYTES_PER_MB
        while True:
            try:
                chunk = os.read(self.verdict_read, VERDICT_READ_BYTES)
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:
                break
            self.received += len(chunk)
            if self.received > limit:
                self.stop_reason = f"sent more than {self.plan.limits.max_message_mb} MiB of results"
                return False
            self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        for raw in complete:
            try:
                line = json.loads(raw.decode("utf-8", errors="replace"))
            except (json.JSONDecodeError, RecursionError):
                continue  # the program can write to the pipe too: what does not parse is not a verdict
            if not isinstance(line, dict):
                continue
            if "message" in line:
                self.messages.append(line["message"])
                if on_message is not None and keep_going and on_message(line["message"]) is False:
                    keep_going = False
                    self.stop_reason = self.stop_reason or "the caller stopped it after a result"
            else:
                self.lines.append(line)
        return keep_going

    def check_disk(self) -> bool:
        """Without the jail: False (and the reason) when the working directory is over its quota."""
        if self.host_workdir is None:
            return True
        limits = self.plan.limits
        used, entries = _disk_use(self.host_workdir, limits.max_files)
        if used > limits.disk_mb * BYTES_PER_MB:
            self.stop_reason = f"disk quota exceeded ({used // BYTES_PER_MB} MiB > {limits.disk_mb} MiB)"
        elif entries > limits.max_files:
            self.stop_reason = f"too many files ({entries} > {limits.max_files})"
        return not self.stop_reason

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process.pid)
            self.process.wait()

    def result(self, timed_out: bool, wall: float) -> SandboxResult:
        setup = next((line["setup"] for line in self.lines if isinstance(line.get("setup"), dict)), {})
        if setup.get("landlock"):
            self.isolation.append("landlock")
        if setup.get("seccomp"):
            self.isolation.append("seccomp")
        if setup.get("caps_dropped"):
            self.isolation.append("caps_dropped")
        if not self.plan.jail and self.host_workdir is not None:
            self.isolation.append("disk_quota")
        isolation = tuple(self.isolation)
        output = _read_tail(self.output_path, OUTPUT_TAIL_BYTES)
        returncode = self.process.returncode if self.process is not None else None
        lines = self.lines
        passed = any(line.get("status") == STATUS_PASSED and line.get("nonce") == self.nonce for line in lines)
        failures = [line for line in lines if line.get("status") in (STATUS_ERROR, STATUS_MEMORY)]
        setup_error = next((line for line in lines if line.get("status") == STATUS_SANDBOX_ERROR), None)
        common = {
            "output": output,
            "wall_s": wall,
            "returncode": returncode,
            "isolation": isolation,
            "messages": self.messages,
        }
        if setup_error is not None and not passed:
            return SandboxResult(STATUS_SANDBOX_ERROR, str(setup_error.get("detail", "")), **common)
        if self.stop_reason:
            return SandboxResult(STATUS_ERROR, f"stopped: {self.stop_reason}", **common)  # not a pass, whatever came
        if passed and not timed_out:
            return SandboxResult(STATUS_PASSED, "", **common)
        if timed_out:
            return SandboxResult(STATUS_TIMEOUT, f"killed after {self.plan.limits.timeout_s:g} s wall clock", **common)
        if failures:
            verdict = failures[-1]
            return SandboxResult(verdict["status"], str(verdict.get("detail", "")), **common)
        if returncode in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL):
            limit = self.config["limits"]["cpu_s"]
            return SandboxResult(STATUS_TIMEOUT, f"CPU limit ({limit} s) reached", **common)
        return SandboxResult(STATUS_CRASHED, f"exited with code {returncode} without a verdict", **common)

    def cleanup(self) -> None:
        os.close(self.verdict_read)
        if self.process is not None and self.process.poll() is None:
            _kill_group(self.process.pid)
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
        if self.cgroup is not None:
            _remove_cgroup(self.cgroup)


def _supervise(
    children: list[_Child], primary: _Child, timeout_s: float, on_message: Callable[[Any], bool] | None
) -> tuple[bool, float]:
    """Wait for ``primary`` to finish (reading every child's pipe meanwhile), up to the wall-clock limit; kill all.

    Returns (timed out, wall seconds).
    """
    start = time.monotonic()
    deadline = start + timeout_s + STARTUP_ALLOWANCE_S
    next_disk_check = start
    timed_out = False
    waiting = select.poll()  # not select.select: a trainer process may hold descriptors above 1024
    watched = {child.verdict_read for child in children}
    for fd in watched:
        waiting.register(fd, select.POLLIN)
    while True:
        stop = False
        for child in children:
            if not child.drain(on_message if child is primary else None):
                stop = True
        if stop or primary.process.poll() is not None:
            break
        for child in children:
            if child.process.poll() is not None and child.verdict_read in watched:  # a dead peer's pipe stays
                waiting.unregister(child.verdict_read)  # readable (end of file): stop waking up for it
                watched.discard(child.verdict_read)
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        if now >= next_disk_check:
            next_disk_check = now + DISK_CHECK_INTERVAL_S
            if not all(child.check_disk() for child in children):
                break
        waiting.poll(1000 * min(POLL_INTERVAL_S, deadline - now))
    wall = time.monotonic() - start
    for child in children:
        child.stop()
    for child in children:
        child.drain(on_message if child is primary else None)
    return timed_out, wall


def _run_one(
    program: str,
    limits: SandboxLimits,
    plan: _Plan,
    data: object = None,
    on_message: Callable[[Any], bool] | None = None,
) -> SandboxResult:
    child = _Child(program, plan, data)
    try:
        problem = child.start()
        if problem:
            return SandboxResult(STATUS_SANDBOX_ERROR, problem, isolation=tuple(child.isolation))
        timed_out, wall = _supervise([child], child, limits.timeout_s, on_message)
        return child.result(timed_out, wall)
    finally:
        child.cleanup()


def run_python(
    program: str,
    limits: SandboxLimits | None = None,
    data: object = None,
    on_message: Callable[[Any], bool] | None = None,
) -> SandboxResult:
    """Run ``program`` (Python source) in the sandbox and return its verdict; see the module docstring.

    ``data`` (anything JSON can carry) reaches the program as the global ``SANDBOX_DATA``; the program sends JSON
    values back with ``SANDBOX_SEND(value)``: they arrive in ``SandboxResult.messages`` and, as they come, at
    ``on_message(value)``, which stops the program by returning False (a harness's first wrong answer).
    """
    limits = limits or SandboxLimits()
    return _run_one(program, limits, _Plan.for_limits(limits), data, on_message)


def run_python_pair(
    test_program: str,
    solution_program: str,
    limits: SandboxLimits | None = None,
    test_data: object = None,
    solution_data: object = None,
) -> SandboxResult:
    """Run a test and a solution in two sandboxes joined by a pipe; the verdict is the test's.

    Each program finds ``SANDBOX_CHANNEL = (read_fd, write_fd)``: what one writes to its write end, the other reads
    from its read end. The solution's process never holds the test's code or data (the expected values), and cannot
    see, signal or trace the test's process (separate PID namespaces, uids, seccomp). ``output`` is the solution's.
    """
    limits = limits or SandboxLimits()
    plan = _Plan.for_limits(limits)
    to_solution_read, to_solution_write = os.pipe()
    to_test_read, to_test_write = os.pipe()
    test = solution = None
    try:
        solution = _Child(solution_program, plan, solution_data, channel=(to_solution_read, to_test_write))
        test = _Child(test_program, plan, test_data, channel=(to_test_read, to_solution_write))
        for child in (solution, test):
            problem = child.start()
            if problem:
                return SandboxResult(STATUS_SANDBOX_ERROR, problem, isolation=tuple(child.isolation))
        for fd in (to_solution_read, to_solution_write, to_test_read, to_test_write):
            os.close(fd)  # the children hold their ends: the parent's copies would keep a dead peer's pipe open
        to_solution_read = to_solution_write = to_test_read = to_test_write = -1
        timed_out, wall = _supervise([test, solution], test, limits.timeout_s, None)
        result = test.result(timed_out, wall)
        result.output = _read_tail(solution.output_path, OUTPUT_TAIL_BYTES)
        return result
    finally:
        for fd in (to_solution_read, to_solution_write, to_test_read, to_test_write):
            if fd >= 0:
                os.close(fd)
        for child in (test, solution):
            if child is not None:
                child.cleanup()
