"""A user's file cannot make closedloop read forever or recurse without end.

Found in a security review: a campaign's ``prior_data:`` that is a link to /dev/zero (git
stores links) was read until the memory ran out, because the size was checked after the
read; a 657-byte dataset spec of nested YAML aliases spun ``validate`` for minutes, and
3000 ``[`` ended in a RecursionError; the emulator cache wrote through a link planted at
its predictable temporary name. A named pipe stands in for /dev/zero: with the fix it is
refused before it is opened, without it the open blocks, which the tests' timeouts catch
instead of the host's memory running out.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from simulators._datasets import DatasetError, load_spec
from simulators._emulator import Emulator
from simulators._text import (
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    DepthLimitedComposer,
    TextFileError,
    check_yaml_expansion,
    read_text,
)
from tests.cli_process import run_cli

ROOT = Path(__file__).parents[2]

CAMPAIGN = """\
name: shared
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin}
planner: {kind: random}
budget: {max_trials: 3}
seed: 1
"""

SPEC_HEAD = """\
parameters:
  - {name: temperature, type: float, bounds: [20, 120]}
outputs: [yield]
goal: {yield: maximize}
"""

#: 10^9 values from 9 lines: the spec of the review's repro.
ALIAS_BOMB = 'a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
)


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``, failing the test (not hanging it) if it has not returned in ``seconds``:
    a read that blocks on a named pipe is left behind in a daemon thread."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:  # handed to the test below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` in a fresh interpreter, killed after a minute (a read that
    blocks on a pipe would otherwise hang the test session)."""
    return run_cli(args, cwd=cwd, timeout=120)


# ---------------------------------------------------------------------------- files
def test_a_named_pipe_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "prior.csv"
    os.mkfifo(fifo)
    with pytest.raises(TextFileError) as caught:
        _within(10, lambda: read_text(fifo, kind="CSV file", max_bytes=1000))
    assert caught.value.problem == "is a named pipe (FIFO), not a CSV file"
    assert "regular file" in caught.value.fix


def test_a_link_to_a_device_is_refused_and_the_link_named(tmp_path: Path) -> None:
    """/dev/null: a device like /dev/zero, but one that ends if it were read."""
    link = tmp_path / "campaign.yaml"
    link.symlink_to("/dev/null")
    with pytest.raises(TextFileError) as caught:
        _within(10, lambda: read_text(link, kind="campaign file", max_bytes=1000))
    assert caught.value.problem == ("is a device, not a campaign file (it links to /dev/null)")


def test_a_large_file_is_refused_without_being_read(tmp_path: Path) -> None:
    """A 4 GB (sparse) file is judged by its size: reading it first took its size in memory."""
    big = tmp_path / "big.log"
    with big.open("wb") as handle:
        handle.truncate(4 * 2**30)
    started = time.perf_counter()
    with pytest.raises(TextFileError, match=r"^is 4294967296 bytes; a campaign file is at most"):
        read_text(big, kind="campaign file", max_bytes=1_000_000)
    assert time.perf_counter() - started < 5


def test_regular_files_and_links_to_them_are_read_as_before(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_bytes(b"\xef\xbb\xbfx,y\n1,2\n")
    (tmp_path / "link.csv").symlink_to(real)
    for path in (real, tmp_path / "link.csv"):
        assert read_text(path, kind="CSV file", max_bytes=100, csv=True) == "x,y\n1,2\n"
    at_limit = tmp_path / "limit.txt"
    at_limit.write_text("a" * 100)
    assert read_text(at_limit, kind="file", max_bytes=100) == "a" * 100
    with pytest.raises(TextFileError, match="^is 101 bytes"):
        at_limit.write_text("a" * 101)
        read_text(at_limit, kind="file", max_bytes=100)
    with pytest.raises(TextFileError, match="^is a directory, not a file"):
        read_text(tmp_path, kind="file", max_bytes=100)
    with pytest.raises(TextFileError, match="^no such file"):
        read_text(tmp_path / "gone", kind="file", max_bytes=100)


def test_validate_refuses_prior_data_linked_to_a_pipe(tmp_path: Path) -> None:
    """The review's repro with a pipe for /dev/zero: one error, exit 2, nothing read."""
    (tmp_path / "campaign.yaml").write_text(CAMPAIGN + "prior_data: prior.csv\n")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "prior.csv").symlink_to(tmp_path / "pipe")
    proc = _cli("validate", "campaign.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "is a named pipe (FIFO), not a CSV file" in proc.stderr
    assert "Traceback" not in proc.stderr and "please report" not in proc.stderr


def test_a_dataset_spec_that_is_a_pipe_names_the_spec(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "spec.yaml")
    with pytest.raises(DatasetError) as caught:
        _within(10, lambda: load_spec(tmp_path / "spec.yaml"))
    assert caught.value.path == tmp_path / "spec.yaml"
    assert "is a named pipe (FIFO), not a dataset spec" in str(caught.value)


# ---------------------------------------------------------------------------- YAML limits
def test_a_spec_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_HEAD + ALIAS_BOMB)
    assert len(spec.read_bytes()) < 1000
    with pytest.raises(DatasetError) as caught:
        _within(10, lambda: load_spec(spec))
    assert caught.value.path == spec and caught.value.line is not None
    assert f"expands to more than {MAX_YAML_NODES} values through YAML anchors/aliases" in str(
        caught.value
    )


def test_a_spec_nested_thousands_deep_names_the_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_HEAD + "description: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(DatasetError) as caught:
        load_spec(spec)
    assert caught.value.line == 5
    assert f"nests lists/mappings more than {MAX_YAML_DEPTH} levels deep" in str(caught.value)
    assert "remove the extra brackets" in str(caught.value)


def test_a_spec_deep_only_through_aliases_is_refused(tmp_path: Path) -> None:
    """Each anchor nests 60 levels inside the last: 2400 levels once expanded, though no
    line is nested more than 61 deep as written."""
    chain = "".join(
        f"c{k}: &c{k} " + "[" * 60 + (f"*c{k - 1}" if k else "1") + "]" * 60 + "\n"
        for k in range(40)
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_HEAD + chain)
    with pytest.raises(DatasetError, match="levels deep through YAML aliases"):
        load_spec(spec)


def test_a_spec_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_HEAD + "loop: &a [1, *a]\n")
    with pytest.raises(DatasetError) as caught:
        load_spec(spec)
    assert "an alias refers to a list or mapping that holds it" in str(caught.value)
    assert caught.value.line == 5


def test_a_spec_value_python_cannot_read_names_its_line(tmp_path: Path) -> None:
    """A 5000-digit integer (past Python's int-string limit) or an impossible date made a
    ValueError and "please report it"."""
    spec = tmp_path / "spec.yaml"
    for value in ("9" * 5000, "2026-02-30"):
        spec.write_text(SPEC_HEAD + f"seed: {value}\n")
        with pytest.raises(DatasetError) as caught:
            load_spec(spec)
        assert caught.value.line == 5
        assert "has a value that cannot be read" in str(caught.value)
        assert "quote the value if it is text" in str(caught.value)


def test_a_spec_with_a_few_aliases_still_loads(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "bounds: &b [20, 120]\nparameters:\n  - {name: t, type: float, bounds: *b}\noutputs: [y]\n"
    )
    with pytest.raises(DatasetError, match="unknown key 'bounds'"):  # aliases were expanded
        load_spec(spec)
    spec.write_text("parameters:\n  - &p {name: t, type: float, bounds: [20, 120]}\noutputs: [y]\n")
    assert [p.name for p in load_spec(spec).parameters] == ["t"]


def test_a_campaign_and_a_spec_refuse_an_alias_bomb_in_the_same_words(tmp_path: Path) -> None:
    """One limit and one message for every YAML file a user writes: the campaign reader
    (ruamel.yaml) and the spec reader (PyYAML) share ``simulators._text``'s."""
    (tmp_path / "data.csv").write_text("temperature,yield\n20,0.1\n50,0.4\n")
    (tmp_path / "spec.yaml").write_text(SPEC_HEAD + ALIAS_BOMB)
    (tmp_path / "c_spec.yaml").write_text(
        "name: spec\ninstrument: {dataset: data.csv, spec: spec.yaml}\n"
        "planner: {kind: random}\nbudget: {max_trials: 3}\n"
    )
    (tmp_path / "c_bomb.yaml").write_text(CAMPAIGN + ALIAS_BOMB)
    said = "expands to more than 100000 values through YAML anchors/aliases"
    for campaign in ("c_spec.yaml", "c_bomb.yaml"):
        started = time.perf_counter()
        proc = _cli("validate", campaign, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert said in " ".join(proc.stderr.split()), proc.stderr
        assert "Traceback" not in proc.stderr
        assert time.perf_counter() - started < 60


def _plain_children(node: Any) -> Any:
    if isinstance(node, dict):
        return node.values()
    return node if isinstance(node, list) else ()


def test_the_expansion_check_is_linear_and_exact_at_its_limits() -> None:
    shared = [1] * 1000
    check_yaml_expansion({"a": [shared] * 98}, _plain_children)  # 98_100 values
    with pytest.raises(TextFileError, match="more than 100000 values"):
        check_yaml_expansion({"a": [shared] * 100}, _plain_children)
    deep: Any = 1
    for _ in range(MAX_YAML_DEPTH - 1):
        deep = [deep]
    check_yaml_expansion(deep, _plain_children)  # exactly MAX_YAML_DEPTH levels
    with pytest.raises(TextFileError, match="levels deep"):
        check_yaml_expansion([deep], _plain_children)
    looped: list[Any] = [1]
    looped.append(looped)
    with pytest.raises(TextFileError, match="refers to a list or mapping that holds it"):
        check_yaml_expansion({"x": looped}, _plain_children)


def test_the_composers_limit_is_the_same_for_both_yaml_libraries() -> None:
    from ruamel.yaml import YAML
    from ruamel.yaml.composer import Composer

    class Ruamel(DepthLimitedComposer, Composer):
        pass

    class PyYAML(DepthLimitedComposer, yaml.SafeLoader):
        pass

    ok = "x: " + "[" * (MAX_YAML_DEPTH - 2) + "1" + "]" * (MAX_YAML_DEPTH - 2) + "\n"
    deep = "x:\n  " + "[" * (MAX_YAML_DEPTH - 1) + "1" + "]" * (MAX_YAML_DEPTH - 1) + "\n"
    ruamel = YAML(typ="rt")
    ruamel.Composer = Ruamel
    assert ruamel.load(ok) is not None and yaml.compose(ok, Loader=PyYAML) is not None
    for load in (ruamel.load, lambda text: yaml.compose(text, Loader=PyYAML)):
        with pytest.raises(TextFileError) as caught:
            load(deep)
        assert caught.value.line == 2


# ---------------------------------------------------------------------------- emulator cache
def _emulator(tmp_path: Path) -> Emulator:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("parameters:\n  - {name: t, type: float, bounds: [0, 1]}\noutputs: [y]\n")
    one = np.ones(1)
    return Emulator(
        spec=load_spec(spec_file),
        digest="d" * 64,
        X=np.array([[0.0], [1.0]]),
        alpha=np.array([[0.5], [0.25]]),
        lengthscale=np.array([[0.3]]),
        outputscale=one,
        noise=one * 0.01,
        mean=one * 0.0,
        y_mean=one * 0.0,
        y_std=one,
        y_lo=one * -10,
        y_hi=one * 10,
    )


def test_the_emulator_cache_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    emulator = _emulator(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / "mine-dddd.npz"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    # the name the cache used to write to, taken in advance by someone else
    planted = target.with_suffix(f".{os.getpid()}.tmp.npz")
    planted.symlink_to(victim)
    emulator.save(target)
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in cache.iterdir()) == sorted([target.name, planted.name])
    assert not target.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it holds the data's rows
    loaded = Emulator.load(target, emulator.spec, emulator.digest)
    assert loaded is not None and loaded({"t": 0.5}) == emulator({"t": 0.5})


def test_a_failed_emulator_save_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = _emulator(tmp_path)

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="No space left"):
        emulator.save(tmp_path / "cache" / "e.npz")
    assert list((tmp_path / "cache").iterdir()) == []


def test_instruments_check_refuses_a_pipe_without_reading_it(tmp_path: Path) -> None:
    """`instruments check FILE` read FILE again, unbounded, after the instrument-file
    reader refused it (a link to /dev/zero: MemoryError, a pipe: a hang)."""
    os.mkfifo(tmp_path / "lab.yaml")
    proc = _cli("instruments", "check", "lab.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "is a named pipe (FIFO), not an instrument file" in proc.stderr
    assert "Traceback" not in proc.stderr and "please report" not in proc.stderr
