from __future__ import annotations

import pytest

from prebuildd.domain.jobs import FailureClass, Transition
from prebuildd.domain.manifest import (
    MANIFEST_FILE,
    MAX_NESTING,
    PROVISIONER_KINDS,
    EchoConfig,
    EchoStep,
    ExecConfig,
    ManifestError,
    PrebuildSettings,
    PresetSpec,
    ScheduleSpec,
    TemplateManifest,
    check_presets,
    parse_manifest,
    preset_warnings,
)
from prebuildd.domain.parameters import ParameterSpec, ParameterType

FULL = """
provisioner = "exec"
display_name = "Local workspace"
description = "A workspace on this machine"
tags = { region = "eu", gpu = "no" }
agents = ["main", "side-car_2"]

[exec]
create = "scripts/create.sh"
start = "scripts/start.sh"
stop = "scripts/stop.sh"
delete = "scripts/delete.sh"
claim = "scripts/claim.sh"
timeout = "10m"

[[parameters]]
name = "repo"
description = "Git repository"
display_name = "Repository"
mutable = false
validation = { regex = "^https://.*", error = "must be https" }

[[parameters]]
name = "cpu"
type = "number"
default = 2
options = [1, 2, 4.0]
validation = { min = 1, max = 8, monotonic = "increasing", error = "1 to 8 cores" }

[[parameters]]
name = "debug"
type = "bool"
default = false

[[parameters]]
name = "features"
type = "list(string)"
default = ["git"]
options = ["git", "docker"]
required = false

[[parameters]]
name = "note"
required = false

[[presets]]
name = "small"
description = "Two cores"
parameters = { repo = "https://example.com/r.git", cpu = 2, debug = "TRUE", features = ["git", "docker"] }

[presets.prebuilds]
instances = 3
ttl = "8h"
timezone = "Europe/Paris"
schedule = [
  { cron = "* 8-18 * * 1-5", instances = 5 },
  { cron = "* * * * 0,6", instances = 0 },
]

[[presets]]
name = "big"
parameters = { cpu = 4 }
"""

EXPECTED = TemplateManifest(
    provisioner="exec",
    display_name="Local workspace",
    description="A workspace on this machine",
    parameters=(
        ParameterSpec(
            name="repo",
            required=True,
            mutable=False,
            validation_regex="^https://.*",
            validation_error="must be https",
            description="Git repository",
            display_name="Repository",
        ),
        ParameterSpec(
            name="cpu",
            type=ParameterType.NUMBER,
            default="2",
            options=("1", "2", "4"),
            validation_min=1.0,
            validation_max=8.0,
            validation_monotonic="increasing",
            validation_error="1 to 8 cores",
        ),
        ParameterSpec(name="debug", type=ParameterType.BOOL, default="false"),
        ParameterSpec(
            name="features", type=ParameterType.LIST_STRING, default='["git"]', options=("git", "docker")
        ),
        ParameterSpec(name="note"),
    ),
    presets=(
        PresetSpec(
            name="small",
            description="Two cores",
            parameters={
                "repo": "https://example.com/r.git",
                "cpu": "2",
                "debug": "true",
                "features": '["git","docker"]',
            },
            prebuilds=PrebuildSettings(
                instances=3,
                ttl_seconds=8 * 3600,
                timezone="Europe/Paris",
                schedules=(ScheduleSpec("* 8-18 * * 1-5", 5), ScheduleSpec("* * * * 0,6", 0)),
            ),
        ),
        PresetSpec(name="big", parameters={"cpu": "4"}),
    ),
    tags={"region": "eu", "gpu": "no"},
    agents=("main", "side-car_2"),
    exec=ExecConfig(
        create="scripts/create.sh",
        start="scripts/start.sh",
        stop="scripts/stop.sh",
        delete="scripts/delete.sh",
        claim="scripts/claim.sh",
        timeout_seconds=600.0,
    ),
)


def test_full_manifest() -> None:
    manifest = parse_manifest(FULL)
    assert manifest == EXPECTED
    assert preset_warnings(manifest) == []


def test_full_manifest_specs_survive_json_round_trip() -> None:
    manifest = parse_manifest(FULL)
    for spec in manifest.parameters:
        assert ParameterSpec.from_json(spec.to_json()) == spec
    check_presets(
        [ParameterSpec.from_json(spec.to_json()) for spec in manifest.parameters],
        manifest.presets,
    )


def test_constants() -> None:
    assert MANIFEST_FILE == "prebuildd.toml"
    assert PROVISIONER_KINDS == ("echo", "exec", "terraform")


def test_minimal_echo_manifest() -> None:
    manifest = parse_manifest('provisioner = "echo"')
    assert manifest == TemplateManifest(provisioner="echo", echo=EchoConfig())
    assert manifest.echo is not None
    assert manifest.echo.step("start") == EchoStep()


def test_minimal_terraform_manifest_keeps_raw_section() -> None:
    assert parse_manifest('provisioner = "terraform"').terraform == {}
    text = 'provisioner = "terraform"\n[terraform]\nversion = "1.9"\nvars = { a = 1 }\n'
    manifest = parse_manifest(text)
    assert manifest.terraform == {"version": "1.9", "vars": {"a": 1}}
    assert manifest.exec is None
    assert manifest.echo is None


# --- errors: helpers -------------------------------------------------------------------------------


def error_of(text: str, file: str = MANIFEST_FILE) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, file)
    error = info.value
    assert error.file == file
    expected = f"{file}: {error.key}: {error.reason}" if error.key else f"{file}: {error.reason}"
    assert str(error) == expected
    return error


def test_manifest_error_message_shape() -> None:
    assert (
        str(ManifestError("t/prebuildd.toml", "exec.create", "bad")) == "t/prebuildd.toml: exec.create: bad"
    )
    assert str(ManifestError("t/prebuildd.toml", "", "bad")) == "t/prebuildd.toml: bad"
    error = ManifestError("f", "k", "r")
    assert (error.file, error.key, error.reason) == ("f", "k", "r")
    assert isinstance(error, ValueError)


def test_error_names_the_given_file() -> None:
    error = error_of('provisioner = "nope"', file="templates/dev/prebuildd.toml")
    assert str(error).startswith("templates/dev/prebuildd.toml: provisioner: ")


@pytest.mark.parametrize(
    ("text", "line_col"),
    [
        ('provisioner = "echo"\nagents = [1\ndescription = "x"\n', "line 3, column 1"),
        ('provisioner = "echo"\nagents = [1\n', "at end of document"),
        ('provisioner = "echo"\nx = \n', "line 2, column 5"),
        ('provisioner = "echo"\nprovisioner = "exec"\n', "line 2"),
    ],
)
def test_toml_syntax_error(text: str, line_col: str) -> None:
    error = error_of(text)
    assert error.key == ""
    assert error.reason.startswith("invalid TOML: ")
    assert line_col in error.reason


# --- top level -------------------------------------------------------------------------------------


def test_provisioner_required() -> None:
    error = error_of('display_name = "x"')
    assert error.key == "provisioner"
    assert error.reason == "is required; expected one of: echo, exec, terraform"


def test_unknown_provisioner() -> None:
    error = error_of('provisioner = "docker"')
    assert error.key == "provisioner"
    assert error.reason == "unknown provisioner 'docker'; expected one of: echo, exec, terraform"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("provisioner = 1", "provisioner", "expected a string, got integer 1"),
        ('provisioner = "echo"\ndisplay_name = true', "display_name", "expected a string, got boolean true"),
        ('provisioner = "echo"\ndescription = 1.5', "description", "expected a string, got float 1.5"),
        ('provisioner = "echo"\ntags = ["a"]', "tags", "expected a table, got an array"),
        ('provisioner = "echo"\ntags = { a = 1 }', "tags.a", "expected a string, got integer 1"),
        ('provisioner = "echo"\nagents = "main"', "agents", "expected an array, got string 'main'"),
        ('provisioner = "echo"\nagents = ["a", 2]', "agents[1]", "expected a string, got integer 2"),
        ('provisioner = "echo"\nparameters = { a = 1 }', "parameters", "expected an array, got a table"),
        ('provisioner = "echo"\nparameters = [1]', "parameters[0]", "expected a table, got integer 1"),
        ('provisioner = "echo"\npresets = [1]', "presets[0]", "expected a table, got integer 1"),
        ('provisioner = "exec"\nexec = "x"', "exec", "expected a table, got string 'x'"),
        ('provisioner = "echo"\necho = 1', "echo", "expected a table, got integer 1"),
        ('provisioner = "terraform"\nterraform = 1', "terraform", "expected a table, got integer 1"),
    ],
)
def test_wrong_types(text: str, key: str, reason: str) -> None:
    error = error_of(text)
    assert (error.key, error.reason) == (key, reason)


def test_unknown_top_level_key() -> None:
    error = error_of('provisioner = "echo"\nprovisoner = "x"')
    assert error.key == "provisoner"
    assert error.reason == (
        "unknown key `provisoner`; allowed keys: provisioner, display_name, description, tags, agents, "
        "exec, echo, terraform, parameters, presets"
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Main", "invalid agent name 'Main'"),
        ("a b", "invalid agent name 'a b'"),
        ("", "invalid agent name ''"),
    ],
)
def test_bad_agent_names(name: str, reason: str) -> None:
    error = error_of(f'provisioner = "echo"\nagents = ["ok", "{name}"]')
    assert error.key == "agents[1]"
    assert error.reason.startswith(reason)


def test_duplicate_agent() -> None:
    error = error_of('provisioner = "echo"\nagents = ["main", "main"]')
    assert (error.key, error.reason) == ("agents[1]", "duplicate agent name 'main'")


# --- provisioner sections --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provisioner", "section"),
    [
        ("echo", "exec"),
        ("echo", "terraform"),
        ("exec", "echo"),
        ("exec", "terraform"),
        ("terraform", "exec"),
        ("terraform", "echo"),
    ],
)
def test_section_of_other_provisioner_refused(provisioner: str, section: str) -> None:
    extra = '\n[exec]\nstart = "s.sh"' if provisioner == "exec" and section != "exec" else ""
    error = error_of(f'provisioner = "{provisioner}"{extra}\n[{section}]\n')
    assert error.key == section
    assert error.reason == (
        f'section only allowed when provisioner = "{section}" (provisioner is "{provisioner}")'
    )


def test_exec_section_required() -> None:
    error = error_of('provisioner = "exec"')
    assert (error.key, error.reason) == ("exec", 'section is required when provisioner = "exec"')


@pytest.mark.parametrize("body", ["", 'stop = "s.sh"\ndelete = "d.sh"', 'timeout = "1m"'])
def test_exec_needs_create_or_start(body: str) -> None:
    error = error_of(f'provisioner = "exec"\n[exec]\n{body}')
    assert (error.key, error.reason) == ("exec", "needs at least one of `create` or `start`")


@pytest.mark.parametrize("script", ["create", "start"])
def test_exec_either_create_or_start_is_enough(script: str) -> None:
    manifest = parse_manifest(f'provisioner = "exec"\n[exec]\n{script} = "x.sh"')
    assert getattr(manifest.exec, script) == "x.sh"
    assert manifest.exec is not None
    assert manifest.exec.timeout_seconds is None


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/abs/create.sh", "must be a path relative to the template directory, got '/abs/create.sh'"),
        (r"\\share\x.sh", "must be a path relative to the template directory"),
        ("C:/x.sh", "must be a path relative to the template directory"),
        ("../create.sh", "must not leave the template directory ('..'), got '../create.sh'"),
        ("scripts/../../x.sh", "must not leave the template directory"),
        (r"scripts\..\x.sh", "must not leave the template directory"),
        ("", "must not be empty"),
        ("  ", "must not be empty"),
    ],
)
@pytest.mark.parametrize("script", ["create", "start", "stop", "delete", "claim"])
def test_exec_bad_paths(script: str, path: str, reason: str) -> None:
    other = "" if script in ("create", "start") else '\nstart = "ok.sh"'
    error = error_of(f"provisioner = 'exec'\n[exec]\n{script} = '{path}'{other}")
    assert error.key == f"exec.{script}"
    assert error.reason.startswith(reason)


@pytest.mark.parametrize(
    "path", ["create.sh", "scripts/create.sh", "./scripts/x.sh", "a..b/c.sh", "run python x.py"]
)
def test_exec_good_paths(path: str) -> None:
    manifest = parse_manifest(f'provisioner = "exec"\n[exec]\ncreate = "{path}"')
    assert manifest.exec == ExecConfig(create=path)


def test_exec_script_wrong_type() -> None:
    error = error_of('provisioner = "exec"\n[exec]\ncreate = ["a"]')
    assert (error.key, error.reason) == ("exec.create", "expected a string, got an array")


def test_exec_unknown_key() -> None:
    error = error_of('provisioner = "exec"\n[exec]\nstart = "s"\nbuild = "b"')
    assert error.key == "exec.build"
    assert error.reason == "unknown key `build`; allowed keys: create, start, stop, delete, claim, timeout"


@pytest.mark.parametrize(
    ("value", "seconds"), [('"10m"', 600.0), ('"1h30m"', 5400.0), ("45", 45.0), ("2.5", 2.5)]
)
def test_exec_timeout(value: str, seconds: float) -> None:
    manifest = parse_manifest(f'provisioner = "exec"\n[exec]\nstart = "s"\ntimeout = {value}')
    assert manifest.exec is not None
    assert manifest.exec.timeout_seconds == seconds


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"soon"', "invalid duration 'soon'"),
        ('"0s"', "must be greater than zero"),
        ("0", "must be greater than zero"),
        ("-5", "duration must not be negative, got -5"),
        ("true", "expected a number, got boolean true"),
    ],
)
def test_exec_bad_timeout(value: str, reason: str) -> None:
    error = error_of(f'provisioner = "exec"\n[exec]\nstart = "s"\ntimeout = {value}')
    assert error.key == "exec.timeout"
    assert error.reason.startswith(reason)


@pytest.mark.parametrize(
    ("config", "transition", "first_build", "expected"),
    [
        (ExecConfig(create="c", start="s"), "start", True, "c"),
        (ExecConfig(create="c", start="s"), "start", False, "s"),
        (ExecConfig(start="s"), "start", True, "s"),
        (ExecConfig(create="c"), "start", True, "c"),
        (ExecConfig(create="c"), "start", False, None),
        (ExecConfig(create="c", stop="x"), "stop", False, "x"),
        (ExecConfig(create="c", stop="x"), "stop", True, "x"),
        (ExecConfig(create="c"), "stop", False, None),
        (ExecConfig(create="c", delete="d"), "delete", False, "d"),
        (ExecConfig(create="c", delete="d"), "delete", True, "d"),
        (ExecConfig(create="c"), "delete", False, None),
        (ExecConfig(create="c", claim="k"), "claim", False, "k"),
        (ExecConfig(create="c"), "claim", False, None),
        (ExecConfig(create="c", start="s"), Transition.START, True, "c"),
        (ExecConfig(create="c", delete="d"), Transition.DELETE, False, "d"),
    ],
)
def test_exec_script_for(
    config: ExecConfig, transition: str, first_build: bool, expected: str | None
) -> None:
    assert config.script_for(transition, first_build) == expected


def test_exec_script_for_unknown_transition() -> None:
    with pytest.raises(ValueError, match="unknown transition 'restart'"):
        ExecConfig(start="s").script_for("restart", False)


def test_echo_steps() -> None:
    text = """
provisioner = "echo"
[echo]
import = { delay = "1s" }

[echo.start]
result = "failure"
error = "boom"
delay = "2s"
logs = ["a", "b"]
outputs = { url = "x", n = 1 }
failure_class = "infrastructure"
block = true
[echo.stop]
delay = 0.5
"""
    manifest = parse_manifest(text)
    assert manifest.echo == EchoConfig(
        steps={
            "import": EchoStep(delay_seconds=1.0),
            "start": EchoStep(
                result="failure",
                error="boom",
                delay_seconds=2.0,
                logs=("a", "b"),
                outputs={"url": "x", "n": 1},
                failure_class=FailureClass.INFRASTRUCTURE,
                block=True,
            ),
            "stop": EchoStep(delay_seconds=0.5),
        }
    )
    assert manifest.echo.step("delete") == EchoStep()
    assert manifest.echo.step("start").failure_class is FailureClass.INFRASTRUCTURE


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        (
            "[echo]\nrestart = {}",
            "echo.restart",
            "unknown key `restart`; allowed keys: import, start, stop, delete, claim",
        ),
        ("[echo]\nstart = 1", "echo.start", "expected a table, got integer 1"),
        (
            '[echo.start]\nresult = "ok"',
            "echo.start.result",
            "unknown result 'ok'; expected one of: success, failure",
        ),
        ("[echo.start]\nresult = 1", "echo.start.result", "expected a string, got integer 1"),
        ("[echo.start]\nerror = 1", "echo.start.error", "expected a string, got integer 1"),
        ('[echo.start]\ndelay = "later"', "echo.start.delay", "invalid duration 'later'"),
        ("[echo.start]\ndelay = -1", "echo.start.delay", "duration must not be negative, got -1"),
        ('[echo.start]\nlogs = "a"', "echo.start.logs", "expected an array, got string 'a'"),
        ('[echo.start]\nlogs = ["a", 1]', "echo.start.logs[1]", "expected a string, got integer 1"),
        ("[echo.start]\noutputs = [1]", "echo.start.outputs", "expected a table, got an array"),
        (
            '[echo.start]\nfailure_class = "oops"',
            "echo.start.failure_class",
            "unknown failure class 'oops'; expected one of: build, config, infrastructure",
        ),
        ('[echo.start]\nblock = "yes"', "echo.start.block", "expected a boolean, got string 'yes'"),
        (
            "[echo.claim]\nretries = 1",
            "echo.claim.retries",
            "unknown key `retries`; allowed keys: result, error, delay, logs, outputs, failure_class, block",
        ),
    ],
)
def test_echo_errors(body: str, key: str, reason: str) -> None:
    error = error_of(f'provisioner = "echo"\n{body}')
    assert error.key == key
    assert error.reason.startswith(reason)


# --- parameters ------------------------------------------------------------------------------------


def param(body: str) -> str:
    return f'provisioner = "echo"\n[[parameters]]\n{body}\n'


def only_param(body: str) -> ParameterSpec:
    (spec,) = parse_manifest(param(body)).parameters
    return spec


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('name = "repo"', ParameterSpec(name="repo", required=True)),
        ('name = "repo"\ndefault = ""', ParameterSpec(name="repo", default="")),
        ('name = "repo"\nrequired = false', ParameterSpec(name="repo")),
        ('name = "repo"\nrequired = true', ParameterSpec(name="repo", required=True)),
        ('name = "_x1"\ndefault = "a"\nrequired = false', ParameterSpec(name="_x1", default="a")),
        (
            'name = "cpu"\ntype = "number"\ndefault = "3.50"',
            ParameterSpec(name="cpu", type=ParameterType.NUMBER, default="3.5"),
        ),
        (
            'name = "cpu"\ntype = "number"\ndefault = 4.0',
            ParameterSpec(name="cpu", type=ParameterType.NUMBER, default="4"),
        ),
        (
            'name = "on"\ntype = "bool"\ndefault = true',
            ParameterSpec(name="on", type=ParameterType.BOOL, default="true"),
        ),
        (
            'name = "l"\ntype = "list(string)"\ndefault = \'["a", "b"]\'',
            ParameterSpec(name="l", type=ParameterType.LIST_STRING, default='["a","b"]'),
        ),
        ('name = "m"\nmutable = false', ParameterSpec(name="m", required=True, mutable=False)),
        (
            'name = "r"\ndefault = "b"\noptions = ["a", "b"]',
            ParameterSpec(name="r", default="b", options=("a", "b")),
        ),
        (
            'name = "r"\nvalidation = { regex = "[a-z]+" }\ndefault = "abc"',
            ParameterSpec(name="r", default="abc", validation_regex="[a-z]+"),
        ),
        (
            'name = "n"\ntype = "number"\nvalidation = { min = 1.5, max = 1.5 }',
            ParameterSpec(
                name="n", type=ParameterType.NUMBER, required=True, validation_min=1.5, validation_max=1.5
            ),
        ),
        (
            'name = "n"\ntype = "number"\nvalidation = { monotonic = "decreasing" }',
            ParameterSpec(
                name="n", type=ParameterType.NUMBER, required=True, validation_monotonic="decreasing"
            ),
        ),
    ],
)
def test_parameter_declarations(body: str, expected: ParameterSpec) -> None:
    assert only_param(body) == expected


def test_parameter_name_required() -> None:
    error = error_of(param('type = "string"'))
    assert (error.key, error.reason) == ("parameters[0].name", "is required")


@pytest.mark.parametrize("name", ["Repo", "1abc", "a-b", "", "a b", "é"])
def test_parameter_bad_name(name: str) -> None:
    error = error_of(param(f'name = "{name}"'))
    assert error.key == "parameters[0].name"
    assert error.reason == f"invalid parameter name {name!r}: must match ^[a-z_][a-z0-9_]*$"


def test_parameter_name_wrong_type() -> None:
    error = error_of(param("name = 3"))
    assert (error.key, error.reason) == ("parameters[0].name", "expected a string, got integer 3")


def test_parameter_duplicate_name() -> None:
    error = error_of(param('name = "a"\n[[parameters]]\nname = "b"\n[[parameters]]\nname = "a"'))
    assert (error.key, error.reason) == (
        "parameters[2].name",
        "duplicate parameter `a` (also declared at parameters[0])",
    )


def test_parameter_unknown_key() -> None:
    error = error_of(param('name = "cpu"\nminimum = 1'))
    assert error.key == "parameters[cpu].minimum"
    assert error.reason == (
        "unknown key `minimum`; allowed keys: name, type, required, default, mutable, options, description, "
        "display_name, validation"
    )


def test_parameter_unknown_validation_key() -> None:
    error = error_of(param('name = "cpu"\nvalidation = { regexp = "x" }'))
    assert error.key == "parameters[cpu].validation.regexp"
    assert error.reason == "unknown key `regexp`; allowed keys: regex, min, max, monotonic, error"


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ('type = "int"', "type", "unknown type 'int'; expected one of: string, number, bool, list(string)"),
        ("type = 1", "type", "expected a string, got integer 1"),
        ('required = "yes"', "required", "expected a boolean, got string 'yes'"),
        ("mutable = 0", "mutable", "expected a boolean, got integer 0"),
        ("description = []", "description", "expected a string, got an array"),
        ("display_name = 1", "display_name", "expected a string, got integer 1"),
        ('options = "a"', "options", "expected an array, got string 'a'"),
        ("validation = 1", "validation", "expected a table, got integer 1"),
        ("validation = { regex = 1 }", "validation.regex", "expected a string, got integer 1"),
        ('validation = { regex = "(" }', "validation.regex", "invalid regular expression '('"),
        ("validation = { error = 1 }", "validation.error", "expected a string, got integer 1"),
        ("default = 3", "default", "expected a string, got 3"),
        ('default = "x"\nrequired = true', "required", "a parameter with a default cannot be required"),
        # min / max / monotonic only for numbers
        (
            "validation = { min = 1 }",
            "validation.min",
            "only allowed for number parameters (this one is string)",
        ),
        (
            "validation = { max = 1 }",
            "validation.max",
            "only allowed for number parameters (this one is string)",
        ),
        (
            'type = "bool"\nvalidation = { monotonic = "increasing" }',
            "validation.monotonic",
            "only allowed for number parameters (this one is bool)",
        ),
        (
            'type = "list(string)"\nvalidation = { min = 1 }',
            "validation.min",
            "only allowed for number parameters (this one is list(string))",
        ),
        (
            'type = "number"\nvalidation = { min = "1" }',
            "validation.min",
            "expected a number, got string '1'",
        ),
        (
            'type = "number"\nvalidation = { max = true }',
            "validation.max",
            "expected a number, got boolean true",
        ),
        (
            'type = "number"\nvalidation = { min = 5, max = 2 }',
            "validation.min",
            "min (5) is greater than max (2)",
        ),
        (
            'type = "number"\nvalidation = { monotonic = "up" }',
            "validation.monotonic",
            "unknown value 'up'; expected one of: increasing, decreasing",
        ),
        # default must be of the type and validate
        ('type = "number"\ndefault = "many"', "default", "expected a number, got 'many'"),
        ('type = "number"\ndefault = true', "default", "expected a number, got True"),
        ('type = "bool"\ndefault = "yes"', "default", "expected a bool (true or false), got 'yes'"),
        ('type = "list(string)"\ndefault = [1]', "default", "expected a list of strings"),
        ('type = "number"\ndefault = 9\nvalidation = { max = 8 }', "default", "9 is above the maximum 8"),
        ('type = "number"\ndefault = 0\nvalidation = { min = 1 }', "default", "0 is below the minimum 1"),
        (
            'default = "http://x"\nvalidation = { regex = "https://.*", error = "https only" }',
            "default",
            "'http://x' does not match 'https://.*': https only",
        ),
        ('default = "c"\noptions = ["a", "b"]', "default", "'c' is not one of: a, b"),
        (
            'type = "list(string)"\ndefault = ["a", "z"]\noptions = ["a", "b"]',
            "default",
            "'z' is not one of: a, b",
        ),
        # options: canonical, unique, and themselves valid
        ('type = "number"\noptions = [1, "x"]', "options[1]", "expected a number, got 'x'"),
        ('type = "number"\noptions = [1, 1.0]', "options[1]", "duplicate option '1'"),
        ('options = ["a", "a"]', "options[1]", "duplicate option 'a'"),
        (
            'type = "number"\noptions = [1, 9]\nvalidation = { max = 8 }',
            "options[1]",
            "9 is above the maximum 8",
        ),
        (
            'options = ["ok", "NO"]\nvalidation = { regex = "[a-z]+" }',
            "options[1]",
            "'NO' does not match '[a-z]+'",
        ),
        ('type = "list(string)"\noptions = ["a", 1]', "options[1]", "expected a string, got 1"),
        (
            'type = "list(string)"\noptions = ["ok", "NO"]\nvalidation = { regex = "[a-z]+" }',
            "options[1]",
            "'NO' does not match '[a-z]+'",
        ),
    ],
)
def test_parameter_errors(body: str, key: str, reason: str) -> None:
    error = error_of(param(f'name = "p"\n{body}'))
    assert error.key == f"parameters[p].{key}"
    assert error.reason.startswith(reason)


def test_list_options_are_elements() -> None:
    spec = only_param('name = "l"\ntype = "list(string)"\noptions = ["a", "b"]\ndefault = ["b", "a"]')
    assert spec.options == ("a", "b")
    assert spec.default == '["b","a"]'


# --- presets ---------------------------------------------------------------------------------------

PARAMS = """
provisioner = "echo"
[[parameters]]
name = "repo"
[[parameters]]
name = "cpu"
type = "number"
default = 2
validation = { min = 1, max = 8 }
[[parameters]]
name = "region"
default = "eu"
options = ["eu", "us"]
"""


def preset(body: str) -> str:
    return f'{PARAMS}\n[[presets]]\nname = "small"\n{body}\n'


def only_preset(body: str) -> PresetSpec:
    (result,) = parse_manifest(preset(body)).presets
    return result


def test_preset_minimal() -> None:
    assert only_preset("") == PresetSpec(name="small", parameters={})


def test_preset_values_are_canonical() -> None:
    result = only_preset('parameters = { cpu = 4.0, region = "us", repo = "r" }\ndescription = "d"')
    assert result == PresetSpec(
        name="small", parameters={"cpu": "4", "region": "us", "repo": "r"}, description="d"
    )


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        (
            "parameters = { nope = 1 }",
            "presets[small].parameters.nope",
            "unknown parameter; declared parameters: repo, cpu, region",
        ),
        ('parameters = { cpu = "x" }', "presets[small].parameters.cpu", "expected a number, got 'x'"),
        ("parameters = { cpu = 9 }", "presets[small].parameters.cpu", "9 is above the maximum 8"),
        (
            'parameters = { region = "mars" }',
            "presets[small].parameters.region",
            "'mars' is not one of: eu, us",
        ),
        ("parameters = { repo = 1 }", "presets[small].parameters.repo", "expected a string, got 1"),
        ("parameters = [1]", "presets[small].parameters", "expected a table, got an array"),
        ("description = 1", "presets[small].description", "expected a string, got integer 1"),
        (
            "colour = 1",
            "presets[small].colour",
            "unknown key `colour`; allowed keys: name, description, parameters, prebuilds",
        ),
    ],
)
def test_preset_errors(body: str, key: str, reason: str) -> None:
    error = error_of(preset(body))
    assert (error.key, error.reason) == (key, reason)


def test_preset_unknown_parameter_without_declarations() -> None:
    error = error_of('provisioner = "echo"\n[[presets]]\nname = "a"\nparameters = { x = 1 }')
    assert error.key == "presets[a].parameters.x"
    assert error.reason == "unknown parameter; this template version declares no parameters"


def test_preset_name_required() -> None:
    error = error_of('provisioner = "echo"\n[[presets]]\ndescription = "x"')
    assert (error.key, error.reason) == ("presets[0].name", "is required")


@pytest.mark.parametrize(
    ("value", "reason"), [("1", "expected a string, got integer 1"), ('" "', "must not be empty")]
)
def test_preset_bad_name(value: str, reason: str) -> None:
    error = error_of(f'provisioner = "echo"\n[[presets]]\nname = {value}')
    assert (error.key, error.reason) == ("presets[0].name", reason)


def test_preset_duplicate_name() -> None:
    error = error_of('provisioner = "echo"\n[[presets]]\nname = "a"\n[[presets]]\nname = "a"')
    assert (error.key, error.reason) == (
        "presets[1].name",
        "duplicate preset `a` (also declared at presets[0])",
    )


# --- prebuilds -------------------------------------------------------------------------------------


def prebuilds(body: str) -> str:
    return preset(f"[presets.prebuilds]\n{body}")


def only_prebuilds(body: str) -> PrebuildSettings | None:
    return parse_manifest(prebuilds(body)).presets[0].prebuilds


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("instances = 0", PrebuildSettings(instances=0)),
        ("instances = 3", PrebuildSettings(instances=3)),
        ('instances = 1\nttl = "8h"', PrebuildSettings(instances=1, ttl_seconds=28800)),
        ("instances = 1\nttl = 90", PrebuildSettings(instances=1, ttl_seconds=90)),
        ('instances = 1\nttl = "0s"', PrebuildSettings(instances=1, ttl_seconds=0)),
        ('instances = 1\nttl = "1h30m"', PrebuildSettings(instances=1, ttl_seconds=5400)),
        ('instances = 1\ntimezone = "Europe/Paris"', PrebuildSettings(instances=1, timezone="Europe/Paris")),
        ('instances = 1\ntimezone = "UTC"', PrebuildSettings(instances=1)),
        ("instances = 1\nschedule = []", PrebuildSettings(instances=1)),
        (
            'instances = 1\nschedule = [{ cron = "* 8-18 * * 1-5", instances = 5 },\n'
            '  { cron = "* */2 1 jan,feb *", instances = 0 }]',
            PrebuildSettings(
                instances=1,
                schedules=(ScheduleSpec("* 8-18 * * 1-5", 5), ScheduleSpec("* */2 1 jan,feb *", 0)),
            ),
        ),
    ],
)
def test_prebuilds(body: str, expected: PrebuildSettings) -> None:
    assert only_prebuilds(body) == expected


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        ('ttl = "1h"', "instances", "is required"),
        ("instances = -1", "instances", "must be >= 0, got -1"),
        ("instances = 1.5", "instances", "expected an integer, got float 1.5"),
        ('instances = "3"', "instances", "expected an integer, got string '3'"),
        ("instances = true", "instances", "expected an integer, got boolean true"),
        (
            "instances = 1\nsize = 2",
            "size",
            "unknown key `size`; allowed keys: instances, ttl, timezone, schedule",
        ),
        ('instances = 1\nttl = "forever"', "ttl", "invalid duration 'forever'"),
        ("instances = 1\nttl = -5", "ttl", "duration must not be negative, got -5"),
        ('instances = 1\nttl = "1500ms"', "ttl", "must be a whole number of seconds, got 1.5"),
        ("instances = 1\nttl = []", "ttl", "expected a number, got an array"),
        ('instances = 1\ntimezone = "Mars/Olympus"', "timezone", "unknown time zone 'Mars/Olympus'"),
        ('instances = 1\ntimezone = "Europe"', "timezone", "unknown time zone 'Europe'"),
        ('instances = 1\ntimezone = "../etc/passwd"', "timezone", "unknown time zone '../etc/passwd'"),
        ('instances = 1\ntimezone = ""', "timezone", "unknown time zone ''"),
        ("instances = 1\ntimezone = 1", "timezone", "expected a string, got integer 1"),
        ('instances = 1\nschedule = { cron = "* * * * *" }', "schedule", "expected an array, got a table"),
        ("instances = 1\nschedule = [1]", "schedule[0]", "expected a table, got integer 1"),
        ("instances = 1\nschedule = [{ instances = 1 }]", "schedule[0].cron", "is required"),
        ('instances = 1\nschedule = [{ cron = "* * * * *" }]', "schedule[0].instances", "is required"),
        (
            'instances = 1\nschedule = [{ cron = "* * * * *", instances = 1, tz = "UTC" }]',
            "schedule[0].tz",
            "unknown key `tz`; allowed keys: cron, instances",
        ),
        (
            'instances = 1\nschedule = [{ cron = "* * * * *", instances = -2 }]',
            "schedule[0].instances",
            "must be >= 0, got -2",
        ),
        ("instances = 1000000000000", "instances", "must be at most 1000, got 1000000000000"),
        ('instances = 1\nttl = "400d"', "ttl", "must be at most 365d (31536000 seconds), got 34560000"),
        (
            'instances = 1\nschedule = [{ cron = "* * * * *", instances = 5000 }]',
            "schedule[0].instances",
            "must be at most 1000, got 5000",
        ),
        (
            'instances = 1\nschedule = [{ cron = "* * * * *", instances = 1 }, { cron = 5, instances = 1 }]',
            "schedule[1].cron",
            "expected a string, got integer 5",
        ),
    ],
)
def test_prebuilds_errors(body: str, key: str, reason: str) -> None:
    error = error_of(prebuilds(body))
    assert error.key == f"presets[small].prebuilds.{key}"
    assert error.reason.startswith(reason)


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("* * * *", "cron '* * * *' must have 5 fields"),
        ("* * * * * *", "cron '* * * * * *' must have 5 fields"),
        ("@hourly", "cron '@hourly' must have 5 fields"),
        ("", "cron '' must have 5 fields"),
        ("0 8 * * *", "cron '0 8 * * *': the minute field must be '*'"),
        ("*/5 8 * * *", "cron '*/5 8 * * *': the minute field must be '*'"),
        ("* 25 * * *", "invalid cron '* 25 * * *': Bad hour"),
        ("* 18-8 * * *", "invalid cron '* 18-8 * * *': Bad hour"),
        ("* * 32 * *", "invalid cron '* * 32 * *': Bad day-of-month"),
        ("* * * 13 *", "invalid cron '* * * 13 *': Bad month"),
        ("* * * * mon-xx", "invalid cron '* * * * mon-xx': Bad day-of-week"),
        ("* x * * *", "invalid cron '* x * * *': Bad hour"),
    ],
)
def test_bad_cron(cron: str, reason: str) -> None:
    error = error_of(prebuilds(f'instances = 1\nschedule = [{{ cron = "{cron}", instances = 1 }}]'))
    assert error.key == "presets[small].prebuilds.schedule[0].cron"
    assert error.reason.startswith(reason)


# --- check_presets ---------------------------------------------------------------------------------


def test_check_presets_against_other_parameters() -> None:
    presets = [PresetSpec(name="small", parameters={"cpu": "4", "repo": "r"})]
    check_presets([ParameterSpec("cpu", ParameterType.NUMBER), ParameterSpec("repo")], presets)

    with pytest.raises(ManifestError) as info:
        check_presets([ParameterSpec("cpu", ParameterType.NUMBER, validation_max=2)], presets, file="x.toml")
    assert str(info.value) == "x.toml: presets[small].parameters.cpu: 4 is above the maximum 2"

    with pytest.raises(ManifestError) as info:
        check_presets([ParameterSpec("cpu", ParameterType.NUMBER)], presets)
    assert info.value.key == "presets[small].parameters.repo"
    assert info.value.reason == "unknown parameter; declared parameters: cpu"
    assert info.value.file == MANIFEST_FILE

    with pytest.raises(ManifestError) as info:
        check_presets([ParameterSpec("cpu", ParameterType.BOOL), ParameterSpec("repo")], presets)
    assert info.value.key == "presets[small].parameters.cpu"
    assert info.value.reason == "expected a bool (true or false), got '4'"


def test_check_presets_duplicate_names() -> None:
    presets = [PresetSpec(name="a", parameters={}), PresetSpec(name="a", parameters={})]
    with pytest.raises(ManifestError) as info:
        check_presets([], presets)
    assert (info.value.key, info.value.reason) == ("presets[a]", "duplicate preset `a`")


def test_check_presets_accepts_empty() -> None:
    check_presets([], [])
    check_presets([ParameterSpec("a", required=True)], [PresetSpec(name="p", parameters={})])


# --- warnings --------------------------------------------------------------------------------------


def test_preset_warnings() -> None:
    text = """
provisioner = "echo"
[[parameters]]
name = "repo"
[[parameters]]
name = "branch"
[[parameters]]
name = "cpu"
default = "2"
[[parameters]]
name = "note"
required = false

[[presets]]
name = "small"
[presets.prebuilds]
instances = 1

[[presets]]
name = "filled"
parameters = { repo = "r", branch = "main" }
[presets.prebuilds]
instances = 1

[[presets]]
name = "nopool"

[[presets]]
name = "zero"
parameters = { repo = "r" }
prebuilds = { instances = 0 }
"""
    tail = "unset: its prebuilds will fail until a value is set"
    assert preset_warnings(parse_manifest(text)) == [
        f"preset `small` has prebuilds but leaves required parameter `repo` {tail}",
        f"preset `small` has prebuilds but leaves required parameter `branch` {tail}",
        f"preset `zero` has prebuilds but leaves required parameter `branch` {tail}",
    ]


def test_overlapping_schedules_are_a_warning_at_push() -> None:
    text = """
provisioner = "echo"
[[presets]]
name = "day"
[presets.prebuilds]
instances = 1
schedule = [{ cron = "* 8-18 * * 1-5", instances = 4 }, { cron = "* 18-20 * * *", instances = 2 }]

[[presets]]
name = "tiled"
[presets.prebuilds]
instances = 1
schedule = [{ cron = "* 8-18 * * 1-5", instances = 4 }, { cron = "* 19-23 * * *", instances = 2 }]
"""
    assert preset_warnings(parse_manifest(text)) == [
        "preset `day`: schedules '* 8-18 * * 1-5' and '* 18-20 * * *' overlap (both cover Mon 18:00): "
        "using instances"
    ]


def test_preset_warnings_none_without_parameters() -> None:
    text = 'provisioner = "echo"\n[[presets]]\nname = "p"\nprebuilds = { instances = 2 }\n'
    assert preset_warnings(parse_manifest(text)) == []


def test_preset_warnings_built_by_hand() -> None:
    manifest = TemplateManifest(
        provisioner="echo",
        parameters=(ParameterSpec("repo", required=True), ParameterSpec("opt")),
        presets=(PresetSpec("p", {}, PrebuildSettings(instances=1)), PresetSpec("q", {})),
    )
    assert preset_warnings(manifest) == [
        "preset `p` has prebuilds but leaves required parameter `repo` unset: its prebuilds will fail until "
        "a value is set"
    ]


# --- every integer, float and nesting depth is bounded (bad input cannot kill or stall) -------------

_ECHO = 'provisioner = "echo"\n'
_NUMBER_PARAMETER = _ECHO + '[[parameters]]\nname = "cpu"\ntype = "number"\n'


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (
            _ECHO + "[echo.import]\noutputs = { n = 9223372036854775808 }\n",
            "echo.import.outputs.n",
            "integer out of range",
        ),
        (
            _ECHO + "[echo.import]\noutputs = { n = -9223372036854775809 }\n",
            "echo.import.outputs.n",
            "integer out of range",
        ),
        (
            _ECHO + "[echo.import]\noutputs = { n = [1, " + "1" * 400 + "] }\n",
            "echo.import.outputs.n[1]",
            "integer out of range",
        ),
        (_ECHO + "[echo.import]\noutputs = { n = nan }\n", "echo.import.outputs.n", "finite"),
        (_ECHO + "[echo.import]\ndelay = inf\n", "echo.import.delay", "finite"),
        (_ECHO + "[echo.import]\ndelay = " + "1" * 30 + "\n", "echo.import.delay", "integer out of range"),
        (_ECHO + "[echo.import]\ndelay = 86401\n", "echo.import.delay", "at most 1d"),
        (_ECHO + '[echo.import]\ndelay = "inf"\n', "echo.import.delay", "finite"),
        ('provisioner = "exec"\n[exec]\ncreate = "c.sh"\ntimeout = "8d"\n', "exec.timeout", "at most 7d"),
        ('provisioner = "terraform"\n[terraform]\ntimeout = 1e300\n', "terraform.timeout", "at most 7d"),
        (
            'provisioner = "terraform"\n[terraform.vars]\nbig = 1' + "0" * 20 + "\n",
            "terraform.vars.big",
            "64-bit",
        ),
        (
            _NUMBER_PARAMETER + "validation = { min = " + "9" * 300 + " }\n",
            "parameters[cpu].validation.min",
            "64-bit",
        ),
        (_NUMBER_PARAMETER + "validation = { max = inf }\n", "parameters[cpu].validation.max", "finite"),
        (
            _NUMBER_PARAMETER + 'default = "' + "1" * 5000 + '"\n',
            "parameters[cpu].default",
            "number out of range",
        ),
        (_NUMBER_PARAMETER + 'options = ["1e999"]\n', "parameters[cpu].options[0]", "number out of range"),
        (
            _ECHO + '[[presets]]\nname = "p"\n[presets.prebuilds]\ninstances = 1\nttl = 1' + "0" * 25 + "\n",
            "presets[p].prebuilds.ttl",
            "integer out of range",
        ),
    ],
)
def test_out_of_range_values_are_refused_naming_the_key(text: str, key: str, reason: str) -> None:
    error = error_of(text)
    assert error.key == key, error
    assert reason in error.reason, error


def test_a_5000_digit_integer_is_refused_naming_its_key_and_line() -> None:
    # tomllib hands the digits to int(), which refuses more than 4300: a ValueError, once a 500 on push.
    error = error_of(_ECHO + "\n[echo.start]\noutputs = { n = " + "7" * 5000 + " }\n")
    assert error.key == "echo.start.outputs"
    assert error.reason.startswith("line 4: integer out of range")


def test_a_5000_deep_value_is_refused_naming_its_key_and_line() -> None:
    # tomllib recurses once per level: a RecursionError, once a 500 on push.
    error = error_of(
        _ECHO + '[echo.import]\nlogs = ["[#"]\noutputs = { n = ' + "[" * 5000 + "]" * 5000 + " }\n"
    )
    assert error.key == "echo.import.outputs"
    assert error.reason == f"line 4: nested more than {MAX_NESTING} levels deep"


def test_a_value_nested_past_the_limit_but_parseable_is_refused_with_its_full_key() -> None:
    deep = "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1)
    error = error_of(_ECHO + "[echo.import]\noutputs = { n = " + deep + " }\n")
    assert error.key.startswith("echo.import.outputs.n[0]")
    assert error.reason == f"nested more than {MAX_NESTING} levels deep"
    ok = "[" * 20 + "]" * 20
    assert parse_manifest(_ECHO + "[echo.import]\noutputs = { n = " + ok + " }\n").echo is not None


def test_the_64_bit_bounds_themselves_are_accepted() -> None:
    text = _ECHO + "[echo.import]\noutputs = { hi = 9223372036854775807, lo = -9223372036854775808 }\n"
    assert parse_manifest(text).echo is not None
