"""The escape table: what a policy under RL pressure (or any hostile program) tries against the code sandbox.

Each attempt runs in both modes the sandbox has:

- ``jail``: the default on this machine kind (root, namespaces): jail, dropped capabilities, Landlock, seccomp;
- ``guard-only``: ``use_namespaces=False``, what an unprivileged container gets: Landlock, seccomp, dropped
  capabilities, the disk watchdog, no jail;

always with the Python audit guard *off* (``guard=False``), so that the kernel layers are shown to hold on their own
(the escapes of the issue got around the guard in pure Python or with ctypes anyway). Every test checks the host
afterwards (the file is not there, the victim process lives, the listener got no connection, no process survived):
a test fails if any escape works. A mode is skipped, with the reason, only where this kernel lacks what it needs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.e2e import REPO_ROOT
from tests.host_processes import processes_with
from verl_gain.rewards.sandbox import SandboxLimits, SandboxResult, landlock_abi, run_python, seccomp_supported

MODES = ("jail", "guard-only")
ESCAPE_TIMEOUT_S = 10.0
# A process left running by an escape attempt carries this in its command line, so the test can look for it.
MARKER_PREFIX = "verl-gain-escape-marker"
SURVIVOR_WAIT_S = 0.5


def limits_for(mode: str, **overrides) -> SandboxLimits:
    return SandboxLimits(guard=False, use_namespaces=mode == "jail", timeout_s=ESCAPE_TIMEOUT_S, **overrides)


_available: dict[str, str | None] = {}


def unavailable(mode: str) -> str | None:
    """Why ``mode`` cannot run on this machine (None: it can), probed once by running a sandbox."""
    if mode not in _available:
        layers = set(run_python("pass", limits_for(mode)).isolation)
        needed = {"jail", "caps_dropped", "pidns", "netns"} if mode == "jail" else {"caps_dropped"}
        if not seccomp_supported():
            needed.add("seccomp")
        if landlock_abi() >= 1:
            needed.add("landlock")
        missing = needed - layers
        if mode == "guard-only" and not landlock_abi():
            _available[mode] = "the kernel has no Landlock: guard-only mode has no file-system boundary here"
        elif mode == "guard-only" and not seccomp_supported():
            _available[mode] = "no seccomp filter for this architecture: guard-only mode cannot refuse process creation"
        elif missing:
            _available[mode] = f"this machine cannot give the sandbox {sorted(missing)} (unshare or mounts refused)"
        else:
            _available[mode] = None
    return _available[mode]


@pytest.fixture(params=MODES)
def mode(request) -> str:
    reason = unavailable(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path, monkeypatch):
    """Sandboxes create their folders here, so that a test can check nothing is left behind."""
    root = tmp_path / "sandboxes"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    assert list(root.iterdir()) == [], "a sandbox folder was left behind"


def report(result: SandboxResult) -> dict:
    """The JSON summary the attempt printed as its last line."""
    assert result.status != "sandbox_error", result.detail
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    assert lines, f"the attempt printed no summary: {result.status} {result.detail[-500:]} {result.output[-500:]}"
    return json.loads(lines[-1])


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


LIBC = "import ctypes, json, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n"


# ------------------------------------------------------------------------------------------------ file system
def test_ctypes_remount_of_the_root_read_write_lands_nothing_on_the_host(mode, tmp_path):
    """The issue's escape: the child kept CAP_SYS_ADMIN, remounted / read-write with ctypes and wrote to the host."""
    target = tmp_path / "written-through-a-remount"
    program = LIBC + (
        "MS_REMOUNT, MS_BIND = 32, 4096\n"
        "calls = {\n"
        "    'remount_bind': libc.mount(None, b'/', None, MS_REMOUNT | MS_BIND, None),\n"
        "    'remount': libc.mount(None, b'/', None, MS_REMOUNT, None),\n"
        "    'tmpfs': libc.mount(b'tmpfs', b'/', b'tmpfs', 0, None),\n"
        "    'chroot': libc.chroot(b'/'),\n"
        "    'umount': libc.umount2(b'/', 2),\n"
        "}\n"
        "try:\n"
        f"    open({str(target)!r}, 'w').write('escaped')\n"
        "    wrote = True\n"
        "except OSError:\n"
        "    wrote = False\n"
        "print(json.dumps({'calls': calls, 'wrote': wrote}))\n"
    )
    summary = report(run_python(program, limits_for(mode)))
    assert summary == {"calls": dict.fromkeys(summary["calls"], -1), "wrote": False}
    assert not target.exists()


def test_filling_the_disk_stops_at_the_quota(mode):
    """The issue wrote 1.5 GB in 2.4 s as 100 files; the quota (disk_mb) holds whatever the number of files."""
    disk_mb, file_mb = 64, 16
    program = (
        "import json\n"
        "written = 0\n"
        "try:\n"
        "    for index in range(100):\n"
        "        with open(f'fill-{index}', 'wb') as handle:\n"
        f"            for _ in range({file_mb}):\n"
        "                handle.write(b'x' * (1 << 20))\n"
        "                handle.flush()\n"
        "                written += 1 << 20\n"
        "except OSError as error:\n"
        "    print(json.dumps({'written_mb': written >> 20, 'stopped_by': type(error).__name__}))\n"
    )
    start = time.monotonic()
    result = run_python(program, limits_for(mode, disk_mb=disk_mb, max_file_mb=file_mb))
    elapsed = time.monotonic() - start
    if mode == "jail":  # the tmpfs is full: the write fails and the program goes on
        summary = report(result)
        assert summary["written_mb"] <= disk_mb and summary["stopped_by"] == "OSError"
    else:  # the watchdog kills the program within one look at the folder
        assert result.status == "error" and "disk quota exceeded" in result.detail, result.detail
    assert elapsed < ESCAPE_TIMEOUT_S


@pytest.mark.parametrize("what", ["/etc/shadow", "project file", "trainer environment", "symlink to /etc/shadow"])
def test_files_outside_what_the_interpreter_needs_are_unreadable(mode, what):
    path = {
        "/etc/shadow": "/etc/shadow",
        "project file": str(REPO_ROOT / "README.md"),
        "trainer environment": f"/proc/{os.getpid()}/environ",
        "symlink to /etc/shadow": "shadow-link",
    }[what]
    program = (
        "import json, os\n"
        "os.symlink('/etc/shadow', 'shadow-link')\n"
        "try:\n"
        f"    text = open({path!r}, 'rb').read(64)\n"
        "    print(json.dumps({'read': len(text)}))\n"
        "except OSError as error:\n"
        "    print(json.dumps({'refused': type(error).__name__}))\n"
    )
    summary = report(run_python(program, limits_for(mode)))
    assert "refused" in summary, f"{what} was readable inside the sandbox"


def test_writes_unlinks_and_renames_through_a_directory_descriptor_do_not_reach_the_host(mode, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("original")
    program = (
        "import json, os\n"
        "done = []\n"
        "for flags in (os.O_RDONLY | os.O_DIRECTORY, os.O_PATH):\n"
        "    try:\n"
        f"        fd = os.open({str(outside)!r}, flags)\n"
        "    except OSError:\n"
        "        continue\n"
        "    attempts = {\n"
        "        'create': lambda: os.close(os.open('created', os.O_CREAT | os.O_WRONLY, dir_fd=fd)),\n"
        "        'truncate': lambda: os.close(os.open('victim', os.O_WRONLY | os.O_TRUNC, dir_fd=fd)),\n"
        "        'unlink': lambda: os.unlink('victim', dir_fd=fd),\n"
        "        'rename': lambda: os.rename('victim', 'renamed', src_dir_fd=fd, dst_dir_fd=fd),\n"
        "        'mkdir': lambda: os.mkdir('made', dir_fd=fd),\n"
        "        'symlink': lambda: os.symlink('/etc/passwd', 'link', dir_fd=fd),\n"
        "    }\n"
        "    for name, attempt in attempts.items():\n"
        "        try:\n"
        "            attempt()\n"
        "            done.append(name)\n"
        "        except OSError:\n"
        "            pass\n"
        "print(json.dumps({'done': done}))\n"
    )
    summary = report(run_python(program, limits_for(mode)))
    assert summary == {"done": []}
    assert sorted(p.name for p in outside.iterdir()) == ["victim"] and (outside / "victim").read_text() == "original"


# ------------------------------------------------------------------------------------------------- processes
FORK_EXEC = (
    "import _posixsubprocess, json, os, sys, time\n"
    "def spawn(marker):\n"
    "    args = [sys.executable, '-c', 'import time; time.sleep(30)', marker]\n"
    "    error_read, error_write = os.pipe()\n"
    "    common = (args, [os.fsencode(sys.executable)], True, (error_write,), None, None,\n"
    "              -1, -1, -1, -1, -1, -1, error_read, error_write, False, False)\n"
    "    if sys.version_info >= (3, 11):\n"
    "        extra = (-1, None, None, None, -1, None, True)\n"  # process_group, gid, groups, uid, umask, preexec, vfork
    "    else:\n"
    "        extra = (None, None, None, -1, None)\n"
    "    try:\n"
    "        return _posixsubprocess.fork_exec(*common, *extra)\n"
    "    finally:\n"
    "        os.close(error_read)\n"
    "        os.close(error_write)\n"
)


def test_uncapped_spawns_through_posixsubprocess_fork_exec_are_capped(mode):
    """The issue spawned 60 interpreters through ``_posixsubprocess.fork_exec`` (no audit event) in guard-only mode."""
    marker = f"{MARKER_PREFIX}-spawn-{os.getpid()}-{mode}"
    max_processes = 8
    program = FORK_EXEC + (
        "spawned = 0\n"
        "for _ in range(60):\n"
        "    try:\n"
        f"        spawn({marker!r})\n"
        "        spawned += 1\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps({'spawned': spawned}))\n"
        "time.sleep(0.2)\n"
    )
    summary = report(run_python(program, limits_for(mode, max_processes=max_processes)))
    time.sleep(SURVIVOR_WAIT_S)
    survivors = processes_with(marker)
    kill_all(survivors)
    assert summary["spawned"] <= (max_processes if mode == "jail" else 0)
    assert survivors == []


@pytest.mark.parametrize("how", ["os.fork", "libc fork"])
def test_a_setsid_child_does_not_outlive_the_sandbox(mode, how):
    marker = f"{MARKER_PREFIX}-setsid-{os.getpid()}-{mode}-{how.replace(' ', '-')}"
    fork = "os.fork()" if how == "os.fork" else "libc.fork()"
    program = LIBC + (
        "import sys, time\n"
        "try:\n"
        f"    pid = {fork}\n"
        "except OSError:\n"
        "    pid = -1\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}])\n"
        "print(json.dumps({'forked': pid > 0}))\n"
        "time.sleep(0.3)\n"
    )
    summary = report(run_python(program, limits_for(mode)))
    time.sleep(SURVIVOR_WAIT_S)
    survivors = processes_with(marker)
    kill_all(survivors)
    assert survivors == []
    if mode == "guard-only":
        assert summary == {"forked": False}  # no process creation at all without a PID namespace


@pytest.fixture
def victim():
    """A process of the trainer's user that the sandbox must not be able to signal."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_pidfd_send_signal_and_kill_cannot_reach_another_process(mode, victim):
    pidfd_open, pidfd_send_signal = 434, 424
    program = LIBC + (
        "results = {}\n"
        f"fd = libc.syscall({pidfd_open}, {victim.pid}, 0)\n"
        "results['pidfd_open'] = fd\n"
        "if fd >= 0:\n"
        f"    results['pidfd_send_signal'] = libc.syscall({pidfd_send_signal}, fd, 9, None, 0)\n"
        f"results['kill'] = libc.kill({victim.pid}, 9)\n"
        f"results['tgkill'] = libc.syscall(234, {victim.pid}, {victim.pid}, 9)\n"
        "try:\n"
        f"    os.kill({victim.pid}, 9)\n"
        "    results['os.kill'] = 0\n"
        "except OSError:\n"
        "    results['os.kill'] = -1\n"
        "print(json.dumps(results))\n"
    )
    summary = report(run_python(program, limits_for(mode)))
    time.sleep(0.1)
    assert victim.poll() is None, "the sandbox killed a process outside it"
    assert all(value == -1 for value in summary.values()), summary


def test_ptrace_and_process_memory_of_the_trainer_are_out_of_reach(mode):
    trainer = os.getpid()
    program = LIBC + (
        "PTRACE_ATTACH = 16\n"
        "results = {'ptrace': libc.ptrace(PTRACE_ATTACH, " + str(trainer) + ", None, None)}\n"
        "buffer = ctypes.create_string_buffer(16)\n"
        "local = (ctypes.c_void_p * 2)(ctypes.addressof(buffer), 16)\n"
        "remote = (ctypes.c_void_p * 2)(0x400000, 16)\n"
        f"results['process_vm_readv'] = libc.syscall(310, {trainer}, local, 1, remote, 1, 0)\n"
        "try:\n"
        f"    open('/proc/{trainer}/mem', 'rb').read(1)\n"
        "    results['proc_mem'] = 0\n"
        "except OSError:\n"
        "    results['proc_mem'] = -1\n"
        "print(json.dumps(results))\n"
    )
    summary = report(run_python(program, limits_for(mode)))
    assert all(value == -1 for value in summary.values()), summary


def test_no_capability_is_left_and_no_namespace_or_tmpfs_can_be_made(mode):
    """A fresh user namespace would give the program capabilities over a mount namespace of its own, and there an
    unlimited tmpfs (memory outside every limit): refused by seccomp."""
    clone_newuser, clone_newns = 0x10000000, 0x00020000
    program = LIBC + (
        "status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)\n"
        "caps = {name: int(status[name], 16) for name in ('CapEff', 'CapPrm', 'CapAmb', 'CapInh')}\n"
        f"unshared = libc.unshare({clone_newuser | clone_newns})\n"
        "mounted = libc.mount(b'tmpfs', b'.', b'tmpfs', 0, None)\n"
        "print(json.dumps({'caps': caps, 'no_new_privs': int(status['NoNewPrivs']),\n"
        "                  'seccomp': int(status['Seccomp']), 'unshare': unshared, 'mount': mounted}))\n"
    )
    summary = report(run_python(program, limits_for(mode)))
    assert summary == {
        "caps": {"CapEff": 0, "CapPrm": 0, "CapAmb": 0, "CapInh": 0},
        "no_new_privs": 1,
        "seccomp": 2,  # SECCOMP_MODE_FILTER
        "unshare": -1,
        "mount": -1,
    }


# -------------------------------------------------------------------------------------------------- network
@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


@pytest.mark.parametrize("how", ["direct", "spawned interpreter"])
def test_a_loopback_listener_of_the_host_gets_no_connection(mode, listener, how):
    port = listener.getsockname()[1]
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).close()"
    if how == "direct":
        attempt = f"try:\n    {connect}\n    connected = True\nexcept OSError:\n    connected = False\n"
    else:
        attempt = (
            "import subprocess, sys\n"
            "try:\n"
            f"    connected = subprocess.run([sys.executable, '-c', {connect!r}], timeout=5).returncode == 0\n"
            "except (OSError, subprocess.SubprocessError):\n"
            "    connected = False\n"
        )
    summary = report(
        run_python(f"import json\n{attempt}print(json.dumps({{'connected': connected}}))\n", limits_for(mode))
    )
    with pytest.raises(BlockingIOError):
        listener.accept()
    assert summary == {"connected": False}
