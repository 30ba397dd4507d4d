"""YAML files validated by pydantic, with every error naming the file, the line and a fix.

Campaign files (``loop.config``) and instrument files (``instruments._instrument_file``) are
read the same way, so this lives in the lower layer and both use it: ruamel.yaml's round-trip
loader (safe: it builds no Python objects from tags) keeps the line of every key, which turns
a pydantic error location into ``file.yaml:12``. Each caller passes its own error class, so a
campaign error stays a ``CampaignConfigError`` and an instrument-file error an
``InstrumentFileError``.
"""

from __future__ import annotations

import difflib
import re
import sys
import types
import typing
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError, YAMLWarning
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

# The limits and their checks are shared with a dataset's spec (read with PyYAML), so every
# YAML file a user writes is refused alike: see simulators._text.
from simulators._text import (
    LINE_BREAK,
    DepthLimitedComposer,
    TextFileError,
    check_yaml_expansion,
    key_twice,
    yaml_too_deep,
)

ErrorFactory = Callable[..., Exception]
"""``error(path, problem, *, line=None, fix="")`` -> the caller's error class."""


#: The command that writes the example campaigns into ./examples (``loop/cli_examples.py``).
EXAMPLES_COPY = "closedloop examples --copy examples"


def example_hint(example: str) -> str:
    """Where to find a good file like the one at fault: ``example`` is its path in the
    example campaigns (``campaigns/`` of the repository, shipped as ``loop.examples``).

    The command, not a path: an installed closedloop has no ``campaigns/`` folder beside the
    user's files (a pip user was sent to ``campaigns/branin.yaml``, a file they did not
    have; found in review), and the command writes the same files from a checkout too.
    """
    return (
        f"`{EXAMPLES_COPY}` writes examples/{example} (with every other example; "
        "`closedloop examples` lists them)"
    )


def read_yaml_mapping(text: str, path: Path, *, error: ErrorFactory, example: str) -> Any:
    """Parse ``text`` to a line-numbered mapping, or raise ``error`` saying what is wrong.

    Args:
        text: the file's text.
        path: the file, for messages.
        error: the caller's error class (see ``ErrorFactory``).
        example: a good file's path in the example campaigns (see ``example_hint``), for
            the fix of an empty or malformed one.
    """
    start_over = f"start from an example: {example_hint(example)}"
    if not text.strip():
        raise error(path, "is empty", fix=start_over)
    yaml = YAML(typ="rt")
    yaml.Composer = _DepthLimitedComposer
    yaml.Constructor = _Constructor
    try:
        with warnings.catch_warnings():
            # ruamel only warns of some mistakes (an anchor defined twice, `&a : &a`): one
            # clear error with its line instead of a Python warning and a guess at the value.
            warnings.simplefilter("error", YAMLWarning)
            data = yaml.load(text)
    except TextFileError as exc:  # nested too deep (``DepthLimitedComposer``)
        raise error(path, exc.problem, line=exc.line, fix=exc.fix) from None
    except RecursionError:  # a fallback: the composer's limit should be reached first
        deep = yaml_too_deep()
        raise error(path, deep.problem, fix=deep.fix) from None
    except ReusedAnchorWarning as exc:  # its marks are only in its text
        found = re.findall(r"line (\d+), column", str(exc))
        name = re.search(r"duplicate anchor '([^']*)'", str(exc))
        raise error(
            path,
            f"is not valid YAML: anchor '&{name.group(1) if name else '?'}' is defined twice"
            + (f" (first on line {found[0]})" if found else ""),
            line=int(found[-1]) if found else None,
            fix="give each anchor its own name",
        ) from None
    except (MarkedYAMLError, YAMLWarning) as exc:
        context_mark = getattr(exc, "context_mark", None)
        mark = getattr(exc, "problem_mark", None) or context_mark
        said = (getattr(exc, "context", None), getattr(exc, "problem", None))
        problem = " ".join(p for p in said if p) or str(exc).strip()
        if context_mark is not None and mark is not context_mark:
            problem += f" (the construct opened on line {context_mark.line + 1})"
        raise error(
            path,
            f"is not valid YAML: {problem}",
            line=mark.line + 1 if mark is not None else None,
            fix=_syntax_fix(problem),
        ) from None
    except ReaderError as exc:  # a character YAML forbids; it has a position, not a mark
        problem, line, fix = _forbidden_character(text, exc)
        raise error(path, problem, line=line, fix=fix) from None
    except YAMLError as exc:
        raise error(path, f"is not valid YAML: {exc}") from None
    except TypeError:  # ruamel cannot hash a list or mapping used as a key (`- {a: 1}:`)
        raise error(
            path,
            "is not valid here: a list or mapping is used as a key (a ':' after it)",
            line=_unhashable_key_line(text),
            fix="remove the ':' after the list or mapping, or quote the key",
        ) from None
    if data is None:
        raise error(path, "is empty (only comments)", fix=start_over)
    if not isinstance(data, Mapping):
        raise error(
            path,
            f"must be a mapping of keys (`name: ...` lines), not {_kind_of(data)}",
            line=1,
            fix=start_over,
        )
    try:
        # ruamel's loaded data shares an anchor's list/mapping among its aliases, so the
        # check is linear however far they would expand
        check_yaml_expansion(data, _children, line=_line)
    except TextFileError as exc:
        raise error(path, exc.problem, line=exc.line, fix=exc.fix) from None
    return data


class _DepthLimitedComposer(DepthLimitedComposer, Composer):
    """ruamel's composer with the nesting limit of every YAML file a user writes."""


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor, a value it cannot build said with its line.

    A scalar YAML reads as an integer or a date is built by Python, which refuses some:
    ``seed: 99...9`` of 5000 digits (Python converts at most 4300 decimal digits:
    ``sys.get_int_max_str_digits``), ``when: 2026-02-30``. Its ``ValueError`` came out of
    ruamel's ``load`` with no file or line and ended the command as a bug to report (found
    in review); here it is a :class:`TextFileError` with the value's line.
    """

    def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
        _refuse_tag(node)
        try:
            built = super().construct_non_recursive_object(node, tag)
        except TextFileError:  # a value inside this one, said already
            raise
        except ValueError as exc:
            raise _unbuildable(node, exc) from None
        # ``!!str 0123``: round-trip keeps the tag on a wrapper pydantic does not take as
        # text; the tag only said "text", which the value now is.
        return built.value if isinstance(built, TaggedScalar) else built

    def check_mapping_key(
        self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any
    ) -> bool:
        """A key given twice is refused with both its lines (:func:`key_twice`), where
        ruamel said both values' reprs and the fix was "check indentation, colons and
        quotes". The first key's line is known: ruamel records each key's line as it is
        added, before the next key is checked."""
        if key in mapping and not self.allow_duplicate_keys:
            first = mapping.lc.data.get(key) if isinstance(mapping, CommentedMap) else None
            raise key_twice(
                key, line=key_node.start_mark.line + 1, first=first[0] + 1 if first else None
            )
        return bool(super().check_mapping_key(node, key_node, mapping, key, value))

    def construct_mapping(  # type: ignore[override]  # ruamel's round-trip signature
        self, node: Any, maptyp: Any, deep: bool = False
    ) -> Any:
        """ruamel's mapping, a key refused that is no value at all (null, a list or a
        mapping), and each key merged in with ``<<:`` given a line.

        Such a key (``~``, ``[a]``, ``? seed: 4``) is no name of any schema, nor a key a
        plugin's ``args:`` could mean: pydantic said "Keys should be strings" at the
        parent's line with the parent's fix, or skipped it in silence (found in review). It
        is said at the key's own line, as written. A number, true/false or a date is a key
        the free-form ``args:`` of a plugin device or planner may hold (a channel map
        ``{1: temp, 2: pressure}``, accepted before and stored so), so those are left to
        the schema where it names its keys. Not an item with no value inside ``{...}``: in
        ``{bounds: -5, 10}`` the ``10`` is a list's item the commas cut off, which the
        schema's reader says as such (``loop.config``).

        Merge keys (``<<: *defaults``) are data, as anchors and aliases are: ruamel merges
        them, but a merged key had no line (a mapping holding only merged keys none at all,
        which ended ``line_of`` in a ``TypeError``; found in review). See
        :func:`_place_merged_keys`.
        """
        merge_at = None
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if not (node.flow_style and _is_empty(value_node)):
                    _refuse_key(key_node)
                if key_node.tag == _MERGE_TAG:
                    merge_at = key_node.start_mark
        built = super().construct_mapping(node, maptyp, deep=deep)
        if merge_at is not None and isinstance(maptyp, CommentedMap):
            _place_merged_keys(maptyp, merge_at.line, merge_at.column)
        return built


_MERGE_TAG = "tag:yaml.org,2002:merge"

_NULL_TAG = "tag:yaml.org,2002:null"


def _is_empty(node: Any) -> bool:
    """Whether ``node`` is a value left out (``{a: 1, b}``: ``b`` has none)."""
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG and not node.value


def _refuse_key(key_node: Any) -> None:
    """Refuse a mapping key that is not text, at its own line (see
    ``_Constructor.construct_mapping``)."""
    _refuse_tag(key_node)  # a tagged key is said as the tag it has
    line = key_node.start_mark.line + 1
    if isinstance(key_node, MappingNode | SequenceNode):
        what = "mapping" if isinstance(key_node, MappingNode) else "list"
        raise TextFileError(
            f"is not valid here: a list or mapping is used as a key (this {what} has a ':' "
            "after it, or a '?' before it)",
            line=line,
            fix="remove the ':' after the list or mapping (or the '?' before it), or quote the key",
        )
    if not isinstance(key_node, ScalarNode) or str(key_node.tag) != _NULL_TAG:
        return
    written = str(key_node.value)
    shown = written if len(written) <= 40 else written[:39] + "…"
    raise TextFileError(
        f"key {shown} (null) is not a name" if written else "a key is empty (null)",
        line=line,
        fix=f"quote it ('{shown}') or remove it"
        if written
        else "write the key's name before the ':', or remove the line",
    )


def _place_merged_keys(mapping: CommentedMap, line: int, column: int) -> None:
    """Give each key ``mapping`` took from a ``<<:`` merge (0-based ``line``, ``column`` of the
    ``<<``) a line of its own in ruamel's line data, so ``line_of`` finds it like any key.

    A key written inside the ``<<:`` value (``<<: {max_trials: 5}``, or a block under it)
    has the line it is written on. A key taken through an alias (``<<: *defaults``) has the
    ``<<:`` line: that is where this mapping took it, and the anchor's own line would name
    the mapping it was defined in, which may be right where this one is wrong.
    """
    own = mapping.lc.data or {}
    sources = [s[1] if isinstance(s, tuple) else s for s in getattr(mapping, "merge", None) or ()]
    for key in mapping:
        if key in own:
            continue
        at = [line, column, line, column]
        for source in sources:  # the first mapping holding the key gave it (YAML's rule)
            if isinstance(source, CommentedMap) and key in source:
                written = (source.lc.data or {}).get(key)
                inline = isinstance(source.lc.line, int) and source.lc.line >= line
                if written is not None and inline:
                    at = list(written)
                break
        mapping.lc.add_kv_line_col(key, at)


#: The tags plain YAML data resolves to (``!!int 5`` says what ``5`` says already); any other
#: tag asks for something closedloop does not build from a text file.
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp", "merge")
)


def _refuse_tag(node: Any) -> None:
    """Refuse a tag other than plain data's, with its line.

    ruamel's round-trip reader builds no Python object from a tag, but it kept the tagged
    value as plain data and dropped the tag without a word: ``bounds: !!python/object/apply:
    os.system [-5, 10]`` read as ``[-5, 10]`` and validated, while the README promises such
    tags are refused (found in review). A tag is either a mistake or an expectation closedloop
    will not meet, so it is said, never guessed at.
    """
    tag = str(node.tag) if node.tag is not None else ""
    if tag and tag not in _PLAIN_TAGS:
        shown = tag.replace("tag:yaml.org,2002:", "!!")
        raise TextFileError(
            f"has the YAML tag {shown}: closedloop reads plain data (numbers, text, lists, "
            "mappings) and builds nothing from tags",
            line=node.start_mark.line + 1,
            fix=f"remove {shown} and write the value itself",
        )


def _unbuildable(node: Any, exc: ValueError) -> TextFileError:
    """What is wrong with the scalar ``node`` that Python refused to build (``exc``)."""
    line = node.start_mark.line + 1
    text = node.value if isinstance(node.value, str) else ""
    kind = str(node.tag).rsplit(":", 1)[-1]  # int, float, timestamp ...
    digits = sum(ch.isdigit() for ch in text)
    limit = sys.get_int_max_str_digits()
    if kind == "int" and limit and digits > limit:
        return TextFileError(
            f"has an integer of {digits} digits ({text[:12]}...); closedloop reads at most "
            f"{limit} digits",
            line=line,
            fix="no setting takes a number that long: write the value meant (a seed is 0 to "
            "4294967295), or quote it if it is text",
        )
    shown = text if len(text) <= 40 else text[:39] + "…"
    what = {"timestamp": "date", "int": "integer", "float": "number"}.get(kind, "value")
    return TextFileError(
        f"has a {what} that cannot be read: {shown} ({exc})",
        line=line,
        fix=f"write a valid {what}, or quote it ('{shown}') if it is text",
    )


#: Names of the control characters a file most often holds by mistake (``unicodedata``
#: names none of them).
_CONTROL_NAMES = {
    0x00: "NUL",
    0x07: "bell",
    0x08: "backspace",
    0x0B: "vertical tab",
    0x0C: "form feed",
    0x1A: "end of file, Ctrl-Z",
    0x1B: "escape",
    0x7F: "delete",
}


def _forbidden_character(text: str, exc: ReaderError) -> tuple[str, int | None, str]:
    """``(problem, line, fix)`` for a character YAML does not allow in a file (a control
    character, NUL).

    ruamel's reader says it with a position in the text and its own wording ("special
    characters are not allowed in "<unicode string>", position 134"), with no line and no
    fix; the character is invisible in most editors, so the message names it, its line and
    its column. A file with NULs between its letters was saved as UTF-16 without a
    byte-order mark (with one, ``decode_text`` refuses its first byte already).
    """
    code = exc.character if isinstance(exc.character, int) else None
    at = exc.position if isinstance(exc.position, int) else -1
    if code is not None and not (0 <= at < len(text) and ord(text[at]) == code):
        at = text.find(chr(code))  # the position counts in other units: find the character
    if code is None or at < 0:
        return f"is not valid YAML: {exc}", None, "delete the character (or retype the line)"
    nuls = text.count("\0")
    if nuls > 1 and nuls * 4 >= len(text):
        return (
            "is not UTF-8 text: it has NUL characters between its letters (saved as UTF-16?)",
            1,
            "save the file as UTF-8",
        )
    breaks = list(LINE_BREAK.finditer(text, 0, at))  # old-Mac CR-only endings too
    line = len(breaks) + 1
    start = breaks[-1].end() if breaks else 0
    column = at - start + 1 - (line == 1 and text.startswith("\ufeff"))
    kind = "a control character" if unicodedata.category(chr(code)) == "Cc" else "a character"
    name = _CONTROL_NAMES.get(code) or unicodedata.name(chr(code), "")
    return (
        f"is not valid YAML: {kind} U+{code:04X}{f' ({name})' if name else ''} at column "
        f"{column}, which YAML does not allow in a file",
        line,
        "delete it (or retype the line): most editors do not show it",
    )


def _children(node: Any) -> Any:
    if isinstance(node, Mapping):
        return node.values()
    if isinstance(node, list | tuple):
        return node
    return ()


def _line(node: Any) -> int | None:
    line = getattr(getattr(node, "lc", None), "line", None)
    return line + 1 if isinstance(line, int) else None


class BooleansAllowed:
    """``Annotated`` marker: a number field where YAML's true/false is a fair value (1/0).

    ``refuse_booleans`` skips a field marked ``Annotated[float, BOOLEANS_ALLOWED]``, e.g. a
    safe-state value written to a binary PV.
    """


BOOLEANS_ALLOWED = BooleansAllowed()


def refuse_booleans(
    data: Any,
    path: Path,
    *,
    model: type[BaseModel],
    error: ErrorFactory,
    hints: Mapping[str, str] | None = None,
) -> None:
    """Raise ``error`` at the first YAML true/false where the schema takes only a number.

    Pydantic's lax mode reads ``true`` as 1, so ``failure_rate: true`` would fail every run
    and ``max_trials: true`` would mean one trial, silently. The schema itself says which
    fields are numbers (``int``/``float`` and no other scalar), so one walk over the data
    covers every model (campaign, planner, instrument, instrument file) and every number
    field added later, without a check per field. Run it before validating, so the message
    is this one rather than a rule the coerced 1 or 0 happens to break.
    """
    loc = _boolean_number(model, data, ())
    if loc is None:
        return
    value = _node_at(data, loc)
    key = next((part for part in reversed(loc) if isinstance(part, str)), "")
    hint = (hints or {}).get(key)  # the field's own hint only: a section's says other things
    raise error(
        path,
        f"{_dotted(loc)}: true/false is not a number (got {str(value).lower()})",
        line=line_of(data, loc),
        fix="write a number, not true/false" + (f"; {hint}" if hint else ""),
    )


def _boolean_number(annotation: Any, node: Any, loc: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The ``loc`` of the first boolean in ``node`` where ``annotation`` takes only numbers."""
    options = _options(annotation)
    if isinstance(node, bool):
        scalars = [a for a in options if not _is_container(a)]
        return loc if scalars and all(a in (int, float) for a in scalars) else None
    children: list[tuple[Any, list[Any]]] = []  # (key or index, the annotations it may have)
    if isinstance(node, Mapping):
        models = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
        models = [m for m in models if _tags_match(m, node)]
        values = [typing.get_args(a)[1] for a in options if typing.get_origin(a) is dict]
        for key in node:
            if not isinstance(key, str):
                continue
            fields = [m.model_fields[key].annotation for m in models if key in m.model_fields]
            children.append((key, fields + values))
    elif isinstance(node, list):
        for i in range(len(node)):
            children.append((i, [t for a in options for t in _item_types(a, i)]))
    for key, kinds in children:
        # Refused only where every schema option for this value refuses it.
        found = [_boolean_number(a, node[key], (*loc, key)) for a in kinds]
        if found and all(f is not None for f in found):
            return found[0]
    return None


def _options(annotation: Any) -> list[Any]:
    """The members of a (possibly ``Annotated``, optional) union; ``[Any]`` when marked
    ``BOOLEANS_ALLOWED``."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        if any(isinstance(m, BooleansAllowed) for m in annotation.__metadata__):
            return [Any]
        return _options(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _options(arg)]
    return [] if annotation is type(None) else [annotation]


def _is_container(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, BaseModel | dict | list | tuple | set)


def _tags_match(model: type[BaseModel], node: Mapping[Any, Any]) -> bool:
    """Whether ``node`` may be this member of a tagged union (its ``Literal`` keys agree)."""
    for name, info in model.model_fields.items():
        if typing.get_origin(info.annotation) is Literal and name in node:
            try:
                if node[name] not in typing.get_args(info.annotation):
                    return False
            except TypeError:  # an unhashable value: not this member
                return False
    return True


def _item_types(annotation: Any, index: int) -> list[Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, set) and args:
        return [args[0]]
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return [args[0]]
        return [args[index]] if index < len(args) else []
    return []


def _node_at(data: Any, loc: Sequence[Any]) -> Any:
    node = data
    for part in loc:
        node = node[part]
    return node


def _at(node: CommentedMap | CommentedSeq, part: Any, where: Callable[[Any], Any]) -> int | None:
    """1-based line of ``node``'s key or item ``part`` (``where`` is ``node.lc.key`` or
    ``.item``), or ``None`` when it has none (the caller keeps the line it has: the
    parent key's).

    Every key the reader built has a line (a merged one too: ``_place_merged_keys``), but a
    key added since has none (a dataset's ``parameters:`` filled in from its spec; the
    mapping's own first line would point at the wrong key): ruamel then raises
    ``KeyError``, or returns ``None`` where the mapping has no line data at all (a
    ``TypeError`` that ended a command as a bug to report; found in review).
    """
    try:
        found = where(part)
    except (KeyError, IndexError):
        return None
    return int(found[0]) + 1 if found is not None and isinstance(found[0], int) else None


def line_of(data: Any, loc: Sequence[Any]) -> int | None:
    """1-based line of the deepest key of ``loc`` present in the YAML."""
    node = data
    line: int | None = None
    for part in loc:
        if isinstance(node, CommentedMap) and part not in node and isinstance(part, str):
            # pydantic names a key that is not text by its repr (a date: 'datetime.date(...)')
            part = next((k for k in node if not isinstance(k, str) and repr(k) == part), part)
        if isinstance(node, CommentedMap) and part in node:
            line = _at(node, part, node.lc.key) or line
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = _at(node, part, node.lc.item) or line
            node = node[part]
        elif isinstance(node, CommentedMap | CommentedSeq):
            if line is None and node.lc.line is not None:
                line = node.lc.line + 1
            continue  # a union tag or a key that is missing: stay on the parent
        elif isinstance(node, Mapping) and part in node:  # a plain dict (inline, copied)
            node = node[part]
        else:
            break
    return line


def explain(
    exc: ValidationError,
    data: Any,
    path: Path,
    *,
    model: type[BaseModel],
    error: ErrorFactory,
    hints: Mapping[str, str] | None = None,
) -> Exception:
    """The first pydantic error as one message with its line and a fix.

    A misspelt key shows up as "unknown key" plus "missing key": the unknown one is the
    cause, so it is reported first; otherwise the top-most error. ``hints`` maps a key name to
    a fix shown for errors at or below that key.
    """
    errors = exc.errors(include_url=False)
    located = [(line_of(data, e["loc"]), i, e) for i, e in enumerate(errors)]
    located.sort(
        key=lambda t: (t[2]["type"] != "extra_forbidden", t[0] if t[0] is not None else 10**9, t[1])
    )
    line, _, err = located[0]
    problem, fix = _describe(err, data, model, hints or {})
    more = len(errors) - 1
    if more:
        fix = (fix + "; " if fix else "") + f"{more} more problem(s) reported after this is fixed"
    return error(path, problem, line=line, fix=fix)


#: The note :func:`explain` adds to a fix when the file has more problems: a caller that
#: finds the reported error's own fix puts it before the note.
MORE_PROBLEMS = re.compile(r"(?:^|; )(\d+ more problem\(s\) reported after this is fixed)$")


def _syntax_fix(problem: str) -> str:
    """The fix for a YAML syntax error: its cause where the parser's words name one (a tab,
    a second document), else where to look (found in review: every one was told "check
    indentation, colons and quotes")."""
    if "'\\t'" in problem:
        return "replace the tab with spaces (YAML indents with spaces only)"
    if "single document" in problem:
        return "remove the '---' line and what follows it, or merge it into the first part"
    return "check indentation, colons and quotes on that line"


def _kind_of(data: Any) -> str:
    """What a YAML value is, in a file author's words (not ``CommentedSeq``)."""
    if isinstance(data, list | tuple):
        return "a list"
    if isinstance(data, str):
        return "plain text"
    if isinstance(data, bool):
        return "true/false"
    if isinstance(data, int | float):
        return "a number"
    return f"a {type(data).__name__}"


def plain_message(err: Mapping[str, Any]) -> str:
    """A pydantic error's message as a file's author reads it: without pydantic's "Value
    error, " prefix, and with its item counts in words ("Tuple should have at most 2 items
    after validation, not 3" is "has 3 items; it takes at most 2 items")."""
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "int_from_float":
        return "is not a whole number"
    ctx = err.get("ctx") or {}
    actual = ctx.get("actual_length")
    if err["type"] == "too_long" and ctx.get("max_length") is not None:
        return f"has {actual} items; it takes at most {ctx['max_length']} items"
    if err["type"] == "too_short" and ctx.get("min_length") is not None:
        needs = ctx["min_length"]
        if not actual:
            return f"is empty; it takes at least {needs} item(s)"
        return f"has {actual} item(s); it takes at least {needs}"
    return message


def _describe(
    err: Mapping[str, Any], data: Any, model: type[BaseModel], hints: Mapping[str, str]
) -> tuple[str, str]:
    loc = tuple(err["loc"])
    data_loc = _data_path(data, loc)
    where = _dotted(data_loc)
    kind = err["type"]
    message = plain_message(err)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(model, loc[:-1], data)
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        parent = _dotted(data_loc[:-1]) or "the top level"
        problem = f"unknown key '{key}' in {parent}"
        if loc[:-1] and key in model.model_fields:  # a top-level key indented under another
            return problem, (
                f"`{key}` is a top-level key: move it left to the start of its line, out "
                f"of {parent}"
            )
        if near:
            return problem, f"did you mean '{near[0]}'? allowed keys: {', '.join(allowed)}"
        return problem, f"allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        parent = _dotted(data_loc[:-1]) or "the top level"
        fix = _hint_for(loc, hints) or (
            f"add `{loc[-1]}:` "
            + (f"under {_dotted(data_loc[:-1])}" if data_loc[:-1] else "at the top level")
        )
        return f"missing required key '{loc[-1]}' in {parent}", fix
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        field = str(ctx.get("discriminator", "type")).strip("'")
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        got = ctx.get("tag")
        if got is not None:
            near = difflib.get_close_matches(str(got), tags, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            return f"{where}: unknown {field} '{got}'", f"{hint}{field} is one of {', '.join(tags)}"
        # A missing tag comes without the expected ones: read them from the schema.
        tags = tags or _tags_at(model, loc, data, field)
        return f"{where}: needs a '{field}'", f"add `{field}:` (one of {', '.join(tags)})"
    shown = _show(err.get("input"))
    if kind == "model_type":  # "or instance of InitialDesign": a class the user never wrote
        message = re.sub(r" or instance of \w+$", "", message)
    # A rule over a whole section (a model validator) says its own fix. Otherwise the key's
    # own hint, or its section's where that shows the key (``executor: {kind: local,
    # workers: 4}`` for ``workers``); else what its type asks for, else the section's hint,
    # which says how to write the section, not this key (``instrument.noise: 'x'`` was
    # sent to write ``instrument: {simulator: branin}``).
    if kind == "value_error" and len(data_loc) <= 1:
        hint = ""
    elif kind == "int_from_float":  # the number's fix, not the section's general one
        hint = _type_fix(err, data_loc, model, loc, data)
        if "bounds" in data_loc:
            hint += " (an int parameter's bounds are whole numbers; for fractions: type: float)"
    else:
        # the key at fault: a key that is not text is no section's (`instrument: {1: 0}`)
        key = (
            ""
            if kind == "invalid_key"
            else next((p for p in reversed(data_loc) if isinstance(p, str)), "")
        )
        section = _hint_for(loc, hints)
        if key and (key in hints or re.search(rf"\b{re.escape(key)}\b", section)):
            hint = section  # the key's own hint, or its section's that shows it
        else:
            hint = _type_fix(err, data_loc, model, loc, data) or section
    prefix = f"{where}: " if where else ""
    return f"{prefix}{message}" + (f" (got {shown})" if shown else ""), hint


# Words a `seed:` is given for "no fixed seed" (YAML reads them as text, not null).
_NO_SEED = frozenset({"none", "random", "auto", "nil", "no", "off", "any", "-", "n/a", "na"})


def _type_fix(
    err: Mapping[str, Any], data_loc: Sequence[Any], model: type[BaseModel], loc: Any, data: Any
) -> str:
    """The fix a pydantic error's type implies, worded for a YAML file's author
    (``seed: '7a'``: "write a whole number, e.g. seed: 7"); ``""`` for a type with nothing
    general to say (a validator's own rule says its fix).

    The fallback where no key has a hint: about one clean error in nine had no fix at all
    (found in a fuzz review), mostly these generic types.
    """
    kind = str(err["type"])
    ctx = err.get("ctx") or {}
    value = err.get("input")
    last = data_loc[-1] if data_loc else None

    def e_g(example: str) -> str:
        return f"e.g. {last}: {example}" if isinstance(last, str) else f"e.g. {example}"

    if kind == "int_parsing" and last == "seed" and str(value).strip().lower() in _NO_SEED:
        # `seed: none` means "no fixed seed", which is YAML's null or no key at all
        return (
            "leave seed out (or write seed: null) for a new seed each run; the seed drawn is stored"
        )
    if kind in ("int_parsing", "int_type", "int_from_float", "int_parsing_size"):
        example = _number_in(value, whole=True) or "10"
        if kind == "int_from_float":
            return f"write a whole number, without a fraction, {e_g(example)}"
        if kind == "int_parsing_size":
            return f"write a whole number in digits, of ordinary size, {e_g(example)}"
        return f"write a whole number, {e_g(example)}"
    if kind in ("float_parsing", "float_type"):
        return f"write a number, {e_g(_number_in(value, whole=False) or '0.5')}"
    if kind == "finite_number":
        return "write a finite number (not .inf or .nan)"
    if kind in ("bool_parsing", "bool_type"):
        return f"write true or false, {e_g('true')}"
    if kind == "string_type":
        if isinstance(value, Mapping | list | tuple | set):
            kind_of = "a mapping" if isinstance(value, Mapping) else "a list"
            return f"write one text value, not {kind_of}, {e_g('my text')}"
        return f"quote it, so YAML reads it as text: {e_g(repr(str(value)))}"
    if kind == "string_too_short":
        return f"write at least {ctx.get('min_length', 1)} character(s)"
    if kind == "string_too_long":
        return f"shorten it to at most {ctx.get('max_length')} characters"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        keys = _allowed_keys(model, loc, data) if kind != "dict_type" else []
        under = f", under {last}:," if isinstance(last, str) else ""
        if keys:
            return f"write a mapping{under} of its keys: {', '.join(keys)}"
        return f"write a mapping of names to values, {e_g('{name: value}')}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"write a list, {e_g('[a, b]')} (or one '- ' item per line under it)"
    if kind == "too_short":
        return f"give at least {ctx.get('min_length', 1)} item(s)"
    if kind == "too_long":
        return f"give at most {ctx.get('max_length')} item(s)"
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in bounds:
        limit = next((v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")), None)
        return f"write a number {bounds[kind]} {limit}" if limit is not None else ""
    if kind in ("literal_error", "enum"):
        return f"write one of {ctx.get('expected')}" if ctx.get("expected") else ""
    if kind == "invalid_key":  # a key that is not text, which the reader let through
        return "a key is a name: quote it or remove it (a list inside {...} needs [brackets])"
    if kind == "none_required":
        return "leave the value empty, or remove the key"
    return ""


def _number_in(value: Any, *, whole: bool) -> str | None:
    """The number a mistyped value seems to hold (``'7a'`` -> ``7``, ``'0,5'`` -> ``0.5``),
    for a fix's example; ``None`` if it holds none (or none of a sensible size)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if isinstance(value, float):
        return str(int(value)) if whole and abs(value) < 1e15 else None
    found = re.search(r"[-+]?\d+(?:[.,]\d+)?", str(value))
    if found is None or len(found.group()) > 15:
        return None
    number = found.group().replace(",", ".")
    return number.split(".")[0] if whole else number


def _hint_for(loc: tuple[Any, ...], hints: Mapping[str, str]) -> str:
    for part in reversed(loc):
        if isinstance(part, str) and part in hints:
            return hints[part]
    return ""


def _show(value: Any) -> str:
    if value is None or isinstance(value, Mapping):
        return ""
    text = repr(_plain(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(value: Any) -> Any:
    if isinstance(value, CommentedSeq):
        return [_plain(v) for v in value]
    return value


def _is_tag(part: Any, node: Any) -> bool:
    """A ``loc`` element that is not a key of the data: a union tag or a validator's name."""
    return (
        isinstance(part, str)
        and isinstance(node, Mapping)
        and part not in node
        and ("[" in part or node.get("type") == part)
    )


def _data_path(data: Any, loc: Sequence[Any]) -> list[Any]:
    """The part of a pydantic ``loc`` that exists in the YAML (drops union tags etc.)."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif _is_tag(part, node):
            continue
        elif isinstance(node, Mapping | list):
            out.append(part)
            node = None
        else:
            break
    return out


def _dotted(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _annotation_at(model: type[BaseModel], loc: Sequence[Any], data: Any) -> tuple[Any, Any]:
    """The schema's annotation at ``loc`` and the data there (``None`` for either if absent)."""
    annotation: Any = model
    node = data
    for part in loc:
        if _is_tag(part, node):
            continue
        annotation = _step(annotation, part)
        if annotation is None:
            return None, None
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return annotation, node


def _tags_at(model: type[BaseModel], loc: Sequence[Any], data: Any, field: str) -> list[str]:
    """The values ``field`` may take to pick a member of the tagged union at ``loc``.

    Pydantic lists them when a tag is wrong but not when it is missing, and the fix must
    still say what to write (``type: float``, ...).
    """
    annotation, _ = _annotation_at(model, loc, data)
    tags: list[str] = []
    for m in _models_in(annotation):
        info = m.model_fields.get(field)
        if info is not None and typing.get_origin(info.annotation) is Literal:
            tags += [str(t) for t in typing.get_args(info.annotation) if str(t) not in tags]
    return tags


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any], data: Any) -> list[str]:
    """Field names of the model at ``loc`` (the mapping holding an unknown key)."""
    annotation, node = _annotation_at(model, loc, data)
    if annotation is None:
        return []
    models = _models_in(annotation)
    if len(models) > 1:  # a discriminated union: pick by the tag in the data
        tag = node.get("type") if isinstance(node, Mapping) else None
        models = [
            m
            for m in models
            if m.model_fields.get("type") is not None
            and typing.get_args(m.model_fields["type"].annotation) == (tag,)
        ] or models
    return sorted({name for m in models for name in m.model_fields})


def _step(annotation: Any, part: Any) -> Any:
    for arg in _flatten(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            if isinstance(part, str) and part in arg.model_fields:
                return arg.model_fields[part].annotation
        origin = typing.get_origin(arg)
        if origin is dict:
            return typing.get_args(arg)[1]
        if origin in (list, tuple) and isinstance(part, int):
            return typing.get_args(arg)[0]
    return None


def _flatten(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    return [annotation]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [a for a in _flatten(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def _unhashable_key_line(text: str) -> int | None:
    """The line of the first list or mapping used as a mapping key, found in the composed
    node tree (construction, which fails on it, keeps no marks)."""
    from ruamel.yaml.nodes import Node

    try:
        stack: list[Node] = [YAML(typ="rt").compose(text)]
    except Exception:
        return None
    while stack:
        node = stack.pop()
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, (MappingNode, SequenceNode)):
                    return int(key.start_mark.line) + 1
                stack += [key, value]
        elif isinstance(node, SequenceNode):
            stack += list(node.value)
    return None
