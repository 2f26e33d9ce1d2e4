"""Run untrusted Python (generated code and its tests) in a separate, limited process and return a verdict.

``run_python(program, limits)`` never raises for anything the program does: a crash, a hang, a memory hog, a fork
bomb, output floods or writes outside its directory all end in a ``SandboxResult`` within ``limits.timeout_s`` (plus
process start-up and clean-up). It is thread-safe (verl's reward loop scores in a thread pool) and uses no
``preexec_fn`` (unsafe with threads): the child applies its own limits before it compiles the program.

What is guaranteed, layer by layer (``SandboxResult.isolation`` names the layers a run actually had):

- ``timeout``: a wall-clock limit; on expiry the whole process group is killed with SIGKILL. RLIMIT_CPU backs it.
- ``rlimits``: RLIMIT_AS (memory), RLIMIT_FSIZE (largest file, output included), RLIMIT_NOFILE, no core dumps.
- ``tmpdir``: a fresh private temporary directory as working directory, HOME and TMPDIR; removed afterwards.
- ``pidns`` + ``netns``: when ``unshare`` works (root, or unprivileged user namespaces), the child runs in new PID
  and network namespaces: no network interface but a down loopback, and when the sandbox ends every process it started
  dies with it (the namespace's init is killed).
- ``pids_cgroup``: where a cgroup-v1 pids hierarchy is writable, a fresh cgroup caps the number of processes at
  ``max_processes`` (what RLIMIT_NPROC cannot do for root).
- ``uid``: when run as root and an unprivileged user can read the interpreter, the child drops to a throw-away uid, so
  RLIMIT_NPROC applies and nothing outside its directory is writable by file permissions. Otherwise RLIMIT_NPROC is set
  from the current user's task count when not root (root ignores it).
- ``guard``: a Python audit hook refuses process creation, sockets of every family, signals to other processes and
  file-system writes outside the working directory. This stops accidents, not an adversary: native code (ctypes) can
  get around it.
- the "passed" verdict needs a per-run secret that the child writes only after the program returned normally in its
  own process, so ``sys.exit(0)``/``os._exit(0)`` before the tests, or a forked copy, cannot fake a pass. A program
  that deliberately inspects the runner's frames could read it: this is a reward for honest mistakes, not a jail.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHILD_SCRIPT = Path(__file__).with_name("_sandbox_child.py")
# Throw-away uids for the child when running as root: far above the ranges that distributions hand out.
SANDBOX_UID_BASE = 2_000_000_000
SANDBOX_UID_SPAN = 100_000_000
OUTPUT_TAIL_BYTES = 2000
VERDICT_READ_BYTES = 1 << 16
# Start-up of the child interpreter and clean-up are not charged to the program: the wall limit gets this much slack
# before the kill (measured: ~30 ms to start python -I here; generous for loaded machines).
STARTUP_ALLOWANCE_S = 0.5
PROBE_TIMEOUT_S = 20.0
# A cgroup can be removed once its killed processes are reaped; that takes milliseconds.
CGROUP_REMOVE_TRIES = 50
CGROUP_REMOVE_WAIT_S = 0.02
# The interpreter of the child itself (and unshare's init when namespaces are used) counts against the pids limit.
RUNNER_TASKS = 2

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
    max_processes: processes the program may add (RLIMIT_NPROC; enforced for non-root and dropped-uid runs).
    max_open_files: RLIMIT_NOFILE.
    guard: install the Python audit-hook guard (see the module docstring). Turn off only to test the OS layers.
    use_namespaces / drop_privileges / use_cgroup: use those layers when this machine allows them.
    """

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_file_mb: int = 16
    max_processes: int = 16
    max_open_files: int = 256
    guard: bool = True
    use_namespaces: bool = True
    drop_privileges: bool = True
    use_cgroup: bool = True

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"SandboxLimits.timeout_s must be > 0 seconds, got {self.timeout_s}")
        if self.memory_mb < 64:
            raise ValueError(
                f"SandboxLimits.memory_mb must be >= 64 (Python itself needs ~30 MiB), got {self.memory_mb}"
            )
        if self.max_file_mb < 1:
            raise ValueError(f"SandboxLimits.max_file_mb must be >= 1, got {self.max_file_mb}")
        if self.max_processes < 1:
            raise ValueError(f"SandboxLimits.max_processes must be >= 1, got {self.max_processes}")
        if self.max_open_files < 16:
            raise ValueError(
                f"SandboxLimits.max_open_files must be >= 16 (the interpreter needs some), got {self.max_open_files}"
            )


@dataclass
class SandboxResult:
    """The verdict of one run.

    status: ``passed`` (returned normally), ``error`` (an exception: a failed assert, wrong answer, syntax error...),
    ``memory`` (MemoryError), ``timeout`` (wall or CPU limit), ``crashed`` (died without a verdict: a signal,
    ``os._exit``), or ``sandbox_error`` (the sandbox itself could not run the program).
    """

    status: str
    detail: str = ""
    output: str = ""
    wall_s: float = 0.0
    returncode: int | None = None
    isolation: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.status == STATUS_PASSED


_probe_lock = threading.RLock()  # re-entered: the privilege probe runs a sandbox
_probe_cache: dict[str, object] = {}


def _namespace_prefix() -> list[str] | None:
    """The ``unshare`` command that gives the child new PID and network namespaces, or None where it fails."""
    with _probe_lock:
        if "namespaces" not in _probe_cache:
            _probe_cache["namespaces"] = None
            unshare = shutil.which("unshare")
            if unshare:
                prefix = [unshare, "--mount-proc", "--net", "--pid", "--fork", "--kill-child"]
                if os.geteuid() != 0:  # an unprivileged user needs a user namespace to create the others
                    prefix[1:1] = ["--user", "--map-root-user"]
                try:
                    probe = subprocess.run(
                        [*prefix, sys.executable, "-c", "pass"], capture_output=True, timeout=PROBE_TIMEOUT_S
                    )
                    if probe.returncode == 0:
                        _probe_cache["namespaces"] = prefix
                except (OSError, subprocess.SubprocessError):
                    pass
        return _probe_cache["namespaces"]  # type: ignore[return-value]


def _can_drop_privileges() -> bool:
    """As root: whether a throw-away uid can still import the standard library after the child drops to it.

    Fails where the interpreter lives in a private home (e.g. pyenv under /root); the child then stays root and the
    guard and namespaces are what keep it in.
    """
    if os.geteuid() != 0:
        return False
    with _probe_lock:
        if "drop" not in _probe_cache:
            result = _run(
                "import json, fractions, decimal, heapq, collections, itertools, math, re, string, bisect",
                SandboxLimits(timeout_s=PROBE_TIMEOUT_S),
                drop=True,
                namespaces=None,
            )
            _probe_cache["drop"] = result.passed
        return bool(_probe_cache["drop"])


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
        return _probe_cache["cgroup"]  # type: ignore[return-value]


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


def _read_available(fd: int) -> bytes:
    """What is in the verdict pipe now (non-blocking: a leftover process holding the write end cannot stall us)."""
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, VERDICT_READ_BYTES)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_python(program: str, limits: SandboxLimits | None = None, data: object = None) -> SandboxResult:
    """Run ``program`` (Python source) in the sandbox and return its verdict; see the module docstring.

    ``data`` (anything JSON can carry) reaches the program as the global ``SANDBOX_DATA``: test inputs and expected
    outputs for a harness, without compiling them into the program as a literal.
    """
    limits = limits or SandboxLimits()
    drop = limits.drop_privileges and _can_drop_privileges()
    namespaces = _namespace_prefix() if limits.use_namespaces else None
    return _run(program, limits, drop=drop, namespaces=namespaces, data=data)


def _run(
    program: str, limits: SandboxLimits, *, drop: bool, namespaces: list[str] | None, data: object = None
) -> SandboxResult:
    isolation = ["timeout", "rlimits", "tmpdir"]
    root = Path(tempfile.mkdtemp(prefix="verl-gain-sandbox-"))
    workdir = root / "work"
    workdir.mkdir()
    uid = None
    max_processes = None
    if drop:
        uid = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_SPAN)
        os.chown(workdir, uid, uid)
        root.chmod(0o711)  # the child may pass through to its cwd, but cannot list or write its parent
        max_processes = limits.max_processes
        isolation.append("uid")
    elif os.geteuid() != 0:
        max_processes = _user_task_count(os.geteuid()) + limits.max_processes
    cgroup = _make_pids_cgroup(limits.max_processes + RUNNER_TASKS) if limits.use_cgroup else None
    if cgroup is not None:
        isolation.append("pids_cgroup")
    if namespaces:
        isolation += ["pidns", "netns"]
    if limits.guard:
        isolation.append("guard")
    nonce = secrets.token_hex(16)
    config = {
        "program": program,
        "nonce": nonce,
        **({"data": data} if data is not None else {}),
        "workdir": str(workdir),
        "drop_to_uid": uid,
        "guard": limits.guard,
        "readonly_fs": bool(namespaces),
        "cgroup_procs": str(cgroup / "cgroup.procs") if cgroup else None,
        "limits": {
            "memory_mb": limits.memory_mb,
            "cpu_s": max(1, int(limits.timeout_s + 0.999)),
            "max_file_mb": limits.max_file_mb,
            "max_open_files": limits.max_open_files,
            "max_processes": max_processes,
        },
    }
    verdict_read, verdict_write = os.pipe()
    output_path = root / "output.txt"
    command = [*(namespaces or []), sys.executable, "-I", "-B", str(CHILD_SCRIPT), str(verdict_write)]
    start = time.monotonic()
    timed_out = False
    process = None
    try:
        with open(output_path, "wb") as output:
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=_child_env(str(workdir)),
                    pass_fds=(verdict_write,),
                    start_new_session=True,
                )
            except OSError as exc:
                return SandboxResult(
                    STATUS_SANDBOX_ERROR, f"could not start the sandbox: {exc}", isolation=tuple(isolation)
                )
            finally:
                os.close(verdict_write)
            try:
                process.stdin.write(json.dumps(config).encode("utf-8"))
                process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                process.wait(timeout=limits.timeout_s + STARTUP_ALLOWANCE_S)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(process.pid)
            process.wait()
        wall = time.monotonic() - start
        verdicts = []  # the runner's lines; the program can write to the pipe too, so anything else is skipped
        for line in _read_available(verdict_read).decode("utf-8", errors="replace").splitlines():
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                verdicts.append(parsed)
        output_tail = _read_tail(output_path, OUTPUT_TAIL_BYTES)
    finally:
        os.close(verdict_read)
        if process is not None and process.poll() is None:
            _kill_group(process.pid)
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
        if cgroup is not None:
            _remove_cgroup(cgroup)

    if any(isinstance(line.get("setup"), dict) and line["setup"].get("readonly_fs") is True for line in verdicts):
        isolation.append("readonly_fs")
    passed = any(line.get("status") == STATUS_PASSED and line.get("nonce") == nonce for line in verdicts)
    failures = [line for line in verdicts if line.get("status") in (STATUS_ERROR, STATUS_MEMORY)]
    verdict = failures[-1] if failures else None
    returncode = process.returncode
    if passed and not timed_out:
        status, detail = STATUS_PASSED, ""
    elif timed_out:
        status, detail = STATUS_TIMEOUT, f"killed after {limits.timeout_s:g} s wall clock"
    elif verdict is not None:
        status, detail = verdict["status"], str(verdict.get("detail", ""))
    elif returncode in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL):
        status, detail = STATUS_TIMEOUT, f"CPU limit ({config['limits']['cpu_s']} s) reached"
    else:
        status, detail = STATUS_CRASHED, f"exited with code {returncode} without a verdict"
    return SandboxResult(status, detail, output_tail, wall, returncode, tuple(isolation))
