"""The reader of `variable` blocks: the language's lexical corners, literal defaults, JSON files, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from prebuildd.provisioner.terraform_hcl import (
    NO_DEFAULT,
    UNREADABLE,
    HclError,
    NotLiteral,
    expression_text,
    literal_value,
    read_variables,
    tokenize,
)
from tests.support.terraform import write_files

TRICKY = r"""
# a comment with variable "nope" {}
// another one
/* a block comment
   variable "nope2" {} */
locals {
  brace = "}"
  template = "${jsonencode({ a = "}" })}"
  heredoc = <<EOT
variable "nope3" {
}
EOT
}

variable "name" {
  type        = string
  default     = "x\\.y \"q\" \u00e9 $${literal}"
  description = <<-EOT
    The name.
      Indented.
    EOT
  validation {
    condition     = can(regex("^[a-z]+$", var.name)) # trailing comment
    error_message = "lowercase letters only"
  }
  validation {
    condition     = length(var.name) < 10
    error_message = "short, ${var.name} is not"
  }
}

variable "tags" { type = list( string ) }

variable "shape" {
  type = object({
    a = string
    b = list(number)
  })
  default = {
    a   = "1"
    "b" : [1, -2.5e1, true, null],
  }
}

variable "computed" { default = "a${var.other}" }
variable "empty" {}

resource "terraform_data" "x" {
  input = {
    for k, v in var.shape : k => v
  }
}
"""


def test_variables_are_found_in_a_file_full_of_traps(tmp_path: Path) -> None:
    write_files(tmp_path, {"main.tf": TRICKY})
    found = {v.name: v for v in read_variables(tmp_path)}
    assert list(found) == ["name", "tags", "shape", "computed", "empty"]

    name = found["name"]
    assert (name.file, name.line, name.type) == ("main.tf", 15, "string")
    assert name.default == 'x\\.y "q" é ${literal}'
    assert name.description == "The name.\n  Indented.\n"
    assert [expression_text(v.condition) for v in name.validations] == [
        'can(regex("^[a-z]+$",var.name))',
        "length(var.name)<10",
    ]
    assert [v.error_message for v in name.validations] == ["lowercase letters only", None]

    assert found["tags"].type == "list(string)"
    assert found["tags"].default is NO_DEFAULT
    assert found["shape"].type == "object({a=string\nb=list(number)})".replace("\n", "")
    assert found["shape"].default == {"a": "1", "b": [1, -25.0, True, None]}
    assert found["computed"].default is UNREADABLE
    assert found["empty"].type is None and found["empty"].default is NO_DEFAULT


def test_json_files_and_override_files(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "b.tf.json": '{"variable": {"count": {"type": "number", "default": 3, "validation": '
            '[{"condition": "${var.count >= 1}", "error_message": "at least one"}]}}}',
            "a.tf": 'variable "region" {\n  default = "eu"\n}\n',
            "region_override.tf": 'variable "region" {\n  description = "Where."\n}\n',
            "notes.txt": 'variable "ignored" {}',
        },
    )
    found = {v.name: v for v in read_variables(tmp_path)}
    assert list(found) == ["region", "count"]
    assert (found["region"].default, found["region"].description) == ("eu", "Where.")
    count = found["count"]
    assert (count.file, count.type, count.default) == ("b.tf.json", "number", 3)
    assert expression_text(count.validations[0].condition) == "var.count>=1"
    assert count.validations[0].error_message == "at least one"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"a"', "a"),
        ("-3", -3),
        ("1.5e2", 150.0),
        ("[]", []),
        ('["a", "b",]', ["a", "b"]),
        ('{ a = 1, "b" = [true] }', {"a": 1, "b": [True]}),
        ("{\n  x = null\n}", {"x": None}),
    ],
)
def test_literal_values(text: str, value: object) -> None:
    assert literal_value(tokenize(text)) == value


@pytest.mark.parametrize("text", ["var.x", '"${var.x}"', 'upper("a")', "1 + 2", "{ (var.k) = 1 }"])
def test_computed_values_are_not_literals(text: str) -> None:
    with pytest.raises(NotLiteral):
        literal_value(tokenize(text))


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('variable "a" {\n  default = "open\n}\n', 2, "unterminated string"),
        ('variable "a" {\n  default = "\\q"\n}\n', 2, "invalid escape"),
        ('variable "a" {\n  default = <<EOT\nno end\n', 2, "never closed"),
        ('variable "a" {\n  type = string\n', 2, "never closed"),
    ],
)
def test_broken_files_name_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    write_files(tmp_path, {"bad.tf": text})
    with pytest.raises(HclError) as info:
        read_variables(tmp_path)
    assert (info.value.file, info.value.line) == ("bad.tf", line)
    assert reason in info.value.reason
