"""The code sandbox: every kind of misbehaving program gets a verdict within its limits, and nothing leaks out.

Each test also runs with the Python guard off where the OS layer it relies on exists on this machine (namespaces,
read-only file system, pids cgroup), so that both layers are shown to hold on their own.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.host_processes import processes_with
from verl_gain.rewards import sandbox
from verl_gain.rewards.sandbox import SandboxLimits, run_python

# Wall-clock budget for programs that never finish; the verdict must arrive within it plus start-up and clean-up.
SHORT_TIMEOUT_S = 1.0
SLACK_S = 2.0


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path, monkeypatch):
    """Sandboxes create their directories here, so that a test can check nothing is left behind."""
    root = tmp_path / "sandboxes"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    assert list(root.iterdir()) == [], "a sandbox directory was left behind"


def layers() -> tuple[str, ...]:
    """The isolation layers this machine gives a sandbox (probed by running one)."""
    return run_python("pass").isolation


def test_correct_program_passes_and_output_is_captured():
    result = run_python("print('hello from the sandbox')\nassert sum(range(4)) == 6")
    assert result.status == "passed" and result.passed
    assert "hello from the sandbox" in result.output
    assert {"timeout", "rlimits", "tmpdir", "guard"} <= set(result.isolation)


def test_wrong_answer_fails_with_the_assertion():
    result = run_python("def add(a, b):\n    return a - b\nassert add(2, 2) == 4, 'add is wrong'")
    assert result.status == "error"
    assert "AssertionError: add is wrong" in result.detail


def test_crash_is_a_verdict_not_an_exception():
    raised = run_python("raise RuntimeError('boom')")
    assert raised.status == "error" and "RuntimeError: boom" in raised.detail
    syntax = run_python("def broken(:\n    pass")
    assert syntax.status == "error" and "SyntaxError" in syntax.detail
    segfault = run_python("import ctypes\nctypes.string_at(0)")
    assert segfault.status == "crashed" and segfault.returncode != 0


def test_early_exit_cannot_fake_a_pass():
    for program in ("import sys\nsys.exit(0)\nassert False", "import os\nos._exit(0)", "raise SystemExit"):
        result = run_python(program)
        assert not result.passed, program
        assert result.status in ("error", "crashed")


def test_writes_to_the_verdict_pipe_cannot_fake_a_pass_or_break_the_parent():
    """The program can find the verdict pipe among its file descriptors; what it writes there is not trusted."""
    program = (
        "import os\n"
        "for fd in range(3, 64):\n"
        '    for junk in (b\'5\\n\', b\'[1]\\n\', b\'{"setup": 3}\\n\', b\'{"status": "passed", "nonce": "0"}\\n\'):\n'
        "        try:\n"
        "            os.write(fd, junk)\n"
        "        except OSError:\n"
        "            pass\n"
        "raise SystemExit(0)\n"
    )
    result = run_python(program)
    assert result.status == "error" and "SystemExit" in result.detail


def test_infinite_loop_is_killed_at_the_wall_clock_limit():
    start = time.monotonic()
    result = run_python("while True:\n    pass", SandboxLimits(timeout_s=SHORT_TIMEOUT_S))
    elapsed = time.monotonic() - start
    assert result.status == "timeout"
    assert SHORT_TIMEOUT_S <= elapsed < SHORT_TIMEOUT_S + SLACK_S


def test_sleeping_program_is_killed_too():
    result = run_python("import time\ntime.sleep(60)", SandboxLimits(timeout_s=SHORT_TIMEOUT_S))
    assert result.status == "timeout" and result.wall_s < SHORT_TIMEOUT_S + SLACK_S


def test_memory_hog_hits_the_address_space_limit():
    start = time.monotonic()
    result = run_python(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 1024 * 1024))",
        SandboxLimits(timeout_s=10, memory_mb=256),
    )
    assert result.status == "memory"
    assert time.monotonic() - start < 10


def test_fork_bomb_is_refused_by_the_guard():
    result = run_python("import os\nwhile True:\n    os.fork()", SandboxLimits(timeout_s=5))
    assert result.status == "error" and "os.fork is not allowed" in result.detail


def test_fork_bomb_without_the_guard_is_bounded_by_the_os():
    if not {"pids_cgroup", "uid"} & set(layers()):
        pytest.skip("no OS process limit on this machine for this user (no writable pids cgroup, root cannot drop uid)")
    limits = SandboxLimits(timeout_s=5, guard=False, max_processes=8)
    start = time.monotonic()
    result = run_python("import os\nwhile True:\n    os.fork()", limits)
    assert result.status == "error" and ("BlockingIOError" in result.detail or "Resource" in result.detail)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("escape_group", [False, True])
def test_processes_left_running_are_killed(escape_group):
    """A program that leaves a child running (in its process group, or escaped with setsid) and returns."""
    if escape_group and not {"pidns", "pids_cgroup"} & set(layers()):
        pytest.skip(
            "no PID namespace or pids cgroup here: a child that leaves the process group is stopped by the guard"
        )
    marker = f"verl-gain-leftover-{os.getpid()}-{escape_group}"
    program = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        f"    {'os.setsid()' if escape_group else 'pass'}\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}])\n"
        "import time\n"
        "time.sleep(0.3)\n"
    )
    result = run_python(program, SandboxLimits(guard=False))
    assert result.passed, result.detail
    time.sleep(0.3)
    survivors = processes_with(marker)
    for pid in survivors:
        os.kill(pid, 9)
    assert survivors == []


@pytest.mark.parametrize("guard", [True, False])
def test_files_written_outside_the_working_directory_do_not_appear(tmp_path, guard):
    if not guard and not {"readonly_fs", "uid"} & set(layers()):
        pytest.skip("no OS-level file-system isolation here: the guard is the only layer")
    outside = tmp_path / f"written-by-sandbox-{guard}"
    in_tmp = Path("/tmp") / f"verl-gain-test-leak-{os.getpid()}-{guard}"
    program = (
        "import os\n"
        "open('inside.txt', 'w').write('allowed')\n"
        "assert open('inside.txt').read() == 'allowed'\n"
        f"for path in ({str(outside)!r}, {str(in_tmp)!r}, os.path.expanduser('~/../escape')):\n"
        "    try:\n"
        "        open(path, 'w').write('leak')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_python(program, SandboxLimits(guard=guard))
    assert result.passed, result.detail
    assert not outside.exists() and not in_tmp.exists()  # in the jail, /tmp is the sandbox's own folder


@pytest.mark.parametrize("guard", [True, False])
def test_network_is_unreachable(guard):
    if not guard and "netns" not in layers():
        pytest.skip("no network namespace here: the guard is the only layer")
    program = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
        "except OSError as exc:\n"
        "    print('refused:', type(exc).__name__)\n"
        "else:\n"
        "    raise AssertionError('connected')\n"
    )
    result = run_python(program, SandboxLimits(guard=guard, timeout_s=5))
    assert result.passed, result.detail
    assert "refused:" in result.output


def test_output_flood_is_cut_by_the_file_size_limit():
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", SandboxLimits(max_file_mb=1))
    assert result.status == "error" and "File too large" in result.detail


def test_environment_of_the_trainer_does_not_leak(monkeypatch):
    monkeypatch.setenv("VERL_GAIN_TEST_SECRET", "do-not-show")
    result = run_python("import os\nassert 'VERL_GAIN_TEST_SECRET' not in os.environ\nprint(os.environ['HOME'])")
    assert result.passed, result.detail


def test_concurrent_runs_from_threads_keep_their_own_verdicts():
    """verl's reward loop scores from a thread pool."""
    programs = {f"ok{i}": f"assert {i} == {i}" for i in range(3)} | {f"bad{i}": f"assert {i} == -1" for i in range(3)}
    verdicts: dict[str, str] = {}

    def run(name: str) -> None:
        verdicts[name] = run_python(programs[name]).status

    threads = [threading.Thread(target=run, args=(name,)) for name in programs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert verdicts == {name: ("passed" if name.startswith("ok") else "error") for name in programs}


def test_limits_are_validated():
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=8)


def test_child_script_is_standard_library_only():
    """The child must start fast and import nothing of the trainer before the program runs."""
    source = sandbox.CHILD_SCRIPT.read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    allowed = {"builtins", "ctypes", "json", "os", "platform", "resource", "signal", "struct", "sys", "traceback"}
    assert imports <= allowed
