"""The size limits of what users, templates and daemons send: one table, read by the API models, the manifest
validation, the parameter rules, the exec provisioner and the CLI, so that each refuses the same sizes.

Parameter values reach a build as environment variables (exec) or a tfvars file (Terraform): Linux refuses an
environment string over 128 KiB and an environment over a few MB ("Argument list too long"), so a value and the
values of one build together are bounded well below that, and refused when given, not when the build runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Unit = Literal["bytes", "characters", "lines", "entries"]


@dataclass(frozen=True)
class Limit:
    what: str
    """What is bounded, as an error names it: "a parameter value"."""
    maximum: int
    unit: Unit

    def size(self, value: str) -> int:
        """``value``'s size in this limit's unit (bytes are UTF-8)."""
        return len(value.encode("utf-8", "surrogatepass")) if self.unit == "bytes" else len(value)

    def exceeded(self, size: int) -> str | None:
        """None when ``size`` fits, else the reason: "12345 bytes; the limit is 8192 bytes"."""
        if size <= self.maximum:
            return None
        return f"{size} {self.unit}; the limit for {self.what} is {self.maximum} {self.unit}"

    def check(self, value: str) -> str | None:
        return self.exceeded(self.size(value))


KIB = 1024

PARAMETER_VALUE = Limit("a parameter value", 32 * KIB, "bytes")
PARAMETER_VALUES_TOTAL = Limit("the parameter values of one build together", 256 * KIB, "bytes")
PARAMETER_COUNT = Limit("parameters in one request", 200, "entries")
PARAMETER_NAME = Limit("a parameter name", 64, "characters")

NAME = Limit("a name", 64, "characters")
"""Templates, workspaces, versions, presets."""
USERNAME = Limit("a username", 63, "characters")
TOKEN_NAME = Limit("a token name", 100, "characters")
SHORT_TEXT = Limit("a display name or e-mail", 200, "characters")
DESCRIPTION = Limit("a description or message", 2000, "characters")

LOG_LINE = Limit("a log line", 64 * KIB, "characters")
"""The process runner splits longer output lines at this size, so a daemon never sends a longer one."""
LOG_POST_LINES = Limit("the lines of one log post", 5000, "lines")
LOG_POST_TOTAL = Limit("the output of one log post", 4 * KIB * KIB, "characters")

LIMITS: tuple[Limit, ...] = (
    PARAMETER_VALUE,
    PARAMETER_VALUES_TOTAL,
    PARAMETER_COUNT,
    PARAMETER_NAME,
    NAME,
    USERNAME,
    TOKEN_NAME,
    SHORT_TEXT,
    DESCRIPTION,
    LOG_LINE,
    LOG_POST_LINES,
    LOG_POST_TOTAL,
)
"""Every limit, for the documentation test."""


def parameter_values_total(values: dict[str, str]) -> int:
    """The size that counts towards ``PARAMETER_VALUES_TOTAL``: names and values, as the environment holds them."""
    return sum(PARAMETER_VALUE.size(name) + PARAMETER_VALUE.size(value) for name, value in values.items())
