"""Simulated instruments from real measurements: bundled laboratory datasets and the user's own.

A dataset is a table of experiments that were run in a real laboratory (one row per
experiment: the inputs, then the measured outputs) plus a *spec* saying what each column is.
It becomes a simulator in one of two ways:

* **Exact lookup** (``enumerated`` datasets, e.g. ``suzuki_edbo``: every combination of a few
  categorical choices was measured). The simulator returns the table's value for a row and
  refuses any point that is not a row; a campaign on it gives the planner the rows as its
  only candidates, so nothing outside the table is ever proposed.
* **Emulator** (continuous and mixed spaces, e.g. ``hplc``). A Gaussian process fitted on
  the table (see :mod:`simulators._emulator`) gives the response anywhere in the space; the
  instrument adds Gaussian noise with the GP's fitted noise level, so a dry run sees the
  dataset's own scatter.

Both are pure functions (inputs dict -> outputs dict), wrapped as Ophyd devices by
:func:`simulators.build_simulated_instrument` like every other simulator.

The bundled datasets are the Olympus collection (MIT licence, ``datasets/LICENSE``), each
with the publication to cite (``datasets/README.md``, :attr:`DatasetSpec.citation`).

A user's own data is a CSV with a header row and a small YAML spec::

    parameters:                 # campaign syntax
      - {name: temperature, type: float, bounds: [20, 120]}
      - {name: solvent, type: choice, values: [MeCN, THF]}
    outputs: [yield]            # CSV columns that were measured
    goal: maximize              # or {yield: maximize}: a campaign's objectives if it omits them
    enumerated: false           # true: an exact lookup over the rows

Every problem with either file is a :class:`DatasetError` naming the file and line.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import io
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from simulators._functions import Goal, ParamSpec, TestProblem
from simulators._text import (
    LINE_BREAK,
    SHOWN_CHARS,
    CsvRecord,
    DepthLimitedComposer,
    TextFileError,
    check_yaml_expansion,
    csv_records,
    key_twice,
    read_text,
    shown,
    shown_names,
)

logger = logging.getLogger(__name__)

#: The bundled data (package data: installed with the wheel).
DATA_DIR = Path(__file__).with_name("datasets")
#: The largest spec and data files read: a spec is a page of YAML; a data CSV of this size
#: holds about a million rows, more than an emulator is fitted on in reasonable time.
MAX_SPEC_BYTES = 1_000_000
MAX_DATA_BYTES = 100_000_000

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class DatasetError(ValueError):
    """A dataset or its spec cannot be used; says which file and line, and the fix.

    Attributes:
        path: the file at fault (data CSV or spec YAML), if any.
        line: 1-based line in that file, if known.
        fix: what to change, if there is one thing to say.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.line = line
        self.fix = fix
        self.message = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line else f"{self.path}: "
        text = f"{where}{message}"
        if fix:
            text += f" (fix: {fix})"
        super().__init__(text)


class UnknownDatasetError(DatasetError, KeyError):
    """No bundled dataset has that name; the message lists them and the nearest one."""

    def __init__(self, name: str, allowed: Sequence[str]) -> None:
        # 0.6, not 0.5: at 0.5 any two shared letters of a 4-letter name match ('nope' ->
        # 'agnp'), a suggestion that misleads more than it helps.
        close = difflib.get_close_matches(str(name).lower(), list(allowed), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        super().__init__(
            f"unknown dataset {name!r}",
            fix=f"{hint}bundled datasets: {', '.join(allowed)}; or give a path to a CSV "
            "file and `spec: spec.yaml`",
        )

    def __str__(self) -> str:
        return self.args[0] if self.args else self.message


class PointNotInDataset(KeyError):
    """A lookup dataset was asked for a point that is not one of its rows."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "point not in dataset"


# ---------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class DatasetSpec:
    """What the columns of a dataset are, and how to simulate it.

    Attributes:
        name: dataset name (bundled name, or the CSV file's stem).
        parameters: the inputs, in column order, in the campaign's syntax.
        outputs: the measured columns.
        goal: default optimisation direction per objective output.
        enumerated: every point of the space is a row: simulate by exact lookup and restrict
            the planner to the rows.
        simplex: parameters that are relative amounts (a mixture): the emulator reads them
            as fractions of their sum, so any point of the box is a valid composition.
        citation: the publication(s) to cite.
        description: one paragraph on what was measured.
        units: output name -> unit, where known.
    """

    name: str
    parameters: tuple[ParamSpec, ...]
    outputs: tuple[str, ...]
    goal: Mapping[str, Goal]
    enumerated: bool = False
    simplex: tuple[str, ...] = ()
    citation: str = ""
    description: str = ""
    units: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``"lookup"`` for an enumerated dataset, else ``"emulator"``."""
        return "lookup" if self.enumerated else "emulator"

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def campaign_parameters(self) -> list[dict[str, Any]]:
        """The parameters in campaign-file form (what a campaign may omit)."""
        return [p.as_campaign_dict() for p in self.parameters]

    def space_summary(self) -> str:
        """e.g. ``"6 float"``, ``"4 choice (3x22x3x4 = 792)"``, ``"1 choice (8) + 3 float"``."""
        parts: list[str] = []
        sizes = [len(p.values or ()) for p in self.parameters if p.kind == "choice"]
        if sizes:
            text = "x".join(map(str, sizes))
            total = math.prod(sizes)
            parts.append(f"{len(sizes)} choice ({text}{f' = {total}' if len(sizes) > 1 else ''})")
        for kind in ("int", "float"):
            count = sum(p.kind == kind for p in self.parameters)
            if count:
                parts.append(f"{count} {kind}")
        return " + ".join(parts)


@dataclass(frozen=True)
class _Bundled:
    """What the Olympus ``config.json`` does not say about a bundled dataset."""

    citation: str
    description: str
    enumerated: bool = False
    ints: tuple[str, ...] = ()
    simplex: tuple[str, ...] = ()
    units: Mapping[str, str] = field(default_factory=dict)  # outputs
    # Parameters' units, as the publication (and the Olympus description) state them: shown
    # by `status` and the report, and a campaign's parameter in another unit is refused
    # (instruments._build._check_against_problem): the emulator reads these units.
    parameter_units: Mapping[str, str] = field(default_factory=dict)


OLYMPUS_CITATION = (
    "F. Häse, M. Aldeghi, R. J. Hickman, L. M. Roch, M. Christensen, E. Liles, J. E. Hein, "
    "A. Aspuru-Guzik. Olympus: a benchmarking framework for noisy optimization and experiment "
    "planning. Mach. Learn.: Sci. Technol. 2, 035021 (2021)"
)

_BUNDLED: dict[str, _Bundled] = {
    "hplc": _Bundled(
        "L. M. Roch, F. Häse, C. Kreisbeck, T. Tamayo-Mendoza, L. P. E. Yunker, J. E. Hein, "
        "A. Aspuru-Guzik. ChemOS: an orchestration software to democratize autonomous "
        "discovery. chemRxiv (2018), 10.26434/chemrxiv.5953606.v1; PLoS ONE 15, e0229862 (2020)",
        "Peak area of an automated HPLC for six sampling/injection settings (volumes in mL, "
        "sample flow mL/min, push speed Hz, wait time s).",
        parameter_units={
            "sample_loop": "mL",
            "additional_volume": "mL",
            "tubing_volume": "mL",
            "sample_flow": "mL/min",
            "push_speed": "Hz",
            "wait_time": "s",
        },
    ),
    "photo_pce10": _Bundled(
        "S. Langner, F. Häse, J. D. Perea, T. Stubhan, J. Hauch, L. M. Roch, T. Heumueller, "
        "A. Aspuru-Guzik, C. J. Brabec. Beyond ternary OPV: high-throughput experimentation "
        "and self-driving laboratories optimize multicomponent systems. Adv. Mater. 32, "
        "1907801 (2020)",
        "Photodegradation of a four-component organic solar-cell blend (PCE10, P3HT, PCBM, "
        "oIDTBR); the inputs are relative amounts (read as fractions of their sum).",
        simplex=("mat_1", "mat_2", "mat_3", "mat_4"),
    ),
    "crossed_barrel": _Bundled(
        "A. E. Gongora, B. Xu, W. Perry, C. Okoye, P. Riley, K. G. Reyes, E. F. Morgan, "
        "K. A. Brown. A Bayesian experimental autonomous researcher for mechanical design. "
        "Sci. Adv. 6, eaaz1708 (2020)",
        "Toughness (J) of 3D-printed crossed-barrel structures: number of struts n, twist "
        "angle theta (deg), radius r and thickness t (mm).",
        ints=("n",),
        units={"toughness": "J"},
        parameter_units={"theta": "deg", "r": "mm", "t": "mm"},
    ),
    "p3ht": _Bundled(
        "D. Bash, Y. Cai, V. Chellappan, et al. Multi-fidelity high-throughput optimization of "
        "electrical conductivity in P3HT-CNT composites. Adv. Funct. Mater. 31, 2102606 (2021)",
        "Electrical conductivity of drop-cast P3HT/carbon-nanotube composite films for the "
        "content of P3HT and four CNT types (percentages of the film: read as fractions of "
        "their sum, as every measured row sums to 100).",
        simplex=("p3ht_content", "d1_content", "d2_content", "d6_content", "d8_content"),
    ),
    "agnp": _Bundled(
        "F. Mekki-Berrada, Z. Ren, T. Huang, W. K. Wong, F. Zheng, J. Xie, I. P. S. Tian, "
        "S. Jayavelu, Z. Mahfoud, D. Bash, et al. Two-step machine learning enables optimized "
        "nanoparticle synthesis. npj Comput. Mater. 7, 55 (2021)",
        "Absorbance-spectrum score of silver nanoparticles made in flow, for five flow rates.",
    ),
    "alkox": _Bundled(
        "First reported in the Olympus paper (Häse et al. 2021, below), measured in the "
        "J. E. Hein laboratory",
        "Biocatalytic oxidation of benzyl alcohol by a copper radical oxidase (AlkOx): "
        "conversion for catalase, peroxidase and alcohol-oxidase loadings and pH.",
    ),
    "fullerenes": _Bundled(
        "B. E. Walker, J. H. Bannock, A. M. Nightingale, J. C. deMello. Tuning reaction "
        "products by constrained optimisation. React. Chem. Eng. 2, 785-798 (2017)",
        "Mole fraction of the desired o-xylenyl C60 adduct in flow for reaction time (min), "
        "sultine ratio and temperature (degC).",
        parameter_units={"reaction_time": "min", "temperature": "degC"},
    ),
    "snar": _Bundled(
        "A. M. Schweidtmann, A. D. Clayton, N. Holmes, E. Bradford, R. A. Bourne, "
        "A. A. Lapkin. Machine learning meets continuous flow chemistry: automated "
        "optimization towards the Pareto front of multiple objectives. Chem. Eng. J. 352, "
        "277-282 (2018)",
        "E-factor (the column is named impurity) of an SnAr reaction in flow for residence "
        "time (min), morpholine equivalents, concentration (M) and temperature (degC).",
        parameter_units={"residence_time": "min", "concentration": "M", "temperature": "degC"},
    ),
    "suzuki_i": _Bundled(
        "B. J. Reizman, Y.-M. Wang, S. L. Buchwald, K. F. Jensen. Suzuki-Miyaura "
        "cross-coupling optimization enabled by automated feedback. React. Chem. Eng. 1, "
        "658-666 (2016)",
        "Yield and turnover number of a Suzuki-Miyaura coupling for ligand (8 precatalysts), "
        "residence time (s), temperature (degC) and catalyst loading (mol%): two objectives.",
        parameter_units={"res_time": "s", "temperature": "degC", "catalyst_loading": "mol%"},
    ),
    "suzuki_edbo": _Bundled(
        "D. Perera, J. W. Tucker, S. Brahmbhatt, et al. A platform for automated "
        "nanomole-scale reaction screening and micromole-scale synthesis in flow. Science "
        "359, 429-434 (2018); as used by B. J. Shields et al., Nature 590, 89-96 (2021)",
        "Yield (%) of a Suzuki-Miyaura coupling over every combination of electrophile, "
        "nucleophile, base, ligand and solvent (3696 reactions).",
        enumerated=True,
    ),
    "buchwald_a": _Bundled(
        "D. T. Ahneman, J. G. Estrada, S. Lin, S. D. Dreher, A. G. Doyle. Predicting reaction "
        "performance in C-N cross-coupling using machine learning. Science 360, 186-190 (2018)",
        "Yield (%) of a Buchwald-Hartwig amination (aryl = 4-CF3-phenyl) over every "
        "combination of aryl halide, isoxazole additive, base and ligand (792 reactions).",
        enumerated=True,
    ),
    "dye_lasers": _Bundled(
        "Computed (not measured) photophysical properties of symmetric pentamers; from "
        "R. J. Hickman et al., Olympus, enhanced: benchmarking mixed-parameter and "
        "multi-objective optimization in chemistry and materials science (2023)",
        "Three fragments of a pentamer dye (14 x 13 x 19 = 3458 molecules): peak score "
        "(maximize), spectral overlap (minimize), fluorescence rate (maximize).",
        enumerated=True,
    ),
}


def bundled_dataset_names() -> tuple[str, ...]:
    """The bundled datasets, by name."""
    return tuple(sorted(_BUNDLED))


def _olympus_spec(name: str) -> DatasetSpec:
    folder = DATA_DIR / name
    config_path = folder / "config.json"
    meta = _BUNDLED[name]
    config = json.loads(config_path.read_text(encoding="utf-8"))
    params: list[ParamSpec] = []
    for p in config["parameters"]:
        unit = meta.parameter_units.get(p["name"])
        if p["type"] == "categorical":
            params.append(ParamSpec(p["name"], "choice", values=tuple(p["options"])))
        elif p["name"] in meta.ints:
            low, high = math.ceil(p["low"]), math.floor(p["high"])
            params.append(ParamSpec(p["name"], "int", bounds=(low, high), unit=unit))
        else:
            bounds = (float(p["low"]), float(p["high"]))
            params.append(ParamSpec(p["name"], "float", bounds=bounds, unit=unit))
    outputs = tuple(m["name"] for m in config["measurements"])
    goals = config["default_goal"]
    if isinstance(goals, str):
        goals = [goals] * len(outputs)
    return DatasetSpec(
        name=name,
        parameters=tuple(params),
        outputs=outputs,
        goal=dict(zip(outputs, goals, strict=True)),
        enumerated=meta.enumerated,
        simplex=meta.simplex,
        citation=meta.citation,
        description=meta.description,
        units=dict(meta.units),
    )


# ---------------------------------------------------------------------------- YAML with lines
class _Located:
    """A YAML document as plain data, with the line of every key path."""

    def __init__(self, text: str, path: Path) -> None:
        self.path = path
        self.lines: dict[tuple[Any, ...], int] = {}
        #: The source text of every plain scalar, so an error can quote what was written
        #: (``yes``) rather than what YAML made of it (``True``).
        self.texts: dict[tuple[Any, ...], str] = {}
        try:
            # Composed, not loaded: the nodes keep their lines. The limits are those of
            # campaign files, checked before ``_convert`` expands any alias (a 657-byte
            # spec of nested aliases spun for minutes, and a few thousand ``[`` ended in a
            # RecursionError; found in review).
            node = yaml.compose(text, Loader=_SpecLoader)
            if node is not None:
                check_yaml_expansion(node, _node_children, line=_node_line)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, text, path) from None
        except TextFileError as exc:
            raise DatasetError(exc.problem, path=path, line=exc.line, fix=exc.fix) from None
        self.data = self._convert(node, ()) if node is not None else None

    def _construct(self, node: yaml.Node) -> Any:
        """One scalar's value; a tag SafeLoader refuses (``!!python/...``) names its line."""
        try:
            return yaml.SafeLoader(io.StringIO("")).construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise DatasetError(
                f"not valid YAML: {problem}",
                path=self.path,
                line=node.start_mark.line + 1,
                fix="write plain text, numbers, lists and mappings (no YAML tags)",
            ) from None
        except ValueError as exc:  # an integer past Python's 4300 digits, a date like 2026-02-30
            raise DatasetError(
                f"has a value that cannot be read: {shown(node.value)} ({exc})",
                path=self.path,
                line=node.start_mark.line + 1,
                fix="write a number Python can read, or quote the value if it is text",
            ) from None

    def _convert(self, node: yaml.Node, at: tuple[Any, ...]) -> Any:
        self.lines[at] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    # `? [a, b]`: a list or mapping as a key is unhashable, and never meant.
                    raise DatasetError(
                        "a key must be a name, not a list or mapping",
                        path=self.path,
                        line=key_node.start_mark.line + 1,
                        fix="write `name: value`",
                    )
                key = self._construct(key_node)
                line = key_node.start_mark.line + 1
                if key in out:
                    twice = key_twice(key, line=line, first=first[key])
                    raise DatasetError(twice.problem, path=self.path, line=line, fix=twice.fix)
                first[key] = line
                out[key] = self._convert(value_node, (*at, key))
                self.lines[(*at, key)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(v, (*at, i)) for i, v in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.style is None:
            self.texts[at] = node.value
        return self._construct(node)

    def line(self, *at: Any) -> int | None:
        while at:
            if at in self.lines:
                return self.lines[at]
            at = at[:-1]
        return self.lines.get(())

    def error(self, message: str, *at: Any, fix: str | None = None) -> DatasetError:
        return DatasetError(message, path=self.path, line=self.line(*at), fix=fix)


def _yaml_error(exc: yaml.YAMLError, text: str, path: Path) -> DatasetError:
    """PyYAML's error as one line with its line and a fix, as a campaign file's is said
    (``instruments._yamlfile.read_yaml_mapping``): its own text spans several lines with
    ``in "<unicode string>"``, an excerpt and a caret, and gave no fix (found in review)."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = len(LINE_BREAK.findall(text, 0, exc.position)) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "?")
        return DatasetError(
            f"not valid YAML: has the control character U+{code:04X}, which YAML does not allow",
            path=path,
            line=line,
            fix="delete it: most editors do not show it, so retype the line if unsure where",
        )
    if not isinstance(exc, yaml.MarkedYAMLError):  # pragma: no cover - PyYAML's are marked
        return DatasetError(f"not valid YAML: {str(exc).splitlines()[0]}", path=path)
    mark = exc.problem_mark or exc.context_mark
    problem = " ".join(p for p in (exc.context, exc.problem) if p) or "cannot be read"
    if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
        problem += f" (the construct opened on line {exc.context_mark.line + 1})"
    reserved = re.search(r"found character '(.+?)' that cannot start any token", problem)
    if reserved is not None and reserved.group(1) == "\\t":
        fix = "indent with spaces, not tabs: YAML does not allow a tab there"
    elif reserved is not None and reserved.group(1) in ("%", "@", "`"):
        char = reserved.group(1)
        fix = f'quote a value that starts with {char}, e.g. "{char}...": YAML reserves it'
    else:
        fix = "check indentation, colons and quotes on that line"
    return DatasetError(
        f"not valid YAML: {problem}",
        path=path,
        line=mark.line + 1 if mark is not None else None,
        fix=fix,
    )


class _SpecLoader(DepthLimitedComposer, yaml.SafeLoader):
    """PyYAML's safe loader, composing at most ``MAX_YAML_DEPTH`` levels deep."""


def _node_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _node_line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


_SPEC_KEYS = ("parameters", "outputs", "goal", "enumerated", "simplex", "citation", "description")
_PARAM_KEYS = ("name", "type", "bounds", "values", "log", "unit")


def load_spec(path: str | Path, *, name: str | None = None) -> DatasetSpec:
    """Read a user's dataset spec (YAML, see the module docstring).

    Raises:
        DatasetError: naming the spec file, the line and the fix.
    """
    path = Path(path)
    try:
        text = read_text(
            path,
            kind="dataset spec",
            max_bytes=MAX_SPEC_BYTES,
            missing_fix="check the `spec:` path",
        )
    except TextFileError as exc:
        raise DatasetError(exc.problem, path=path, line=exc.line, fix=exc.fix) from None
    doc = _Located(text, path)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error(
            "a dataset spec is a mapping",
            fix="write `parameters: [...]`, `outputs: [...]`, `goal: maximize`",
        )
    for key in data:
        if key not in _SPEC_KEYS:
            near = difflib.get_close_matches(str(key), _SPEC_KEYS, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise doc.error(
                f"unknown key {key!r}", key, fix=f"{hint}allowed: {', '.join(_SPEC_KEYS)}"
            )
    for key in ("parameters", "outputs"):
        if key not in data:
            raise doc.error(f"missing `{key}:`", fix=f"add `{key}: [...]`")
    raw_params = data["parameters"]
    if not isinstance(raw_params, list) or not raw_params:
        raise doc.error(
            "`parameters` must be a non-empty list",
            "parameters",
            fix="e.g. parameters: [{name: x, type: float, bounds: [0, 1]}]",
        )
    params = tuple(_spec_param(doc, i, p) for i, p in enumerate(raw_params))
    names = [p.name for p in params]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise doc.error(f"parameter {n!r} is listed twice", "parameters", i, "name")
    outputs = data["outputs"]
    if isinstance(outputs, str):
        outputs = [outputs]
    if (
        not isinstance(outputs, list)
        or not outputs
        or not all(isinstance(o, str) and _is_name(o) for o in outputs)
    ):
        raise doc.error(
            "`outputs` must be a list of column names (letters, digits, _)",
            "outputs",
            fix="e.g. outputs: [yield]",
        )
    for i, o in enumerate(outputs):
        if o in names or o in outputs[:i]:
            raise doc.error(f"output {o!r} repeats a parameter or output name", "outputs", i)
    goal_raw = data.get("goal", "maximize")
    if isinstance(goal_raw, str):
        goal_map = dict.fromkeys(outputs[:1], goal_raw)
    elif isinstance(goal_raw, dict) and goal_raw:
        goal_map = dict(goal_raw)
    else:
        raise doc.error(
            "`goal` is maximize, minimize or {output: maximize|minimize}",
            "goal",
            fix="e.g. goal: maximize (the first output), or goal: {yield: maximize}",
        )
    for out, direction in goal_map.items():
        if out not in outputs:
            raise doc.error(f"goal names {out!r}, which is not an output", "goal", out)
        if direction not in ("maximize", "minimize"):
            raise doc.error(
                f"goal {direction!r} for {out!r}", "goal", fix="write maximize or minimize"
            )
    enumerated = data.get("enumerated", False)
    if not isinstance(enumerated, bool):
        raise doc.error("`enumerated` is true or false", "enumerated")
    simplex = data.get("simplex", [])
    if not isinstance(simplex, list):
        raise doc.error(
            "`simplex` lists parameter names (relative amounts)",
            "simplex",
            fix="e.g. simplex: [water, ethanol]",
        )
    by_name = {p.name: p for p in params}
    for j, entry in enumerate(simplex):
        # The emulator reads these as fractions of their sum: only amounts (numbers) qualify.
        param = by_name.get(entry) if isinstance(entry, str) else None
        if param is None:
            why = "is not a parameter"
        elif entry in simplex[:j]:
            why = "is listed twice"
        elif param.kind == "choice":
            why = "is a choice, not an amount"
        elif param.log:
            why = "is on a log scale, not a relative amount"
        else:
            continue
        amounts = [q.name for q in params if q.kind != "choice" and not q.log]
        raise doc.error(
            f"`simplex` entry {entry!r} {why}",
            "simplex",
            j,
            fix=f"list the numeric parameters that are relative amounts, once each: {amounts}",
        )
    return DatasetSpec(
        name=name or path.stem,
        parameters=params,
        outputs=tuple(outputs),
        goal=goal_map,  # type: ignore[arg-type]  # checked above
        enumerated=enumerated,
        simplex=tuple(simplex),
        citation=_text(doc, data, "citation"),
        description=_text(doc, data, "description"),
    )


def _text(doc: _Located, data: Mapping[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise doc.error(f"`{key}` is text", key, fix=f"quote it: {key}: '...'")
    return value


def _is_name(text: str) -> bool:
    return bool(text) and not text[0].isdigit() and set(text) <= _NAME_CHARS


def _spec_param(doc: _Located, i: int, p: Any) -> ParamSpec:
    at = ("parameters", i)
    if not isinstance(p, dict):
        raise doc.error(
            f"parameters[{i}] must be a mapping",
            *at,
            fix="e.g. {name: x, type: float, bounds: [0, 1]}",
        )
    for key in p:
        if key not in _PARAM_KEYS:
            raise doc.error(
                f"parameters[{i}]: unknown key {key!r}", *at, key, fix=f"allowed: {_PARAM_KEYS}"
            )
    name = p.get("name")
    if not isinstance(name, str) or not _is_name(name):
        raise doc.error(f"parameters[{i}].name must be a name (letters, digits, _)", *at, "name")
    kind = p.get("type", "choice" if "values" in p else "float")
    if kind not in ("float", "int", "choice"):
        raise doc.error(
            f"parameter {name!r}: type {kind!r}", *at, "type", fix="use float, int or choice"
        )
    unit = p.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise doc.error(
            f"parameter {name!r}: unit {shown(unit)} is not text",
            *at,
            "unit",
            fix="e.g. unit: degC",
        )
    log = p.get("log", False)
    if not isinstance(log, bool):  # bool("no") is True: a quoted 'no' would turn log on
        raise doc.error(
            f"parameter {name!r}: log is {log!r}", *at, "log", fix="write log: true or log: false"
        )
    try:
        if kind == "choice":
            values = p.get("values")
            if not isinstance(values, list):
                raise ValueError("a choice parameter needs `values: [a, b, ...]`")
            _check_choice_values(doc, name, values, (*at, "values"))
            return ParamSpec(name, "choice", values=tuple(values), unit=unit)
        bounds = p.get("bounds")
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
        ):
            raise ValueError("needs `bounds: [lower, upper]` (two numbers)")
        if kind == "int" and not all(float(b).is_integer() for b in bounds):
            raise ValueError(f"an int parameter's bounds are whole numbers, not {bounds}")
        return ParamSpec(name, kind, bounds=(bounds[0], bounds[1]), log=log, unit=unit)
    except ValueError as exc:
        if isinstance(exc, DatasetError):
            raise
        key = "values" if kind == "choice" else "bounds"
        message = str(exc)  # ParamSpec's own messages already name the parameter
        if repr(name) not in message:
            message = f"parameter {name!r}: {message}"
        raise doc.error(message, *at, key) from None


def _check_choice_values(doc: _Located, name: str, values: list[Any], at: tuple[Any, ...]) -> None:
    """A choice's values are text or numbers, each written differently in a CSV cell.

    A CSV cell is text, matched to a value by its text (or, for a number, its value); a list
    or mapping can never match one (and is unhashable), and YAML 1.1 reads an unquoted
    ``yes``/``no``/``on``/``off``/``true``/``false`` as a boolean, which would then be
    compared with the cell ``"True"``. Both are refused here with the value's own line.
    """
    seen: dict[float, Any] = {}
    for j, v in enumerate(values):
        written = doc.texts.get((*at, j), repr(v))
        if isinstance(v, bool):
            raise doc.error(
                f"parameter {name!r}: value {written} is read as the boolean {v} (YAML reads "
                "unquoted yes/no/on/off/true/false so)",
                *at,
                j,
                fix=f"quote it: '{written}'",
            )
        if not (isinstance(v, str) or (isinstance(v, int | float) and math.isfinite(v))):
            if isinstance(v, list | dict):
                what = "a list" if isinstance(v, list) else "a mapping"
            else:
                what = f"{type(v).__name__} {v!r}"
            raise doc.error(
                f"parameter {name!r}: value {j + 1} is {what}; a choice's values are text or "
                "finite numbers, as they appear in the CSV",
                *at,
                j,
                fix=f'quote it if it is one value, e.g. "{written}"'
                if len(written) <= SHOWN_CHARS
                else "quote it if it is one value",
            )
        number = _as_number(v)
        if number is not None:
            other = seen.get(number)
            if other is not None and isinstance(other, str) != isinstance(v, str):
                # the cell `1` would be both the text '1' and the number 1
                raise doc.error(
                    f"parameter {name!r}: values {other!r} and {v!r} are the same CSV cell",
                    *at,
                    j,
                    fix="keep one of them",
                )
            seen.setdefault(number, v)


def _as_number(value: Any) -> float | None:
    """A choice value or CSV cell as a finite number, if it is one."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class Dataset:
    """A spec and its rows.

    Attributes:
        spec: what the columns are.
        rows: the inputs of each experiment (name -> value), in file order.
        Y: measured outputs, ``n x m`` in the order of ``spec.outputs``.
        source: the CSV file.
        digest: SHA-256 of the spec and the data; keys the emulator cache.
    """

    spec: DatasetSpec
    rows: tuple[dict[str, Any], ...]
    Y: NDArray[np.float64]
    source: Path
    digest: str

    @property
    def name(self) -> str:
        return self.spec.name

    def __len__(self) -> int:
        return len(self.rows)


class _BadCell(ValueError):
    """A cell that is not a usable number; the row's error says how to fix it."""

    fix = "correct the value, or delete the row if it was not measured"


class _BadChoice(_BadCell):
    """A cell that is none of its choice parameter's values."""

    fix = (
        "correct the cell, or add the value to the parameter's `values:` in the spec (quote "
        "it there if YAML would read it as something else: 'yes', 'no', 'on', 'off')"
    )


def _parse_value(spec: ParamSpec, text: str) -> Any:
    if spec.kind == "choice":
        values = spec.values or ()
        for v in values:
            if str(v) == text:
                return v
        # A number by value: the spec's 1 is the cell 1.0 (a spreadsheet's export), and 0.5
        # is .5; never by text alone (str(1.0) is "1.0", not the cell "1").
        number = _as_number(text)
        if number is not None:
            for v in values:
                if not isinstance(v, str) and _as_number(v) == number:
                    return v
        raise _BadChoice(
            f"{spec.name} is {shown(text)}, which is not one of its values "
            f"{', '.join(map(str, values))}"
        )
    value = _parse_number(spec.name, text)
    lo, hi = spec.bounds or (0.0, 0.0)
    tol = 1e-9 * max(1.0, abs(hi - lo))
    if not (lo - tol <= value <= hi + tol):
        raise ValueError(f"{spec.name}={value:g} is outside its bounds [{lo}, {hi}]")
    value = min(max(value, lo), hi)
    if spec.kind == "int":
        if not float(value).is_integer():
            raise ValueError(f"{spec.name}={value:g} is not a whole number")
        return int(value)
    return value


def _parse_number(name: str, text: str) -> float:
    """A cell that must be a finite number (an input's value or a measured output).

    NaN or inf would pass ``float()`` but poison the emulator's fit (a raw error from the GP
    library) and the lookup's optimum (``nan``), so they are refused where the row is read.
    """
    try:
        value = float(text)
    except ValueError:
        raise _BadCell(f"{name} is {shown(text)}, not a number") from None
    if not math.isfinite(value):
        raise _BadCell(f"{name} is {shown(text)}, not a finite number")
    return value


def _read_table(
    spec: DatasetSpec, path: Path, *, header: bool
) -> tuple[tuple[dict[str, Any], ...], NDArray[np.float64]]:
    """The rows of a data CSV, every value checked; errors name the file's true line.

    A byte-order mark is dropped: spreadsheet programs write one, and it would otherwise
    become part of the first column's name. The header is the first non-blank record, so a
    leading blank line does not turn it into a data row.
    """
    try:
        text = read_text(
            path,
            kind="CSV file",
            max_bytes=MAX_DATA_BYTES,
            missing_fix="check the `dataset:` path",
            csv=True,
        )
    except TextFileError as exc:
        raise DatasetError(exc.problem, path=path, line=exc.line, fix=exc.fix) from None
    columns = [*spec.parameter_names, *spec.outputs]
    index = list(range(len(columns)))
    rows: list[dict[str, Any]] = []
    ys: list[list[float]] = []
    want_header = header
    try:
        for record in csv_records(text):
            if want_header:
                want_header = False
                index = _header_index(path, record, columns)
                continue
            point, y = _read_row(spec, path, record, index)
            rows.append(point)
            ys.append(y)
    except TextFileError as exc:
        raise DatasetError(exc.problem, path=path, line=exc.line, fix=exc.fix) from None
    if want_header:
        raise DatasetError(
            "the file is empty",
            path=path,
            fix=f"write a header row ({', '.join(columns)}), then one row per experiment",
        )
    if len(rows) < 2:
        raise DatasetError(
            "fewer than two data rows",
            path=path,
            fix="add the measured rows: a simulator is built from two or more",
        )
    Y = np.asarray(ys, dtype=np.float64)
    return tuple(rows), Y


def _header_index(path: Path, record: CsvRecord, columns: Sequence[str]) -> list[int]:
    """The position in the header ``record`` of each of the spec's ``columns``.

    Other columns (notes, a spreadsheet's unnamed trailing ones) are ignored; a column the
    spec names twice in the header is refused: reading the first of two ``yield`` columns
    without a word could simulate the wrong measurement (found in review).
    """
    wanted = set(columns)
    position: dict[str, int] = {}
    for i, cell in enumerate(record.cells):
        name = cell.strip()
        if name not in wanted:
            continue
        if name in position:
            raise DatasetError(
                f"column {shown(name)} appears twice in the header (columns {position[name] + 1} "
                f"and {i + 1})",
                path=path,
                line=record.line,
                fix="delete or rename one of them: each parameter and output of the spec is "
                "read from one column",
            )
        position[name] = i
    missing = [c for c in columns if c not in position]
    if missing:
        raise DatasetError(
            f"the header has no column(s) {missing}",
            path=path,
            line=record.line,
            fix="the header names the spec's parameters and outputs; it has "
            f"[{shown_names([c.strip() for c in record.cells])}]",
        )
    return [position[c] for c in columns]


def _read_row(
    spec: DatasetSpec, path: Path, record: CsvRecord, index: Sequence[int]
) -> tuple[dict[str, Any], list[float]]:
    """One data row's inputs and measured outputs, every value checked."""
    cells = record.cells
    needed = max(index) + 1
    if len(cells) < needed:
        raise DatasetError(
            f"{len(cells)} columns; expected at least {needed}{record.spans_note()}",
            path=path,
            line=record.line,
            fix=(
                f"close the quote on line {record.line} where its cell ends, or remove it"
                if record.last > record.line
                else "give the row a value in each column the spec names "
                f"({', '.join([*spec.parameter_names, *spec.outputs])})"
            ),
        )
    try:
        point = {
            p.name: _parse_value(p, cells[i].strip())
            for p, i in zip(spec.parameters, index, strict=False)
        }
        y = [
            _parse_number(out, cells[i].strip())
            for out, i in zip(spec.outputs, index[len(spec.parameters) :], strict=True)
        ]
    except ValueError as exc:
        fix = exc.fix if isinstance(exc, _BadCell) else None
        raise DatasetError(str(exc), path=path, line=record.line, fix=fix) from None
    return point, y


_cache_lock = threading.Lock()
_loaded: dict[tuple[str, str, int, int], Dataset] = {}


def load_dataset(
    name_or_path: str | Path,
    spec: str | Path | None = None,
    *,
    base_dir: str | Path | None = None,
) -> Dataset:
    """A bundled dataset by name, or a user's CSV with its spec (paths relative to ``base_dir``).

    Loaded once per process and file version.

    Raises:
        UnknownDatasetError: no bundled dataset of that name (and no spec given).
        DatasetError: a problem with either file, naming the file and line.
    """
    text = str(name_or_path)
    if spec is None:
        if text not in _BUNDLED:
            raise UnknownDatasetError(text, bundled_dataset_names())
        data_path = DATA_DIR / text / "data.csv"
        key = (text, "", data_path.stat().st_mtime_ns, 0)
        with _cache_lock:
            if key not in _loaded:
                ds_spec = _olympus_spec(text)
                rows, Y = _read_table(ds_spec, data_path, header=False)
                _loaded[key] = _make_dataset(ds_spec, rows, Y, data_path)
            return _loaded[key]
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    data_path = Path(name_or_path)
    spec_path = Path(spec)
    data_path = data_path if data_path.is_absolute() else base / data_path
    spec_path = spec_path if spec_path.is_absolute() else base / spec_path
    data_path, spec_path = data_path.resolve(), spec_path.resolve()
    relative_to = "the campaign file" if base_dir is not None else "the current directory"
    if not data_path.is_file():
        raise DatasetError(
            "data file not found",
            path=data_path,
            fix=f"`dataset:` is a bundled name ({', '.join(bundled_dataset_names())}) or a CSV "
            f"path relative to {relative_to}",
        )
    if not spec_path.is_file():
        raise DatasetError(
            "spec file not found", path=spec_path, fix=f"check the path (relative to {relative_to})"
        )
    key = (
        str(data_path),
        str(spec_path),
        data_path.stat().st_mtime_ns,
        spec_path.stat().st_mtime_ns,
    )
    with _cache_lock:
        if key not in _loaded:
            ds_spec = load_spec(spec_path, name=data_path.stem)
            rows, Y = _read_table(ds_spec, data_path, header=True)
            _loaded[key] = _make_dataset(ds_spec, rows, Y, data_path)
        return _loaded[key]


def _make_dataset(
    spec: DatasetSpec, rows: tuple[dict[str, Any], ...], Y: NDArray[np.float64], path: Path
) -> Dataset:
    digest = hashlib.sha256()
    # Units are labels, not data: the bundled datasets' units (added later) left their hash,
    # their stored fits and the campaigns that recorded it as they were.
    parameters = tuple(dataclasses.replace(p, unit=None) for p in spec.parameters)
    digest.update(repr((parameters, spec.outputs, spec.simplex)).encode())
    digest.update(np.ascontiguousarray(Y).tobytes())
    digest.update(repr([tuple(r.values()) for r in rows]).encode())
    return Dataset(spec, rows, Y, path, digest.hexdigest())


# ---------------------------------------------------------------------------- lookup
def row_key(spec: DatasetSpec, point: Mapping[str, Any]) -> tuple[Any, ...]:
    """A hashable key for a point: choices by value, numbers rounded to 9 significant digits."""
    key: list[Any] = []
    for p in spec.parameters:
        v = point[p.name]
        if p.kind == "choice":
            key.append(str(v))
        else:
            key.append(float(f"{float(v):.9g}"))
    return tuple(key)


@dataclass(frozen=True, eq=False)
class LookupTable:
    """Exact lookup: the measured outputs of a row (repeated rows averaged).

    Calling it with a point that is not a row raises :class:`PointNotInDataset`; a campaign
    on an enumerated dataset gives the planner the rows as its only candidates, so this is
    only ever raised for a point typed in by hand.
    """

    dataset: Dataset
    table: Mapping[tuple[Any, ...], tuple[float, ...]]
    candidates: tuple[dict[str, Any], ...]

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, float]:
        spec = self.dataset.spec
        missing = [n for n in spec.parameter_names if n not in inputs]
        if missing:
            raise PointNotInDataset(f"dataset {spec.name!r}: no value for {missing}")
        key = row_key(spec, inputs)
        try:
            values = self.table[key]
        except KeyError:
            shown = ", ".join(f"{n}={inputs[n]!r}" for n in spec.parameter_names)
            raise PointNotInDataset(
                f"dataset {spec.name!r} has no row ({shown}); an enumerated dataset only "
                f"answers for its {len(self.table)} measured combinations"
            ) from None
        return dict(zip(spec.outputs, values, strict=True))


def lookup_table(dataset: Dataset) -> LookupTable:
    """Build the exact lookup for ``dataset`` (repeated rows averaged)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    for i, row in enumerate(dataset.rows):
        key = row_key(dataset.spec, row)
        groups.setdefault(key, []).append(i)
        first.setdefault(key, dict(row))
    table = {k: tuple(float(v) for v in dataset.Y[idx].mean(axis=0)) for k, idx in groups.items()}
    return LookupTable(dataset, table, tuple(first.values()))


# ---------------------------------------------------------------------------- problem
@dataclass(frozen=True, eq=False)
class DatasetSimulator:
    """A dataset as a simulator: the pure function, its noise level and its candidates.

    Attributes:
        dataset: the data.
        problem: a :class:`TestProblem` whose ``evaluate`` is the lookup or the emulator's
            noiseless mean; wrap it with :func:`build_simulated_instrument`.
        noise: the dataset's noise sd per output (the GP's fitted noise; 0 for a lookup):
            the default ``noise`` of a dataset instrument.
        candidates: the allowed points of an enumerated dataset, else ``None``.
        r2: cross-validated R² per output of the emulator, when it was computed.
    """

    dataset: Dataset
    problem: TestProblem
    noise: Mapping[str, float]
    candidates: tuple[dict[str, Any], ...] | None
    r2: Mapping[str, float] | None = None

    @property
    def spec(self) -> DatasetSpec:
        return self.dataset.spec

    @property
    def floors(self) -> Mapping[str, float]:
        """0 for each output never measured below 0 (a yield, an area, a conductivity):
        noise added to a small value reads 0 there, not a negative value that could become
        a campaign's best (found in review). The problem's ``floors``."""
        return self.problem.floors

    def sample(self, inputs: Mapping[str, Any], rng: np.random.Generator) -> dict[str, float]:
        """One noisy measurement (the benchmark's harness; the devices add noise themselves)."""
        clean = self.problem.evaluate(inputs)
        noisy = {
            k: v + self.noise.get(k, 0.0) * float(rng.standard_normal()) for k, v in clean.items()
        }
        return {k: max(v, self.floors.get(k, -math.inf)) for k, v in noisy.items()}


_simulators: dict[tuple[str, ...], DatasetSimulator] = {}


def dataset_simulator(
    name_or_path: str | Path,
    spec: str | Path | None = None,
    *,
    base_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> DatasetSimulator:
    """The simulator of a dataset: exact lookup if enumerated, else the (cached) emulator.

    The emulator is fitted once per data version and kept on disk (see
    :func:`simulators._emulator.cached_emulator`), so later runs start in well under a second.
    """
    dataset = load_dataset(name_or_path, spec, base_dir=base_dir)
    # Not the digest alone: two copies of one table (another folder, name or goal) would
    # share the first one's simulator, its `dataset.source` and its goals.
    key = (
        str(dataset.source),
        dataset.digest,
        repr(sorted(dataset.spec.goal.items())),
        str(cache_dir),
    )
    with _cache_lock:
        if key in _simulators:
            return _simulators[key]
    ds = dataset.spec
    if ds.enumerated:
        table = lookup_table(dataset)
        evaluate: Callable[[Mapping[str, Any]], dict[str, float]] = table
        noise = dict.fromkeys(ds.outputs, 0.0)
        candidates: tuple[dict[str, Any], ...] | None = table.candidates
        r2 = None
    else:
        from simulators._emulator import cached_emulator

        emulator = cached_emulator(dataset, cache_dir=cache_dir)
        evaluate = emulator
        noise = dict(emulator.noise_sd)
        candidates = None
        r2 = emulator.cv_r2
    best: dict[str, float] = {}
    for j, out in enumerate(ds.outputs):
        if out in ds.goal:
            col = dataset.Y[:, j]
            best[out] = float(col.max() if ds.goal[out] == "maximize" else col.min())
    problem = TestProblem(
        name=ds.name,
        parameters=ds.parameters,
        outputs=ds.outputs,
        evaluate=evaluate,
        goal=dict(ds.goal),
        optimum=best if ds.enumerated else None,
        description=ds.description,
        metadata={"kind": ds.kind, "citation": ds.citation, "best_measured": best},
        floors={
            out: 0.0 for j, out in enumerate(ds.outputs) if float(np.nanmin(dataset.Y[:, j])) >= 0.0
        },
    )
    sim = DatasetSimulator(dataset, problem, noise, candidates, r2)
    with _cache_lock:
        _simulators[key] = sim
    return sim
