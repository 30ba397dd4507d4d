"""Building instruments from config: simulator checks and user-function loading."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from instrument_doubles import make_instrument

from instruments import (
    InputSpec,
    InstrumentConfig,
    InstrumentConfigError,
    build_instrument,
    describe_instrument,
    input_specs,
    list_simulators,
    load_function,
)

USER_FILE = """
CALLS = []

def measure(inputs):
    return {"y": inputs["x"] ** 2}

def two_args(inputs, extra):
    return {}

NOT_A_FUNCTION = 3

async def measure_async(inputs):
    return {"y": 1.0}

def measure_yields(inputs):
    yield {"y": 1.0}
"""


def _param(name: str, **kw: Any) -> SimpleNamespace:
    """Duck-typed like planners' FloatParameter/IntParameter/ChoiceParameter."""
    return SimpleNamespace(name=name, **kw)


BRANIN = SimpleNamespace(
    parameters=[
        _param("x1", type="float", bounds=(-5.0, 10.0)),
        _param("x2", type="float", bounds=(0.0, 15.0)),
        _param("solvent", type="choice", values=("water", "ethanol", "dmso")),
    ],
    outputs=("f", "cost"),
    evaluate=lambda inputs: {"f": 0.0, "cost": 1.0},
    description="Branin with a solvent.\nMore text.",
    floors={"cost": 0.0},
)


@pytest.fixture
def fake_simulators(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stand-in for the ``simulators`` package: records build calls."""
    calls: list[dict[str, Any]] = []
    # The data-key rule is the real simulators one (instruments checks it at load time), so
    # the real submodule stays importable behind the stand-in package.
    importlib.import_module("simulators._keys")
    module = ModuleType("simulators")
    module.SIMULATORS = {"branin": BRANIN}  # type: ignore[attr-defined]

    def get_problem(name: str) -> Any:
        return module.SIMULATORS[name]  # type: ignore[attr-defined]

    def build_simulated_instrument(function: Any, **kwargs: Any) -> Any:
        calls.append({"function": function, **kwargs})
        return make_instrument()

    module.get_problem = get_problem  # type: ignore[attr-defined]
    module.build_simulated_instrument = build_simulated_instrument  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "simulators", module)
    return calls


def campaign_params(**overrides: Any) -> list[Any]:
    params: dict[str, Any] = {
        "x1": {"name": "x1", "type": "float", "bounds": [0.0, 5.0]},
        "x2": _param("x2", type="float", bounds=(1.0, 2.0)),
        "solvent": ("solvent", ("water", "dmso")),
    }
    params.update(overrides)
    return [p for p in params.values() if p is not None]


# ---------------------------------------------------------------------------- parameters
def test_input_specs_accept_models_mappings_and_pairs() -> None:
    specs = input_specs(
        [
            _param("a", type="float", bounds=(0.0, 1.0)),
            {"name": "b", "type": "int", "bounds": [1, 4]},
            ("c", (1, 4)),
            ("d", ("p", "q")),
            _param("e", type="choice", values=(0, 1)),  # a numeric choice needs `values`
        ]
    )
    assert specs == (
        InputSpec("a", "float", bounds=(0.0, 1.0)),
        InputSpec("b", "int", bounds=(1, 4)),
        InputSpec("c", "int", bounds=(1, 4)),
        InputSpec("d", "choice", values=("p", "q")),
        InputSpec("e", "choice", values=(0, 1)),
    )
    with pytest.raises(InstrumentConfigError, match="duplicate"):
        input_specs([("a", (0, 1)), ("a", (0, 2))])
    with pytest.raises(InstrumentConfigError, match="neither bounds nor values"):
        input_specs([{"name": "a"}])


# ---------------------------------------------------------------------------- simulators
def test_simulator_builds_with_campaign_bounds_as_limits(
    fake_simulators: list[dict[str, Any]],
) -> None:
    config = InstrumentConfig(simulator="branin", noise={"f": 0.1}, latency=0.5)
    instrument = build_instrument(config, campaign_params(), base_dir=Path("."), seed=3)
    assert instrument.outputs == ("y",)  # whatever the simulators package built
    (call,) = fake_simulators
    assert call["function"] is BRANIN.evaluate
    assert {k: s.domain for k, s in call["inputs"].items()} == {
        "x1": (0.0, 5.0),
        "x2": (1.0, 2.0),
        "solvent": ("water", "dmso"),
    }
    assert call["outputs"] == ("f", "cost")
    assert (call["noise"], call["latency"], call["failure_rate"]) == ({"f": 0.1}, 0.5, 0.0)
    assert (call["seed"], call["name"]) == (3, "branin")
    assert call["floors"] == {"cost": 0.0}  # the simulator's physical floors go with it
    assert describe_instrument(config, campaign_params(), base_dir=Path(".")) == ("f", "cost")


@pytest.mark.parametrize(
    ("config", "params", "match"),
    [
        (
            {"simulator": "brainin"},
            campaign_params(),
            r"unknown simulator 'brainin'; built-in simulators are: branin",
        ),
        (
            {"simulator": "branin"},
            campaign_params(x3=("x3", (0.0, 1.0))),
            r"has no input\(s\) \['x3'\].*its inputs are: x1 \(float in \[-5.0, 10.0\]\)",
        ),
        ({"simulator": "branin"}, campaign_params(x2=None), r"needs a value for \['x2'\]"),
        (
            {"simulator": "branin"},
            campaign_params(x1=("x1", (-6.0, 0.0))),
            r"bounds \[-6.0, 0.0\] leave the domain.*within \[-5.0, 10.0\]",
        ),
        (
            {"simulator": "branin"},
            campaign_params(solvent=("solvent", ("water", "acetone"))),
            r"choice among \['water', 'ethanol', 'dmso'\]; \['acetone'\] are not",
        ),
        (
            {"simulator": "branin"},
            campaign_params(solvent=("solvent", (0.0, 1.0))),
            r"must be a choice",
        ),
        (
            {"simulator": "branin", "outputs": ["f", "yield"]},
            campaign_params(),
            r"no output\(s\) \['yield'\]; it measures: f, cost",
        ),
        (
            {"simulator": "branin", "noise": {"yeild": 0.1}},
            campaign_params(),
            r"noise is given for \['yeild'\].*outputs are: f, cost",
        ),
    ],
)
def test_simulator_config_errors_name_what_is_allowed(
    fake_simulators: list[dict[str, Any]], config: dict[str, Any], params: list[Any], match: str
) -> None:
    with pytest.raises(InstrumentConfigError, match=match) as info:
        describe_instrument(InstrumentConfig(**config), params, base_dir=Path("."))
    assert isinstance(info.value, ValueError)
    assert fake_simulators == []


def test_an_unknown_simulator_keeps_the_registry_s_suggestion() -> None:
    """The registry's "did you mean" was dropped (found in review); a registry that makes
    none (the stand-in above) gives the list alone."""
    config = InstrumentConfig(simulator="branni")
    with pytest.raises(InstrumentConfigError) as info:
        describe_instrument(config, campaign_params(), base_dir=Path("."))
    assert str(info.value) == (
        "unknown simulator 'branni'; built-in simulators are: ackley, branin, flow_reactor, "
        "hartmann6, rosenbrock; did you mean 'branin'?"
    )
    assert info.value.field == "simulator"


def test_a_registry_without_a_suggestion_lists_the_names(
    fake_simulators: list[dict[str, Any]],
) -> None:
    with pytest.raises(InstrumentConfigError) as info:
        describe_instrument(
            InstrumentConfig(simulator="zzz"), campaign_params(), base_dir=Path(".")
        )
    assert str(info.value) == "unknown simulator 'zzz'; built-in simulators are: branin"


def test_list_simulators(fake_simulators: list[dict[str, Any]]) -> None:
    (info,) = list_simulators()
    assert info.name == "branin"
    assert [s.name for s in info.inputs] == ["x1", "x2", "solvent"]
    assert info.outputs == ("f", "cost")
    assert info.description == "Branin with a solvent."


# ---------------------------------------------------------------------------- functions
@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "lab.py").write_text(USER_FILE)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    return tmp_path


def test_function_from_file_relative_to_base_dir(user_dir: Path) -> None:
    fn = load_function("models/lab.py:measure", base_dir=user_dir)
    assert fn({"x": 3.0}) == {"y": 9.0}
    # loaded once per file version: checking then building does not re-run the module
    assert load_function("models/lab.py:measure", base_dir=user_dir) is fn


def test_function_from_module(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = user_dir / "mylab_pkg_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "physics.py").write_text(USER_FILE)
    monkeypatch.syspath_prepend(str(user_dir))
    fn = load_function("mylab_pkg_for_test.physics:measure", base_dir=Path("/nonexistent"))
    assert fn({"x": 2.0}) == {"y": 4.0}
    monkeypatch.delitem(sys.modules, "mylab_pkg_for_test.physics")
    monkeypatch.delitem(sys.modules, "mylab_pkg_for_test")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("models/missing.py:measure", r"not found \(looked for .*models/missing.py"),
        ("models/lab.py:mesure", r"no attribute .mesure.; did you mean .measure.\? functions"),
        ("models/lab.py:NOT_A_FUNCTION", r"'NOT_A_FUNCTION' is a int, not a function"),
        ("models/lab.py:two_args", r"cannot be called with one argument"),
        ("models/lab.py:measure_async", r"is an async function; .*asyncio.run"),
        ("models/lab.py:measure_yields", r"is a generator function .*`return \{name: value"),
        ("broken.py:f", r"running 'broken.py' failed at line 1: RuntimeError: boom at import"),
        ("no_such_module_xyz:f", r"cannot import module 'no_such_module_xyz'"),
        ("models/lab.txt/x:f", r"must be a .py file"),
        ("nocolon", r"must look like `module:function`"),
    ],
)
def test_bad_function_specs_are_clear(user_dir: Path, spec: str, match: str) -> None:
    with pytest.raises(InstrumentConfigError, match=match) as info:
        load_function(spec, base_dir=user_dir)
    assert info.value.field == "function"


def test_function_instrument_is_wrapped_by_the_simulators(
    user_dir: Path, fake_simulators: list[dict[str, Any]]
) -> None:
    config = InstrumentConfig(function="models/lab.py:measure", outputs=["y"], failure_rate=0.1)
    params = [("x", (-1.0, 1.0)), ("mode", ("a", "b", "c"))]
    assert describe_instrument(config, params, base_dir=user_dir) == ("y",)
    build_instrument(config, params, base_dir=user_dir, seed=None)
    (call,) = fake_simulators
    assert call["function"]({"x": 0.5}) == {"y": 0.25}
    assert {k: s.domain for k, s in call["inputs"].items()} == {
        "x": (-1.0, 1.0),
        "mode": ("a", "b", "c"),
    }
    assert (call["outputs"], call["failure_rate"], call["name"]) == (("y",), 0.1, "measure")


def test_function_output_may_not_shadow_a_parameter(user_dir: Path) -> None:
    config = InstrumentConfig(function="models/lab.py:measure", outputs=["x"])
    with pytest.raises(InstrumentConfigError, match=r"also parameters \['x'\]"):
        describe_instrument(config, [("x", (0.0, 1.0))], base_dir=user_dir)


@pytest.mark.parametrize(
    ("params", "outputs", "field"),
    [
        ([("x", (0.0, 1.0)), ("x_setpoint", (0.0, 1.0))], ["y"], None),
        ([("x", (0.0, 1.0))], ["x_setpoint"], "outputs"),
    ],
)
def test_setpoint_clash_is_refused_when_the_campaign_loads(
    user_dir: Path, params: list[Any], outputs: list[str], field: str | None
) -> None:
    """The devices' own rule, applied by describe_instrument (``validate``), not at ``run``."""
    from simulators._keys import data_key_clashes

    assert data_key_clashes([p for p, _ in params], outputs) == ["x_setpoint"]
    config = InstrumentConfig(function="models/lab.py:measure", outputs=outputs)
    match = r"'x_setpoint' is both the setpoint of parameter 'x'.*fix: rename 'x_setpoint'"
    with pytest.raises(InstrumentConfigError, match=match) as info:
        describe_instrument(config, params, base_dir=user_dir)
    assert info.value.field == field
    with pytest.raises(InstrumentConfigError, match=match):
        build_instrument(config, params, base_dir=user_dir, seed=1)


def test_instrument_named_like_a_data_key_is_renamed(user_dir: Path) -> None:
    """The name comes from the function (``y``), so a clash is ours to avoid, not the user's."""
    (user_dir / "y.py").write_text("def y(inputs):\n    return {'y': inputs['x']}\n")
    config = InstrumentConfig(function="y.py:y", outputs=["y"], latency=0.0)
    params = [("x", (0.0, 1.0))]
    assert describe_instrument(config, params, base_dir=user_dir) == ("y",)
    instrument = build_instrument(config, params, base_dir=user_dir, seed=1)
    assert instrument.name == "y_instrument"
    instrument.inputs["x"].set(0.25)
    detector: Any = instrument.detectors[0]  # typed by protocol: Readable
    assert detector.trigger().success
    assert detector.read()["y"]["value"] == 0.25
    instrument.close()
    # a parameter may take the next name too
    config = InstrumentConfig(function="models/lab.py:measure", outputs=["y"])
    params = [("x", (0.0, 1.0)), ("measure", (0.0, 1.0)), ("measure_instrument", (0.0, 1.0))]
    instrument = build_instrument(config, params, base_dir=user_dir, seed=1)
    assert instrument.name == "measure_instrument2"
    instrument.close()
