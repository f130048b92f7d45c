"""zooinfer.parameters: the plain parsers below config (plain data only, numbers, names, paths, the environment)."""
from __future__ import annotations

import ast
import base64
import math

import pytest
import yaml

from zooinfer.errors import ZooinferError
from zooinfer.parameters import (ABOVE_ZERO, ENVIRONMENT, NumberRange, check_environment, check_result_folder,
                                 environment_value, milliseconds_value, number_value, parse_variant, plain_parameters,
                                 plain_value, scenario_name, seconds_value)

PAYLOAD = '" + str(__import__("os").system("touch /tmp/zooinfer-never")) + "'


@pytest.mark.parametrize("value", ["text", "", 8, -1, 0.5, math.inf, math.nan, True, None, [1, "a", None],
                                   {"a": [1, {"b": 2.0}]}, []])
def test_plain_data_passes_unchanged(value):
    assert plain_value("x", value) is value


@pytest.mark.parametrize("text, what", [
    (f"!!binary {base64.b64encode(PAYLOAD.encode()).decode()}", "its value is binary data (bytes, e.g. a YAML "
                                                                 "!!binary value)"),
    ("!!set {a, b}", "its value is a set"),
    ("2024-01-31", "its value is a date or time (YAML reads an unquoted 2024-01-31 as one; quote it"),
    ("2024-01-31 10:00:00", "its value is a date or time"),
    ("[1, !!binary aGk=]", r"its value[1] is binary data"),
    ("{a: {b: 2024-01-31}}", "its value.a.b is a date or time"),
    ("{1: a}", "its value has a key 1 that is not text"),
    ("&a [*a]", "its value[0] is a value it is part of"),
])
def test_values_yaml_makes_that_are_not_plain_data_are_refused_naming_the_parameter(text, what):
    value = yaml.safe_load(text)
    with pytest.raises(ZooinferError) as e:
        plain_value("om_path", value)
    message = str(e.value)
    assert message.startswith(f"parameter 'om_path': {what}") and "not plain data" in message
    assert "\n" not in message


def test_a_billion_laughs_value_is_refused_without_walking_it_all():
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "\n".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8))
    with pytest.raises(ZooinferError, match="too large"):
        plain_value("x", yaml.safe_load(text)["i"])


def test_tuples_paths_and_numpy_numbers_are_plain_only_for_the_python_api(tmp_path):
    import numpy as np

    for value in ((1, 8), tmp_path, np.int64(3), np.float32(0.5)):
        assert plain_value("x", value, python=True) is value
        with pytest.raises(ZooinferError, match="not plain data"):
            plain_value("x", value)
    with pytest.raises(ZooinferError, match="binary data"):
        plain_value("x", b"abc", python=True)


def test_plain_parameters_names_the_source():
    with pytest.raises(ZooinferError, match=r"^params.yaml: parameter 'seed': its value is a set"):
        plain_parameters({"bs": 8, "seed": {1, 2}}, "params.yaml")
    with pytest.raises(ZooinferError, match=r"^params.yaml: parameter name 3 is not text"):
        plain_parameters({3: 8}, "params.yaml")
    assert plain_parameters({"bs": 8}, "x") == {"bs": 8}


@pytest.mark.parametrize("text", ['plain', 'quo"te', "single'quote", 'back\\slash\\', 'new\nline\r\ttab',
                                  '\\" + str(1) + \\"', '" + str(__import__("os").getpid()) + "', "é ü 中 \x00 \x7f",
                                  '"""', "'''", "\\N{BULLET}", "{x}", "\\u0041"])
def test_a_str_parameter_reaches_the_notebook_unchanged(text):
    """papermill's Python translator escapes str values (unicode_escape, then \" for quotes): the assignment it
    writes into the notebook evaluates to the very same text, whatever quotes, backslashes and line breaks it has."""
    from papermill.translators import PythonTranslator

    code = PythonTranslator.codify({"results_dir": text, "nested": [text, {"k": text}]})
    tree = ast.parse(code)
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}
    assert values == {"results_dir": text, "nested": [text, {"k": text}]}


@pytest.mark.parametrize("value", [True, False, "yes", "no", "half", None, [1], math.nan, "inf"])
def test_a_bool_or_text_is_not_a_number(value):
    with pytest.raises(ZooinferError, match=r"parameter 'x' must be a number of ms > 0, got "):
        number_value("x", value, ABOVE_ZERO, unit="ms")


def test_numbers_are_checked_against_their_range_and_unit():
    assert number_value("iou_thresh", "0.4", NumberRange(0, 1)) == 0.4
    assert number_value("iou_thresh", 1, NumberRange(0, 1)) == 1.0
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ZooinferError, match=r"'iou_thresh' must be a number in \(0, 1\], got"):
            number_value("iou_thresh", bad, NumberRange(0, 1))
    with pytest.raises(ZooinferError, match=r"parameter 'latency_bound_ms' must be a number of ms > 0, got 0"):
        milliseconds_value("latency_bound_ms", 0)
    assert milliseconds_value("latency_bound_ms", "250") == 250.0
    assert seconds_value("bench_min_time", 0) == 0.0
    with pytest.raises(ZooinferError, match=r"'bench_min_time' must be a number of seconds >= 0, got True"):
        seconds_value("bench_min_time", True)


def test_names_are_parsed_here_and_still_where_they_were():
    from zooinfer import loadgen, variants

    assert scenario_name("single_stream") == "SingleStream"
    assert parse_variant("bins:/x") == ("bins", "/x")
    with pytest.raises(ZooinferError, match="unknown variant 'int4'"):
        parse_variant("int4")
    assert loadgen.scenario_name is scenario_name and variants.parse_name is parse_variant


@pytest.mark.parametrize("name, text, message", [
    ("ZOOINFER_CHUNK_SIZE", "many", "expected a number > 0"),
    ("ZOOINFER_CHUNK_SIZE", "0", "expected a number > 0"),
    ("ZOOINFER_FLUSH_S", "-1", "expected a number > 0"),
    ("ZOOINFER_FLUSH_S", "nan", "expected a number > 0"),
    ("ZOOINFER_PIN_CORES", "maybe", "expected 1 or 0"),
    ("ZOOINFER_FAIL_CHUNK", "one", "expected chunk numbers"),
    ("ZOOINFER_FAIL_CHUNK_MODE", "explode", "expected raise or exit"),
    ("ZOOINFER_OUTPUTS", "/proc/zooinfer-x", "cannot write into /proc"),
    ("ZOOINFER_CACHE", "{afile}/cache", "afile is a file, expected a folder"),
])
def test_every_environment_variable_is_checked_naming_it(tmp_path, name, text, message):
    assert name in ENVIRONMENT
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ZooinferError, match=f"environment variable {name}.*{message}"):
        check_environment({name: text.format(afile=tmp_path / "afile")})


def test_environment_values_are_parsed_and_default_when_unset(tmp_path):
    env = {"ZOOINFER_CHUNK_SIZE": "4", "ZOOINFER_FLUSH_S": "0.5", "ZOOINFER_PIN_CORES": "1",
           "ZOOINFER_FAIL_CHUNK": "0, 2", "ZOOINFER_FAIL_CHUNK_MODE": "exit", "ZOOINFER_CACHE": str(tmp_path / "c")}
    check_environment(env)
    assert [environment_value(n, None, env) for n in ENVIRONMENT if n in env] == [4, 0.5, True, [0, 2], "exit",
                                                                                    tmp_path / "c"]
    assert environment_value("ZOOINFER_CHUNK_SIZE", 256, {"ZOOINFER_CHUNK_SIZE": " "}) == 256


def test_a_result_folder_must_be_a_folder_holding_result_files(tmp_path):
    with pytest.raises(ZooinferError, match="compare: result folder not found"):
        check_result_folder(tmp_path / "none", "compare")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ZooinferError, match="afile is a file, expected the folder ais_bench"):
        check_result_folder(tmp_path / "afile", "compare")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooinferError, match="holds no result files"):
        check_result_folder(tmp_path / "empty", "compare")
    (tmp_path / "views" / "view0").mkdir(parents=True)
    (tmp_path / "views" / "view0" / "a_0.bin").write_bytes(b"\0" * 4)
    assert check_result_folder(tmp_path / "views", "compare") == tmp_path / "views"
