"""Writing the outputs (metagen_compiler/outputs.py): all or nothing for the whole run, under failures and
kills at every step of the commit, and one-line messages for every file-system failure."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT

from metagen_compiler import outputs
from metagen_compiler.cli import main
from metagen_compiler.outputs import JOURNAL, OutputError, commit, recover

Tree = dict[str, dict[str, bytes]]  # model -> {relative path: content}

OLD: dict[str, dict[str, str | bytes]] = {
    "alpha": {"model.py": "old alpha\n", "paper/main.tex": "old\n", "paper/sections/a.tex": "a\n"},
    "beta": {"model.py": "old beta\n", "weights.bin": b"\x00\x01old"},
}
NEW: dict[str, dict[str, str | bytes]] = {
    "alpha": {"model.py": "new alpha\n", "paper/main.tex": "new\n", "report.json": "{}\n"},
    "beta": {"model.py": "new beta\n", "weights.bin": b"\x00\x01new", "deep/er/x.txt": "x\n"},
    "gamma": {"model.py": "a model that did not exist before\n"},
}

TWO_MODELS = """\
msl 1
import std.tabular

model alpha {
  modality tabular -> regression
  task regression
  objective regression
  architecture tabular.mlp { features = 8; hidden = 16; layers = 2; dropout = 0.1 }
}

model beta {
  modality tabular -> regression
  task regression
  objective regression
  architecture tabular.mlp { features = 4; hidden = 8; layers = 2; dropout = 0.1 }
}
"""


def as_tree(models: dict[str, dict[str, str | bytes]]) -> Tree:
    return {m: {rel: v.encode() if isinstance(v, str) else v for rel, v in files.items()}
            for m, files in models.items()}


def read_tree(root: Path) -> Tree:
    """Every entry of root (hidden ones included) -> its files; a non-folder entry maps to {"": b"<file>"}."""
    tree: Tree = {}
    for entry in sorted(os.listdir(root)):
        p = root / entry
        if p.is_symlink() or not p.is_dir():
            tree[entry] = {"": b"<file>"}
            continue
        tree[entry] = {f.relative_to(p).as_posix(): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}
    return tree



# ---------------------------------------------------------------- the commit itself
def test_commit_writes_every_model_and_nothing_else(tmp_path: Path) -> None:
    assert commit(tmp_path / "out", OLD) == [tmp_path / "out" / "alpha", tmp_path / "out" / "beta"]
    assert read_tree(tmp_path / "out") == as_tree(OLD)
    commit(tmp_path / "out", NEW)
    assert read_tree(tmp_path / "out") == as_tree(NEW)  # stale files of the old folders are gone; no hidden entry


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_folders_and_files_get_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        commit(tmp_path / "out", NEW)
    finally:
        os.umask(old)
    for p in [tmp_path / "out", *(tmp_path / "out").rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o777 if p.is_dir() else 0o666) & ~umask, (p, oct(mode))


def _exchange_off(monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)


def _steps(tmp_path: Path, exchange: bool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The named steps of committing NEW over OLD, in order."""
    root = tmp_path / "steps"
    commit(root, OLD)
    seen: list[str] = []
    _exchange_off(monkeypatch, exchange)
    monkeypatch.setattr(outputs, "FAULT_HOOK", seen.append)
    commit(root, NEW)
    monkeypatch.setattr(outputs, "FAULT_HOOK", None)
    assert read_tree(root) == as_tree(NEW)
    return seen


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_failure_at_every_step_leaves_out_as_it_was(tmp_path: Path, exchange: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError at step k: before the commit point OUT is exactly as it was, with a one-line message;
    after it the run has succeeded, and the next run deletes what the failure left."""
    steps = _steps(tmp_path, exchange, monkeypatch)
    assert "commit" in steps and ("swap alpha: between the renames" in steps) == (not exchange)
    point = steps.index("commit")
    for k, name in enumerate(steps):
        root = tmp_path / f"k{k}"
        commit(root, OLD)

        def fail(step: str, name: str = name, root: Path = root) -> None:
            if step == name:
                raise OSError(errno.EIO, "Input/output error", str(root / ".alpha.tmp-1-ab" / "model.py"))

        monkeypatch.setattr(outputs, "FAULT_HOOK", fail)
        if k < point:
            with pytest.raises(OutputError) as info:
                commit(root, NEW)
            msg = str(info.value)
            assert "\n" not in msg and "Input/output error" in msg and msg.endswith(f"`{root}` is as it was"), msg
            assert f"`{root / 'alpha' / 'model.py'}`" in msg  # the staging folder is shown as the model's
            assert read_tree(root) == as_tree(OLD), name
        else:
            commit(root, NEW)
            monkeypatch.setattr(outputs, "FAULT_HOOK", None)
            recover(root)
            assert read_tree(root) == as_tree(NEW), name
        monkeypatch.setattr(outputs, "FAULT_HOOK", None)


_CHILD = """\
import json, os, sys
from pathlib import Path
from metagen_compiler import outputs
cfg = json.loads(sys.argv[1])
calls = 0
def hook(step):
    global calls
    calls += 1
    if calls == cfg["kill_at"]:
        os._exit(77)
outputs.FAULT_HOOK = hook
if not cfg["exchange"]:
    outputs._exchange = lambda a, b: False
if cfg["op"] == "commit":
    outputs.commit(Path(cfg["root"]), cfg["models"])
else:
    outputs.recover(Path(cfg["root"]))
"""


def _child(root: Path, op: str, kill_at: int, exchange: bool) -> int:
    models = {m: {rel: v.decode("latin-1") if isinstance(v, bytes) else v for rel, v in files.items()}
              for m, files in NEW.items()}
    cfg = {"root": str(root), "op": op, "kill_at": kill_at, "exchange": exchange, "models": models}
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], check=False, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode in (0, 77), r.stderr
    return r.returncode


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_kill_at_every_step_is_recovered_even_if_the_recovery_is_killed(
        tmp_path: Path, exchange: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """os._exit at each step k of the commit (in a subprocess); then the next run's recovery, itself killed
    at its first, second, ... step until one finishes: OUT holds every model's complete old outputs (killed
    before the commit point) or every model's new ones (after), and nothing else."""
    steps = _steps(tmp_path, exchange, monkeypatch)
    point = steps.index("commit")
    new_with_bytes = {m: {rel: v.decode("latin-1").encode("utf-8") if isinstance(v, bytes) else v.encode()
                          for rel, v in files.items()} for m, files in NEW.items()}  # the child writes text
    recoveries = 0
    for k in range(1, len(steps) + 1):
        root = tmp_path / f"k{k}"
        commit(root, OLD)
        assert _child(root, "commit", k, exchange) == 77
        # a reader between the kill and the next run: each model complete, old or new (with two renames, the
        # model whose renames the kill split is missing until the next run)
        between = steps[k - 1].split(":")[0].removeprefix("swap ") if "between" in steps[k - 1] else ""
        _each_model_complete_or(root, new_with_bytes, {"gamma", between} - {""})
        j = 1
        while _child(root, "recover", j, exchange) == 77:
            j += 1
            assert j < 50
        recoveries += j
        want = new_with_bytes if k - 1 >= point else as_tree(OLD)
        assert read_tree(root) == want, (k, steps[k - 1])
        assert not (root / JOURNAL).exists()
    assert recoveries > len(steps)  # recoveries were killed too


def _each_model_complete_or(root: Path, new: Tree, allow_missing: set[str]) -> None:
    tree = read_tree(root)
    for m in new:
        if m not in tree:
            assert m in allow_missing, (m, sorted(tree))
            continue
        assert tree[m] in (as_tree(OLD).get(m), new[m]), m


def test_stale_entries_of_a_dead_run_are_deleted_and_an_interrupted_swap_is_undone(tmp_path: Path) -> None:
    """What an older metagenc (two renames, no journal) left when killed: a half-written staging folder, and
    the old folder moved aside with OUT/<model> missing. Everything else in OUT is left alone."""
    root = tmp_path / "out"
    commit(root, OLD)
    (root / ".alpha.tmp-k3j2_x9").mkdir()
    (root / ".alpha.tmp-k3j2_x9" / "model.py").write_text("half")
    os.rename(root / "beta", root / ".beta.old-a8d7f1")
    (root / ".gamma.tmp-99-ff").write_text("a file")
    (root / ".keep").write_text("mine")
    (root / "notes").mkdir()
    (root / ".metagenc-commit.json.tmp-1-ab").write_text("{")
    recover(root)
    assert read_tree(root) == {**as_tree(OLD), ".keep": {"": b"<file>"}, "notes": {}}


def test_a_corrupt_journal_names_nothing_it_may_touch(tmp_path: Path) -> None:
    root = tmp_path / "out"
    commit(root, OLD)
    (root / JOURNAL).write_text(json.dumps({"entries": [{"name": "alpha", "tmp": "../../etc", "old": "x",
                                                         "new_id": [0, 0], "old_id": None}]}))
    recover(root)
    assert read_tree(root) == as_tree(OLD)


def test_a_second_run_waits_for_the_first(tmp_path: Path) -> None:
    root = tmp_path / "out"
    commit(root, OLD)
    fd = os.open(root, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()
    t = threading.Thread(target=lambda: (commit(root, NEW), done.set()))
    t.start()
    try:
        assert not done.wait(0.5)
        assert read_tree(root) == as_tree(OLD)
    finally:
        os.close(fd)
    t.join(30)
    assert done.is_set() and read_tree(root) == as_tree(NEW)


# ---------------------------------------------------------------- the command line
@pytest.fixture
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "two.msl"
    p.write_text(TWO_MODELS)
    return p


def _only_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metagenc: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def compiled(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Path, Tree]]:
    out = tmp_path / "out"
    assert main([str(spec), "-o", str(out), "--seed", "1", "--backend", "pytorch"]) == 0
    capsys.readouterr()
    yield out, read_tree(out)


def _failing(when: Callable[[Path], bool], err: int) -> Callable[..., None]:
    real = outputs._write_file

    def write(path: Path, data: str | bytes, durable: bool = False) -> None:
        if when(path):
            raise OSError(err, os.strerror(err), str(path))
        real(path, data, durable)

    return write


def test_full_disk_on_the_second_model_leaves_the_first_untouched(
        spec: Path, compiled: tuple[Path, Tree], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, before = compiled
    monkeypatch.setattr(outputs, "_write_file", _failing(lambda p: ".beta.tmp-" in str(p), errno.ENOSPC))
    assert main([str(spec), "-o", str(out), "--seed", "2", "--backend", "pytorch"]) == 1
    line = _only_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and str(out / "beta") in line, line
    assert read_tree(out) == before


def test_a_failed_swap_of_the_second_model_swaps_the_first_back(
        spec: Path, compiled: tuple[Path, Tree], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, before = compiled
    real = outputs._swap

    def swap(root: Path, e: outputs._Entry) -> None:
        if e.name == "beta":
            raise OSError(errno.EIO, "Input/output error", str(root / e.name))
        real(root, e)

    monkeypatch.setattr(outputs, "_swap", swap)
    assert main([str(spec), "-o", str(out), "--seed", "2", "--backend", "pytorch"]) == 1
    assert "Input/output error" in _only_error_line(capsys.readouterr().err)
    assert read_tree(out) == before


@pytest.mark.parametrize("err", [errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT])
def test_a_refused_write_is_one_line(err: int, spec: Path, compiled: tuple[Path, Tree],
                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Read-only file system, no permission, quota: injected at the first folder the commit makes and at the
    first file it writes (tests run as root, where chmod does not stop a write; the real ones are below)."""
    out, before = compiled

    def refuse(path: Path, *a: object) -> None:
        raise OSError(err, os.strerror(err), str(path))

    for target in ("_make_dir", "_write_file"):
        with monkeypatch.context() as m:
            m.setattr(outputs, target, refuse)
            assert main([str(spec), "-o", str(out), "--seed", "2", "--backend", "pytorch"]) == 1
        assert os.strerror(err) in _only_error_line(capsys.readouterr().err)
        assert read_tree(out) == before


@pytest.mark.parametrize("kind", ["file", "symlink to a folder", "symlink to a file", "dangling symlink"])
def test_a_file_or_link_in_the_way_is_refused_before_anything_is_written(
        kind: str, spec: Path, compiled: tuple[Path, Tree], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """OUT/beta is not a folder: refused with a message, OUT/alpha untouched, the link (and what it points
    to) untouched, and no `.beta.old-*` or staging entry left."""
    out, before = compiled
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    shutil.rmtree(out / "beta")
    if kind == "file":
        (out / "beta").write_text("a file")
    else:
        dest = {"symlink to a folder": elsewhere, "symlink to a file": elsewhere / "precious.txt",
                "dangling symlink": tmp_path / "nowhere"}[kind]
        (out / "beta").symlink_to(dest)
    before = read_tree(out)
    assert main([str(spec), "-o", str(out), "--seed", "2", "--backend", "pytorch"]) == 1
    line = _only_error_line(capsys.readouterr().err)
    assert f"`{out / 'beta'}`" in line and ("symbolic link" in line) == (kind != "file"), line
    assert read_tree(out) == before
    assert os.path.islink(out / "beta") == (kind != "file")
    assert [p.name for p in elsewhere.iterdir()] == ["precious.txt"]


def test_output_that_is_a_file_or_under_a_file(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main([str(spec), "-o", str(f), "--backend", "none"]) == 1
    assert "is not a folder: choose another -o" in _only_error_line(capsys.readouterr().err)
    assert main([str(spec), "-o", str(f / "sub"), "--backend", "none"]) == 1
    assert "Not a directory" in _only_error_line(capsys.readouterr().err)
    assert f.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "two.msl"]


def test_no_write_permission_for_real(spec: Path, compiled: tuple[Path, Tree]) -> None:
    """A folder the user cannot write, for real: chmod 555, and when the tests run as root, metagenc runs
    without the capabilities that let root write anywhere (setpriv)."""
    out, before = compiled
    cmd = [sys.executable, "-m", "metagen_compiler.cli", str(spec), "-o", str(out), "--seed", "3", "--backend",
           "pytorch"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE; the injected EACCES covers it")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", *cmd]
    os.chmod(out, 0o555)
    try:
        r = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(out, 0o755)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Permission denied" in _only_error_line(r.stderr)
    assert read_tree(out) == before


_TMPFS_CHILD = """\
import json, os, subprocess, sys
mnt, spec = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt], check=True)
def tree():
    out = {}
    for d, _, files in os.walk(mnt):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, mnt)] = open(p, "rb").read().hex()
    return out
def cc(*args):
    r = subprocess.run([sys.executable, "-m", "metagen_compiler.cli", spec, "-o", mnt, *args],
                       capture_output=True, text=True)
    return [r.returncode, r.stderr]
res = {"first": cc("--seed", "1", "--backend", "pytorch,latex")}
res["before"] = tree()
st = os.statvfs(mnt)  # shrink the disk to half as much again as the outputs take: no room for a second copy
used = (st.f_blocks - st.f_bfree) * st.f_frsize
subprocess.run(["mount", "-o", f"remount,size={used * 3 // 2 // 1024}k", mnt], check=True)
res["full"] = cc("--seed", "2", "--backend", "pytorch,latex")
res["after_full"] = tree()
subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
res["ro"] = cc("--seed", "2", "--backend", "pytorch,latex")
res["after_ro"] = tree()
print(json.dumps(res))
"""


def test_real_full_disk_and_read_only_file_system(spec: Path, tmp_path: Path) -> None:
    """A real tmpfs (in a user and mount namespace) too small for a second copy of the outputs, then
    remounted read-only. The injected faults above cover machines where namespaces are not allowed."""
    no_namespaces = shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], check=False,
                                                                       capture_output=True).returncode
    if no_namespaces:
        pytest.skip("unshare -rm (user and mount namespaces) is not available here; injected faults cover it")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["unshare", "-rm", sys.executable, "-c", _TMPFS_CHILD, str(mnt), str(spec)], check=False,
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["first"][0] == 0, res["first"]
    line = _only_error_line(res["full"][1])
    assert res["full"][0] == 1 and "No space left on device" in line and re.search(rf"`{mnt}/(alpha|beta)/", line), line
    assert res["after_full"] == res["before"]
    assert res["ro"][0] == 1 and "Read-only file system" in _only_error_line(res["ro"][1])
    assert res["after_ro"] == res["before"]


def test_sigkill_during_real_compiles(spec: Path, tmp_path: Path) -> None:
    """SIGKILL a real `metagenc` at random times (METAGEN_KILL_TRIALS, default 6, seeded), mostly in the last
    half of its run where the commit is. Each model's folder is always the complete old or new output; after
    the next run's recovery all of OUT is old or all of it is new, with no stray entry."""
    def run(out: Path, seed: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "metagen_compiler.cli", str(spec), "-o", str(out), "--seed",
                                 seed], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    refs = {}
    for seed in ("1", "2"):
        t0 = time.monotonic()
        assert run(tmp_path / f"ref{seed}", seed).wait(120) == 0
        duration = time.monotonic() - t0
        refs[seed] = read_tree(tmp_path / f"ref{seed}")
    assert refs["1"]["alpha"] != refs["2"]["alpha"] and refs["1"]["beta"] != refs["2"]["beta"]
    rng = random.Random(0)
    counts = {"old": 0, "new": 0, "strays": 0, "mid-swap": 0}
    for trial in range(int(os.environ.get("METAGEN_KILL_TRIALS", "6"))):
        out = tmp_path / f"t{trial}"
        shutil.copytree(tmp_path / "ref1", out, symlinks=True)
        p = run(out, "2")
        time.sleep(rng.uniform(0.4, 1.1) * duration)
        p.send_signal(signal.SIGKILL)
        p.wait(60)
        seen = read_tree(out)
        for m in ("alpha", "beta"):
            assert seen[m] in (refs["1"][m], refs["2"][m]), (trial, m)
        counts["strays"] += any(name.startswith(".") for name in seen)
        counts["mid-swap"] += JOURNAL in seen
        recover(out)
        after = read_tree(out)
        assert after in (refs["1"], refs["2"]), trial
        counts["old" if after == refs["1"] else "new"] += 1
        shutil.rmtree(out)
    print(f"kill trials: {counts}")


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_training_runs_survive_a_recompile_and_a_kill_at_every_step(
        tmp_path: Path, exchange: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.py writes OUT/<model>/runs/<run>/; compiling again replaces the folder but keeps its runs, also when
    the compile is killed at any step and the next run recovers."""
    steps = _steps(tmp_path, exchange, monkeypatch)
    for k in [0, *range(1, len(steps) + 1)]:
        root = tmp_path / f"runs{k}"
        commit(root, OLD)
        (root / "alpha" / "runs" / "r1").mkdir(parents=True)
        (root / "alpha" / "runs" / "r1" / "metrics.jsonl").write_text('{"step": 1}\n')
        if k == 0:  # no kill: a plain recompile
            commit(root, NEW)
        else:
            assert _child(root, "commit", k, exchange) == 77
            j = 1
            while _child(root, "recover", j, exchange) == 77:
                j += 1
        assert (root / "alpha" / "runs" / "r1" / "metrics.jsonl").read_text() == '{"step": 1}\n', (k, steps[k - 1])
        assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [], k


# ---------------------------------------------------------------- measurements of earlier training runs
def _runs(root: Path, docs: dict[str, str]) -> Path:
    for run, text in docs.items():
        (root / run).mkdir(parents=True)
        (root / run / "measurements.json").write_text(text)
    return root


GOOD = {"metric": "accuracy", "value": 0.5, "split": "val", "steps": 4, "seen": 1200, "unit": "samples",
        "wall_s": 12.345, "data": "digits/", "synthetic": False,
        "hardware": {"device": "cpu", "processes": 1, "cpu": "AMD EPYC", "torch": "2.13.0+cpu"}}


def test_measurements_keep_the_latest_step_of_each_run_split_and_metric(tmp_path: Path) -> None:
    later = {**GOOD, "value": 0.75, "steps": 8, "hardware": {"device": "cuda", "cpu": "AMD EPYC", "gpu": "H100"}}
    test = {**GOOD, "split": "test", "synthetic": True, "hardware": "a laptop"}
    runs = _runs(tmp_path / "runs", {"b": json.dumps({"format": 1, "measurements": [later, GOOD, test]}),
                                     "a": json.dumps({"measurements": [GOOD]})})
    got = outputs.collect_measurements(runs)
    assert [(m["source"].split(",")[0], m["split"], m["value"]) for m in got] == [
        ("measured: run a", "val", 0.5), ("measured: run b", "test", 0.5), ("measured: run b", "val", 0.75)]
    assert got[0] == {"metric": "accuracy", "value": 0.5, "split": "val", "dataset": "digits/",
                      "source": "measured: run a, step 4, 1,200 samples seen, 12.3 s wall on AMD EPYC", "steps": 4,
                      "seen": 1200, "wall_s": 12.345, "hardware": GOOD["hardware"], "synthetic": False}
    assert got[1]["dataset"] == "synthetic data" and got[1]["source"].endswith(" on a laptop")
    assert got[2]["source"].endswith(" on H100")
    assert outputs.collect_measurements(tmp_path / "nothing here") == []


def test_malformed_measurements_are_skipped_never_raised(tmp_path: Path) -> None:
    """measurements.json is the user's file: one that does not parse, or an entry without a metric name or a
    finite value, is skipped; a field of the wrong type is left out of the source line, never formatted."""
    bad_files = {"not_json": "{", "not_utf8": "\udcff", "deep": "[" * 100_000, "a_list": "[1]",
                 "no_key": "{}", "not_a_list": '{"measurements": 3}'}
    runs = _runs(tmp_path / "runs", {k: v for k, v in bad_files.items() if k != "not_utf8"})
    (runs / "not_utf8").mkdir()
    (runs / "not_utf8" / "measurements.json").write_bytes(b"\xff\xfe{")
    (runs / "no_file").mkdir()
    skipped = [3, None, {"value": 1}, {"metric": "", "value": 1}, {"metric": 3, "value": 1},
               {"metric": "m", "value": True}, {"metric": "m", "value": "1"}, {"metric": "m"},
               {"metric": "m", "value": float("nan")}, {"metric": "m", "value": float("inf")},
               {"metric": "m", "value": 10**400}]
    mistyped = {"metric": "loss", "value": 2, "split": 7, "steps": True, "seen": "many", "unit": ["x"],
                "wall_s": 10**400, "data": {"a": 1}, "synthetic": "yes", "hardware": {"gpu": None, "cpu": 3}}
    _runs(runs, {"mixed": json.dumps({"measurements": [*skipped, mistyped]})})
    assert outputs.collect_measurements(runs) == [
        {"metric": "loss", "value": 2, "split": "", "dataset": "", "source": "measured: run mixed, step -1",
         "steps": -1, "seen": None, "wall_s": None, "hardware": {"gpu": None, "cpu": 3}, "synthetic": False}]
    shutil.rmtree(runs / "mixed")
    assert outputs.collect_measurements(runs) == []


def test_runs_behind_a_link_are_not_read(tmp_path: Path) -> None:
    _runs(tmp_path / "elsewhere", {"r": json.dumps({"measurements": [GOOD]})})
    assert len(outputs.collect_measurements(tmp_path / "elsewhere")) == 1
    (tmp_path / "runs").symlink_to(tmp_path / "elsewhere")
    assert outputs.collect_measurements(tmp_path / "runs") == []


def test_a_compile_reports_the_runs_measurements(spec: Path, compiled: tuple[Path, Tree],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Written into OUT/<model>/runs/ by train.py, read back by the next compile, kept across it; a malformed
    file beside it changes nothing."""
    out, _ = compiled
    _runs(out / "alpha" / "runs", {"r": json.dumps({"measurements": [GOOD]}), "bad": '{"measurements": [{"metric"'})
    assert main([str(spec), "-o", str(out), "--backend", "pytorch"]) == 0, capsys.readouterr().err
    report = json.loads((out / "alpha" / "report.json").read_text())
    assert [(m["metric"], m["value"], m["source"]) for m in report["measurements"]] == [
        ("accuracy", 0.5, "measured: run r, step 4, 1,200 samples seen, 12.3 s wall on AMD EPYC")]
    assert "measurements" not in json.loads((out / "beta" / "report.json").read_text())
    assert sorted(p.name for p in (out / "alpha" / "runs").iterdir()) == ["bad", "r"]


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_runs_merge_into_a_runs_folder_the_new_model_already_has(
        tmp_path: Path, exchange: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after its commit point, before it carried the runs; train.py then wrote a run into the new folder.
    The next run's recovery moves the old folder's runs in beside it; a run of the same name stays the new one."""
    point = _steps(tmp_path, exchange, monkeypatch).index("commit")
    root = tmp_path / "merge"
    commit(root, OLD)
    for run in ("r0", "r1"):
        (root / "alpha" / "runs" / run).mkdir(parents=True)
        (root / "alpha" / "runs" / run / "metrics.jsonl").write_text(f"old {run}\n")
    assert _child(root, "commit", point + 1, exchange) == 77  # killed at the commit point's step
    assert not (root / "alpha" / "runs").exists()
    for run in ("r1", "r2"):
        (root / "alpha" / "runs" / run).mkdir(parents=True)
        (root / "alpha" / "runs" / run / "metrics.jsonl").write_text(f"new {run}\n")
    recover(root)
    assert {p.name: (p / "metrics.jsonl").read_text() for p in (root / "alpha" / "runs").iterdir()} == {
        "r0": "old r0\n", "r1": "new r1\n", "r2": "new r2\n"}
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
