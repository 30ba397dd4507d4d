"""What ``Runner`` refuses when driven from Python, and that a refusal leaves no trace.

Found in review: a ``manual`` campaign run from a notebook was refused only at its first
trial, after the campaign and that trial were stored, leaving a ``stopped`` campaign with a
trial ``running``; any exception between storing a trial and starting its run left it so. A
function defined in the notebook (``function: __main__:measure``) ran, but after a kernel
restart ``resume`` told the user to abandon the campaign for a new one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from loop import ClosedLoopError, Runner, Store, parse_campaign
from loop.config import StoredCampaignError

MANUAL = """
name: man
parameters:
  - {name: x, type: float, bounds: [0, 1]}
objectives: [{name: y, goal: minimize}]
instrument: manual
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 3
"""

BRANIN = """
name: flow
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: INSTRUMENT
planner: {kind: sobol}
budget: {max_trials: 4}
seed: 3
"""


def _loaded(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def test_a_manual_campaign_without_an_operator_is_refused_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    with pytest.raises(ClosedLoopError, match="pass `operator=`") as info:
        Runner(_loaded(tmp_path, MANUAL), store).run()
    assert "nothing was started or stored" in str(info.value)
    assert store.campaigns() == []
    # resume (of a campaign `closedloop suggest` started) is refused as early: untouched
    creator = Runner(_loaded(tmp_path, MANUAL), store)
    cid = creator.create()
    creator.lease.release()
    before = store.campaign(cid)
    with pytest.raises(ClosedLoopError, match="pass `operator=`"):
        Runner.from_store(store, cid).resume()
    after = store.campaign(cid)
    assert (after.status, after.stop_reason) == (before.status, before.stop_reason)
    assert store.trials(cid) == [] and store.lease(cid) is None
    store.close()


def test_a_trial_whose_run_never_started_is_not_left_running(tmp_path: Path) -> None:
    """An exception after the trial row was stored and before its run started (here the
    listener's): the trial is ``abandoned`` with the reason, the campaign ``stopped`` and
    resumable."""

    class Breaks:
        def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
            if number == 2:
                raise RuntimeError("the progress display broke")

        def trial_finished(self, report: Any) -> None:
            pass

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    loaded = _loaded(tmp_path, BRANIN.replace("INSTRUMENT", "{simulator: branin}"))
    runner = Runner(loaded, store, listener=Breaks())
    with pytest.raises(RuntimeError, match="the progress display broke"):
        runner.run()
    cid = runner.campaign_id or 0
    trials = store.trials(cid)
    assert [t.status for t in trials] == ["completed", "abandoned"]
    assert trials[1].error == (
        "stopped before its run started: RuntimeError: the progress display broke"
    )
    assert store.campaign(cid).status == "stopped"
    summary = Runner.from_store(store, cid).resume()
    assert (summary.status, summary.completed) == ("completed", 4)
    store.close()


def test_a_notebook_function_resumes_once_it_is_defined_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``function: __main__:NAME`` is the session's function. Missing (a restarted kernel),
    ``resume`` says to define it and resume, not to start a new campaign; defined again,
    the campaign resumes."""
    main = sys.modules["__main__"]

    def nb_measure(inputs: dict[str, float]) -> dict[str, float]:
        return {"y": inputs["x1"] ** 2 + inputs["x2"]}

    monkeypatch.setattr(main, "nb_measure", nb_measure, raising=False)
    text = BRANIN.replace("INSTRUMENT", '{function: "__main__:nb_measure", outputs: [y]}')
    store = Store(f"sqlite:///{tmp_path / 'f.db'}")
    runner = Runner(_loaded(tmp_path, text), store, max_trials=2)
    assert runner.run().completed == 2
    cid = runner.campaign_id
    monkeypatch.delattr(main, "nb_measure")  # the kernel restarted
    with pytest.raises(StoredCampaignError) as info:
        Runner.from_store(store, cid, max_trials=4)
    message = " ".join(str(info.value).split())
    assert "this session defines no 'nb_measure'" in message, message
    assert "define `nb_measure` in this session first" in message, message
    assert "a .py file beside the campaign file" in message, message
    assert "Go on in a new campaign" not in message, message
    monkeypatch.setattr(main, "nb_measure", nb_measure, raising=False)  # run the cell again
    summary = Runner.from_store(store, cid, max_trials=4).resume()
    assert (summary.status, summary.completed) == ("completed", 4)
    store.close()


def test_resuming_a_finished_campaign_from_python_says_the_python_that_extends_it(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    loaded = _loaded(tmp_path, BRANIN.replace("INSTRUMENT", "{simulator: branin}"))
    cid = Runner(loaded, store, max_trials=2).run().campaign_id
    with pytest.raises(ClosedLoopError) as info:
        Runner.from_store(store, cid).resume()
    call = f"Runner.from_store(Store({store.url!r}), {cid}, max_trials=12).resume()"
    assert call in str(info.value), info.value
    assert Runner.from_store(store, cid, max_trials=3).resume().completed == 3
    store.close()


def test_a_notebook_function_from_the_command_line_says_to_use_a_file(tmp_path: Path) -> None:
    """On the command line ``__main__`` is closedloop itself: "define it in this session
    first" was advice no one could take (found in review)."""
    from tests.cli_process import closedloop

    (tmp_path / "c.yaml").write_text(
        BRANIN.replace("INSTRUMENT", '{function: "__main__:measure", outputs: [y]}')
    )
    result = closedloop("validate", "c.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "the command line has none" in message, message
    assert "put `measure` in a .py file beside the campaign file" in message, message
    assert "define `measure` in this session first" not in message, message


def test_a_notebook_functions_misnamed_key_says_to_resume_from_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop reason said "`closedloop resume --store ... -c 1` goes on", which the command
    line refuses for a ``__main__:`` function (found in review, session 39): it names the
    Python call."""
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "measure", lambda inputs: {"Y": 1.0}, raising=False)
    store = Store(f"sqlite:///{tmp_path / 'nb.db'}")
    text = BRANIN.replace("INSTRUMENT", '{function: "__main__:measure", outputs: [y]}')
    summary = Runner(_loaded(tmp_path, text), store).run()
    assert summary.status == "stopped" and "misnamed key" in summary.reason
    call = f"Runner.from_store(Store({store.url!r}), {summary.campaign_id}).resume()"
    assert call in summary.reason and "closedloop resume" not in summary.reason, summary.reason
    store.close()


def test_a_store_opened_read_only_is_refused_by_a_runner(tmp_path: Path) -> None:
    """``Store(url, read_only=True)`` took every write a Runner made (found in review,
    session 39): refused, before anything is stored."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Store(url).close()  # an existing, writable store
    looking = Store(url, read_only=True)
    loaded = _loaded(tmp_path, BRANIN.replace("INSTRUMENT", "{simulator: branin}"))
    with pytest.raises(ClosedLoopError, match=r"opened with read_only=True.*open it with Store"):
        Runner(loaded, looking).run()
    assert looking.campaigns() == []
    writing = Store(url)
    cid = Runner(loaded, writing, max_trials=1).run().campaign_id
    writing.close()
    runner = Runner.from_store(looking, cid)  # it reads, and weighs the stored rules
    with pytest.raises(ClosedLoopError, match=r"opened with read_only=True"):
        runner.resume()
    looking.close()


def test_a_notebooks_slips_are_said_with_the_call_that_works(tmp_path: Path) -> None:
    """A path for the campaign, a URL for the store, a seed in quotes failed deep inside as
    AttributeError (found in review, session 39)."""
    loaded = _loaded(tmp_path, BRANIN.replace("INSTRUMENT", "{simulator: branin}"))
    url = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(TypeError, match=r"Runner\(load_campaign\('.*c.yaml'\)"):
        Runner(tmp_path / "c.yaml", Store(url))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Runner\(loaded, Store\('sqlite:///"):
        Runner(loaded, url)  # type: ignore[arg-type]
    # a path gets the URL of that file; a password is never shown (review AC)
    with pytest.raises(TypeError, match=r"Store\('sqlite:///.*s\.db'\)"):
        Runner.from_store(tmp_path / "s.db", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError) as shown:
        Runner(loaded, "postgresql+psycopg://lab:s3cret@db/runs")  # type: ignore[arg-type]
    assert "s3cret" not in str(shown.value) and "lab:***@db" in str(shown.value)
    import numpy as np

    assert Runner(loaded, Store(url), seed=np.int64(5)).seed == 5  # type: ignore[arg-type]
    for seed in ("7", -1, 2**32):
        with pytest.raises(TypeError, match=r"seed must be a whole number in \[0, 2\*\*32\)"):
            Runner(loaded, Store(url), seed=seed)  # type: ignore[arg-type]


def test_a_notebook_campaign_its_target_ended_is_told_the_python_way_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "then `closedloop run FILE --prior done.csv`", which the command line refuses for a
    ``__main__:`` function (found in review, session 39)."""
    from loop.runner import CampaignFinished

    monkeypatch.setattr(sys.modules["__main__"], "measure", lambda i: {"y": -1.0}, raising=False)
    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    text = BRANIN.replace("INSTRUMENT", '{function: "__main__:measure", outputs: [y]}').replace(
        "budget: {max_trials: 4}", "budget: {max_trials: 4, target: 0}"
    )
    cid = Runner(_loaded(tmp_path, text), store).run().campaign_id
    with pytest.raises(CampaignFinished) as info:
        Runner.from_store(store, cid).resume()
    message = str(info.value)
    assert "prior_data: done.csv" in message and "closedloop run" not in message, message
    store.close()
