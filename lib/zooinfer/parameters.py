"""Plain parsers for parameter values: below :mod:`zooinfer.config`, importing nothing of zooinfer but its errors.

Every value a run is given -- a parameters file, a ``-p name value``, the stored parameters a resume takes over, a
``ZOOINFER_*`` environment variable -- is checked here before anything slow runs, and each feature (config, the
LoadGen scenarios, the variants, the store, the report) parses its own values with these functions:

- :func:`plain_value`: only plain data (text, numbers, true/false, null, lists and text-keyed mappings of them) may
  reach a notebook. papermill writes any other value into the notebook's code as ``"`` + ``str(value)`` + ``"``
  unescaped, so a YAML ``!!binary`` value (bytes), a set or a date would be *code* there;
- numbers, counts, flags, lists of names: :func:`integer`, :func:`number_value` (with a :class:`NumberRange`),
  :func:`flag`, :func:`batch_sizes_value`, :func:`names_value`;
- names: :func:`scenario_name` (LoadGen), :func:`parse_variant` (variants), :func:`close_matches`;
- paths: :func:`check_output_folder`, :func:`check_result_folder`, :func:`default_output_root`, the store's file
  names (:data:`STORE_FOLDER`, :data:`STORE_FINGERPRINT`), :func:`onnx_batch`;
- the environment: :data:`ENVIRONMENT` (each ``ZOOINFER_*`` variable and its parser), :func:`check_environment`.
"""
from __future__ import annotations

import datetime
import difflib
import math
import numbers
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ZooinferError

# ------------------------------------------------------------------------------------------------ plain data
#: the scalar types a notebook parameter may hold (exact types: papermill writes each one as a Python literal)
PLAIN_SCALARS = (str, bool, int, float, type(None))
#: containers and scalars visited at most per value (YAML aliases can make a small file a huge or endless value)
MAX_PLAIN_ITEMS = 100_000
#: what a value that is not plain data is, for the refusal (the YAML tag that makes one, where there is one)
NOT_PLAIN = ((bytes, "binary data (bytes, e.g. a YAML !!binary value)"),
             (bytearray, "binary data (bytes)"),
             ((set, frozenset), "a set (e.g. a YAML !!set or '? a' entries)"),
             ((datetime.date, datetime.time), "a date or time (YAML reads an unquoted 2024-01-31 as one; quote it "
                                               "to give text)"),
             (tuple, "a tuple"))
PLAIN_HELP = "only text, numbers, true/false, null and lists or text-keyed mappings of them may reach a notebook"


def _what(value: Any) -> str:
    for types, what in NOT_PLAIN:
        if isinstance(value, types):
            return what
    return f"a {type(value).__module__}.{type(value).__qualname__} object"


def _why_not_plain(value: Any, where: str, python: bool) -> str | None:
    """Why ``value`` is not plain data (None when it is), naming where in it (``[2]``, ``.key``) the culprit is.
    ``python``: the Python API's spellings are plain too (tuples, ``os.PathLike`` paths, numpy numbers)."""
    todo: list[tuple[Any, str, tuple[int, ...]]] = [(value, where, ())]
    seen = 0
    while todo:
        item, at, parents = todo.pop()
        seen += 1
        if seen > MAX_PLAIN_ITEMS:
            return f"is too large (more than {MAX_PLAIN_ITEMS} items; YAML aliases repeat a value)"
        if type(item) in PLAIN_SCALARS:
            continue
        if python and (isinstance(item, os.PathLike) or (isinstance(item, numbers.Real) and
                                                         not isinstance(item, bool))):
            continue
        if type(item) is list or (python and isinstance(item, tuple)):
            if id(item) in parents:
                return f"{at} is a value it is part of (a YAML alias to its own anchor)"
            todo += [(v, f"{at}[{i}]", (*parents, id(item))) for i, v in enumerate(item)]
        elif type(item) is dict:
            if id(item) in parents:
                return f"{at} is a value it is part of (a YAML alias to its own anchor)"
            for k, v in item.items():
                if type(k) is not str:
                    return f"{at} has a key {k!r} that is not text"
                todo.append((v, f"{at}.{k}", (*parents, id(item))))
        else:
            return f"{at} is {_what(item)}"
    return None


def plain_value(name: str, value: Any, *, python: bool = False) -> Any:
    """``value`` unchanged when it is plain data -- str, int, float, bool, None, and lists / dicts with str keys of
    them -- else a ZooinferError naming the parameter ``name`` and what the value is. Every parameter is checked,
    whether or not the run uses it. ``python``: also the Python API's spellings (tuples, paths, numpy numbers), for
    ``RunConfig.from_parameters``; never for values papermill writes into a notebook."""
    why = _why_not_plain(value, "the value", python)
    if why is not None:
        raise ZooinferError(f"parameter {name!r}: {why.replace('the value', 'its value', 1)}, not plain data: "
                            f"{PLAIN_HELP}")
    return value


def plain_parameters(params: Mapping[Any, Any], source: str, *, python: bool = False) -> dict[str, Any]:
    """``params`` as a dict when every name is text and every value plain data (:func:`plain_value`); else a
    ZooinferError that starts with ``source`` (the file, ``-p``, the run a resume reads) and names the parameter."""
    for name, value in params.items():
        if type(name) is not str:
            raise ZooinferError(f"{source}: parameter name {name!r} is not text ({type(name).__name__}); expected "
                                "'name: value' lines, e.g. 'bs: 8'")
        try:
            plain_value(name, value, python=python)
        except ZooinferError as e:
            raise ZooinferError(f"{source}: {e}") from None
    return dict(params)


# ------------------------------------------------------------------------------------------------ numbers, flags
def none_if_empty(value: Any) -> Any:
    """None for "", "none" and "None" (what a command line gives for nothing), else ``value``."""
    return None if isinstance(value, str) and value in ("", "none", "None") else value


def integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (ints, integral floats, digit strings; never a bool: YAML reads
    "yes" as one), else a ZooinferError."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value)
    else:
        number = None
    if number is None or number < minimum:
        raise ZooinferError(f"parameter {name!r} must be an integer >= {minimum}, got {value!r}")
    return number


#: the spellings of a flag a command line or YAML file may give (papermill hands ``-p x false`` over as a string)
FLAG_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def flag(name: str, value: Any) -> bool:
    """``value`` as a bool (True/False, or 'true'/'false'/'yes'/'no' from a command line), else a ZooinferError."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in FLAG_WORDS:
        return FLAG_WORDS[value.strip().lower()]
    raise ZooinferError(f"parameter {name!r} must be true or false, got {value!r}")


@dataclass(frozen=True)
class NumberRange:
    """The values a number parameter may take: above ``low`` (or at it when ``low_closed``) and at most ``high``
    (below it when ``high_open``); None: no bound. ``str()`` says it the way a message does: "> 0", "in (0, 1]"."""

    low: float | None = None
    high: float | None = None
    low_closed: bool = False
    high_open: bool = False

    def __contains__(self, x: float) -> bool:
        above = self.low is None or (x >= self.low if self.low_closed else x > self.low)
        below = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'[' if self.low_closed else '('}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>=' if self.low_closed else '>'} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "finite"


#: the usual ranges: durations may be 0, a bound or threshold may not
AT_LEAST_ZERO, ABOVE_ZERO = NumberRange(0, low_closed=True), NumberRange(0)


def number_value(name: str, value: Any, allowed: NumberRange = NumberRange(), *, unit: str = "",
                 what: str = "parameter") -> float:
    """``value`` as a finite float in ``allowed`` (numbers or their text form; never a bool: YAML reads "yes" as
    one), else a ZooinferError naming ``what`` ``name``, the unit (e.g. "ms", "seconds") and the range."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number not in allowed:
        of = f" of {unit}" if unit else ""
        raise ZooinferError(f"{what} {name!r} must be a number{of} {allowed}, got {value!r}")
    return number


def seconds_value(name: str, value: Any) -> float:
    """``value`` as a finite number of seconds >= 0 (numbers or their text form), else a ZooinferError."""
    return number_value(name, value, AT_LEAST_ZERO, unit="seconds")


def milliseconds_value(name: str, value: Any) -> float:
    """``value`` as a finite number of milliseconds > 0 (a latency bound), else a ZooinferError saying ms."""
    return number_value(name, value, ABOVE_ZERO, unit="ms")


#: a precision budget: the largest relative drop of the metric a low-precision build may have, as a fraction
BUDGET_RANGE = NumberRange(0, 1, high_open=True)


def budget_value(name: str, value: Any) -> float:
    """``value`` as a precision budget: the largest relative drop from the reference metric, a fraction in (0, 1)
    (0.01: within 1% of the reference, the guides' rule), else a ZooinferError (5 or 100 for a percentage are
    refused, saying to write 0.05)."""
    try:
        return number_value(name, value, BUDGET_RANGE)
    except ZooinferError:
        raise ZooinferError(f"parameter {name!r} must be a fraction in (0, 1), e.g. 0.01 for 'within 1% of the "
                            f"reference metric', got {value!r}") from None


def batch_sizes_value(value: Any) -> tuple[int, ...]:
    """``batch_sizes`` as a tuple of ints >= 1: a list/tuple, one int, or their text form as papermill hands it over
    (``-p batch_sizes "[1, 8]"`` arrives as the string "[1, 8]"; "1,8" and "8" are accepted too)."""
    import yaml

    expected = ("parameter 'batch_sizes' must be a list of integers >= 1, e.g. [1, 8] (on a command line: "
                f"-p batch_sizes \"[1, 8]\"), got {value!r}")
    sizes = value
    if isinstance(sizes, str):
        text = sizes.strip()
        try:
            sizes = yaml.safe_load(text if text.startswith("[") or "," not in text else f"[{text}]")
        except yaml.YAMLError:
            raise ZooinferError(expected) from None
    if isinstance(sizes, (numbers.Integral, float)) and not isinstance(sizes, bool):
        sizes = [sizes]
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ZooinferError(expected)
    try:
        return tuple(integer("batch_sizes", b, 1) for b in sizes)
    except ZooinferError:
        raise ZooinferError(expected) from None


def names_value(name: str, value: Any) -> tuple[str, ...]:
    """A list of names (variants, scenarios) as a tuple of strings: a list/tuple, one name, or their text form as
    papermill hands it over ("[onnxruntime-int8, torch]", "onnxruntime-int8,torch"); None / "" -> ()."""
    import yaml

    value = none_if_empty(value)
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        try:
            value = yaml.safe_load(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
        except yaml.YAMLError:
            raise ZooinferError(f"parameter {name!r} must be a list of names, e.g. [a, b] (on a command line: "
                                f"-p {name} \"[a, b]\"), got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ZooinferError(f"parameter {name!r} must be a list of names, got {value!r}")
    return tuple(value)


def close_matches(name: str, valid: Any) -> str:
    """' (did you mean 'a' or 'b'?)' for the valid names close to ``name``, else ''."""
    near = difflib.get_close_matches(str(name), sorted(valid), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""


# ------------------------------------------------------------------------------------------------ names
#: the MLPerf LoadGen scenarios, in the order ``loadgen.run_scenarios`` runs them
SCENARIOS = ("SingleStream", "Offline", "Server")
_SCENARIO_KEYS = {re.sub(r"[\s_-]", "", s).lower(): s for s in SCENARIOS}


def scenario_name(name: str) -> str:
    """The canonical scenario name for ``name`` (case, ``_``, ``-`` and spaces ignored), or a ZooinferError listing
    the valid ones."""
    key = re.sub(r"[\s_-]", "", str(name)).lower()
    if key not in _SCENARIO_KEYS:
        raise ZooinferError(f"unknown LoadGen scenario {name!r}; valid scenarios: {', '.join(SCENARIOS)}")
    return _SCENARIO_KEYS[key]


#: MLPerf's compliance audits ``zooinfer.loadgen.audit`` runs through LoadGen's audit.config (the ``audits``
#: parameter), and what each checks
AUDITS = {"TEST01": "accuracy logged during a performance run matches the accuracy run",
          "TEST04": "a repeated sample is not more than 10% faster (no caching)",
          "TEST05": "other RNG seeds give a performance within 5%"}


def audit_name(name: Any) -> str:
    """The canonical audit name for ``name`` (case, ``_``, ``-`` and spaces ignored: "test01" -> "TEST01"), or a
    ZooinferError listing the valid ones."""
    key = re.sub(r"[\s_-]", "", str(name)).upper()
    if key not in AUDITS:
        raise ZooinferError(f"unknown LoadGen audit {name!r}; valid audits: {', '.join(AUDITS)} (parameter "
                            "'audits', e.g. -p audits '[TEST01, TEST04, TEST05]')")
    return key


#: variant names (``bins:<folder>`` takes the folder after the colon); what each one runs: zooinfer.variants
VARIANTS = ("onnxruntime", "torch", "torch-cuda", "ort-cuda", "ort-tensorrt", "tensorrt-fp16", "onnxruntime-fp16",
            "onnxruntime-fp16-file", "ort-cuda-fp16", "onnxruntime-int8", "onnxruntime-int8-s8s8", "openvino",
            "openvino-bf16", "openvino-int8", "acl", "bins:<folder>")
BINS_PREFIX = "bins:"


def parse_variant(name: str) -> tuple[str, str | None]:
    """``"bins:/x/y"`` -> ``("bins", "/x/y")``; a known plain name -> ``(name, None)``; else a ZooinferError that
    lists the known names."""
    if not isinstance(name, str):
        raise ZooinferError(f"a variant is a name (one of {', '.join(VARIANTS)}), got {type(name).__name__}")
    if name.startswith(BINS_PREFIX):
        folder = name[len(BINS_PREFIX):].strip()
        if not folder:
            raise ZooinferError("variant 'bins:<folder>' needs the result folder after the colon, e.g. "
                                "bins:./result/subdir")
        return "bins", folder
    if name not in VARIANTS:
        raise ZooinferError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return name, None


# ------------------------------------------------------------------------------------------------ paths
#: the prediction store's folder in a run folder, and its fingerprint file (zooinfer.store writes them)
STORE_FOLDER, STORE_FINGERPRINT = "predictions", "fingerprint.json"
#: result-file suffixes the bins backend reads (ais_bench BIN / TXT, the old benchmark tool's TXT)
RESULT_SUFFIXES = (".bin", ".txt")
#: environment variable naming the default parent of outputs/<model>/<run-id>/
OUTPUTS_ENV = "ZOOINFER_OUTPUTS"


def default_output_root() -> Path:
    """``$ZOOINFER_OUTPUTS``, else the checkout's ``outputs/`` (when installed from a checkout), else ``./outputs``."""
    if os.environ.get(OUTPUTS_ENV):
        return Path(os.environ[OUTPUTS_ENV])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "notebooks").is_dir():
        return checkout / "outputs"
    return Path("outputs")


def check_output_folder(path: str | os.PathLike, what: str) -> Path:
    """Raise a ZooinferError unless ``path`` is a folder this process can create files in, or can be created (its
    nearest existing parent is a writable folder). ``what`` names the parameter or option (e.g. "output_root").
    Writes (and removes) one probe file: permission bits alone do not say it for root or read-only mounts."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ZooinferError(f"{what}: {target} is a file, expected a folder (or a path where one can be created)")
    existing = target
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ZooinferError(f"{what}: cannot create {target}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".zooinfer-write-check-"):
            pass
    except OSError as e:
        raise ZooinferError(f"{what}: cannot write into {existing}" + ("" if existing == target else
                            f" (to create {target})") + f": {e.strerror or e}; choose a writable folder") from None
    return target


def check_result_folder(folder: str | os.PathLike, what: str, *,
                        error: type[ZooinferError] = ZooinferError) -> Path:
    """``folder`` when it is a folder holding result files (``<key>_<k>.bin`` / ``.txt``, as ais_bench/benchmark
    write them, at its top or in ``view<v>/`` sub-folders), else an ``error`` starting with ``what`` (e.g.
    "parameter 'results_dir'"). Whether every sample has its files is known only once the dataset is open."""
    path = Path(folder)
    if not path.exists():
        raise error(f"{what}: result folder not found: {path} (the folder ais_bench/benchmark wrote, e.g. "
                            "./result/subdir)")
    if not path.is_dir():
        raise error(f"{what}: {path} is a file, expected the folder ais_bench/benchmark wrote (e.g. "
                            "./result/subdir)")
    try:
        found = any(p.suffix in RESULT_SUFFIXES and p.is_file() for sub in (path, *sorted(path.glob("view*")))
                    if sub.is_dir() for p in sub.iterdir())
    except OSError as e:
        raise error(f"{what}: cannot read {path}: {e.strerror or e}") from None
    if not found:
        raise error(f"{what}: {path} holds no result files (<key>_<k>.bin or .txt, as ais_bench/benchmark "
                            "write them)")
    return path


def onnx_batch(path: str | os.PathLike) -> int | None:
    """The fixed batch size of an ONNX file's first input, or None when its batch axis is dynamic (reads the graph,
    not the weights)."""
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: say which file
        raise ZooinferError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    if not m.graph.input or not m.graph.input[0].type.tensor_type.shape.dim:
        return None
    first = m.graph.input[0].type.tensor_type.shape.dim[0]
    return None if first.dim_param or first.dim_value <= 0 else int(first.dim_value)


# ------------------------------------------------------------------------------------------------ environment
def _positive_int(name: str, text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ZooinferError(f"environment variable {name}={text!r}: expected a number > 0")
    return int(text)


def _positive_number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ZooinferError(f"environment variable {name}={text!r}: expected a number > 0")
    return value


#: the spellings ZOOINFER_PIN_CORES takes
PIN_WORDS = {**FLAG_WORDS, "1": True, "0": False}


def _env_flag(name: str, text: str) -> bool:
    if text.strip().lower() not in PIN_WORDS:
        raise ZooinferError(f"environment variable {name}={text!r}: expected 1 or 0 (true or false)")
    return PIN_WORDS[text.strip().lower()]


def _chunk_numbers(name: str, text: str) -> list[int]:
    parts = [c for c in text.replace(" ", "").split(",") if c]
    if not parts or not all(c.isdigit() for c in parts):
        raise ZooinferError(f"environment variable {name}={text!r}: expected chunk numbers (from 0), comma-separated")
    return [int(c) for c in parts]


def _fail_mode(name: str, text: str) -> str:
    if text.strip() not in ("raise", "exit"):
        raise ZooinferError(f"environment variable {name}={text!r}: expected raise or exit")
    return text.strip()


def _folder(name: str, text: str) -> Path:
    """A folder zooinfer writes into: it exists or can be created, and a file can be written there."""
    return check_output_folder(text, f"environment variable {name}")


def _folder_path(name: str, text: str) -> Path:
    """A folder zooinfer may only read (a cache built elsewhere may be read-only): a folder, or a path where one can
    be created -- never a file."""
    path = Path(text).expanduser()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ZooinferError(f"environment variable {name}={text!r}: {existing} is a file, expected a folder")
    return path


#: every ZOOINFER_* environment variable zooinfer reads -> its parser ``(name, text) -> value`` (a ZooinferError
#: naming the variable and what it expects). An empty or unset variable means the default.
ENVIRONMENT: dict[str, Callable[[str, str], Any]] = {
    "ZOOINFER_CHUNK_SIZE": _positive_int,        # samples per stored chunk (zooinfer.store)
    "ZOOINFER_FLUSH_S": _positive_number,        # seconds after which a partly filled chunk is stored
    "ZOOINFER_PIN_CORES": _env_flag,             # pin each Ray CPU worker to its own cores (zooinfer.distributed)
    "ZOOINFER_FAIL_CHUNK": _chunk_numbers,       # fault-injection test hook: chunks that fail
    "ZOOINFER_FAIL_CHUNK_MODE": _fail_mode,      # ... how they fail
    "ZOOINFER_FAIL_CHUNK_ONCE": _folder,         # ... only on their first attempt (a folder marking attempts)
    OUTPUTS_ENV: _folder,                        # the default output root (default_output_root)
    "ZOOINFER_CACHE": _folder_path,              # where the embedded samples are built (zooinfer.datasets.samples)
}


def environment_value(name: str, default: Any = None, environ: Mapping[str, str] | None = None) -> Any:
    """The parsed value of environment variable ``name`` (one of :data:`ENVIRONMENT`), ``default`` when it is
    unset or empty; a bad value is a ZooinferError naming the variable."""
    text = (os.environ if environ is None else environ).get(name, "")
    if not text.strip():
        return default
    return ENVIRONMENT[name](name, text)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Parse every ZOOINFER_* variable that is set (:data:`ENVIRONMENT`): a bad one is refused before anything
    slow runs, not when the store, the Ray driver or the sample cache first reads it."""
    for name in ENVIRONMENT:
        environment_value(name, None, environ)


# ------------------------------------------------------------------------------------------------ resume
class ResumeRefused(ZooinferError):
    """A resume whose run differs from the stored one (checkpoint, dataset, recipe or backend settings)."""


def read_stored_fingerprint(folder: str | os.PathLike) -> dict:
    """The fingerprint a run stored (``<folder>/predictions/fingerprint.json``) as a dict, or a ZooinferError naming
    the file."""
    import json

    path = Path(folder) / STORE_FOLDER / STORE_FINGERPRINT
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ZooinferError(f"parameter 'resume': cannot read {path} ({e}); expected the fingerprint a run of "
                            "this version of zooinfer stored") from None
    if not isinstance(stored, dict):
        raise ZooinferError(f"parameter 'resume': {path} holds a {type(stored).__name__}, expected a JSON object")
    return stored


def _json_form(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparing with a stored fingerprint."""
    import json

    return json.loads(json.dumps(value, default=str))


def resume_differences(stored: Mapping[str, Any], current: Mapping[str, Any], parts: Mapping[str, str]) -> list[str]:
    """What differs between a ``stored`` fingerprint and the ``current`` run's parts that are known before anything
    runs: one phrase per part of ``parts`` (part -> its name in the refusal), comparing only the keys ``current``
    gives of a part (a dict part: ``'backend settings (bs: 1 -> 4)'``; a value: ``"model ('a' -> 'b')"``)."""
    out = []
    for part, what in parts.items():
        if part not in current:
            continue
        a, b = stored.get(part), _json_form(current[part])
        if isinstance(b, dict):
            a = a if isinstance(a, dict) else {}
            changed = [f"{k}: {a.get(k)!r} -> {v!r}" for k, v in b.items() if a.get(k) != v]
            if changed:
                out.append(f"{what} ({'; '.join(changed)})")
        elif a != b:
            out.append(f"{what} ({a!r} -> {b!r})")
    return out
