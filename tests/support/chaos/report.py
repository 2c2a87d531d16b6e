"""What a chaos run found: per-scenario counts, recoveries against their bounds, and the table."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.chaos.params import ChaosParams

# -- results -----------------------------------------------------------------------------------------------


@dataclass
class Recovery:
    seconds: float | None
    bound: float

    @property
    def ok(self) -> bool:
        return self.seconds is not None and self.seconds <= self.bound


@dataclass
class ScenarioStats:
    name: str
    faults: int = 0
    samples: int = 0
    over_target: int = 0
    double_claims: int = 0
    lost_workspaces: int = 0
    lost_completions: int = 0
    stuck_jobs: int = 0
    daemons_expected: int = 0
    daemons_seen: int = 0
    daemons_checked: bool = False
    daemons_lost: int = 0
    """Daemons first found lost after this scenario (killed ones are expected back with their replica)."""
    recoveries: list[Recovery] = field(default_factory=list)
    rejoined: bool | None = None
    rejoin_label: str = "rejoined"
    """What ``rejoined`` says: the partitioned daemon rejoined, or the restarted one took work."""
    notes: list[str] = field(default_factory=list)
    metric_daemons: str = ""

    @property
    def violations(self) -> list[str]:
        found = []
        for label, value in (
            ("samples over target", self.over_target),
            ("double claims", self.double_claims),
            ("lost workspaces", self.lost_workspaces),
            ("lost completions", self.lost_completions),
            ("stuck jobs", self.stuck_jobs),
            ("daemons lost", self.daemons_lost),
        ):
            if value:
                found.append(f"{value} {label}")
        missed = [r for r in self.recoveries if not r.ok]
        if missed:
            worst = max((r.seconds or float("inf")) for r in missed)
            found.append(
                f"{len(missed)} of {len(self.recoveries)} recoveries over the {missed[0].bound:.0f} s bound "
                f"(worst {'never' if worst == float('inf') else f'{worst:.1f} s'})"
            )
        if self.rejoined is False:
            found.append(f"{self.rejoin_label}: no")
        return found

    def recovery_cell(self) -> str:
        if self.rejoined is not None and not self.recoveries:
            return f"{self.rejoin_label}: " + ("yes" if self.rejoined else "no")
        if not self.recoveries:
            return "-"
        times = [r.seconds for r in self.recoveries]
        done = [t for t in times if t is not None]
        worst = "never" if len(done) < len(times) else f"{max(done):.1f} s"
        cell = f"max {worst} (bound {self.recoveries[0].bound:.0f} s"
        if len(times) > 1:
            within = sum(r.ok for r in self.recoveries)
            cell += f", {within}/{len(times)} within"
        cell += ")"
        if self.rejoined is not None:
            cell += f"; {self.rejoin_label}: " + ("yes" if self.rejoined else "no")
        return cell


@dataclass
class ClaimRecord:
    user: str
    user_id: str
    status: int
    workspace_id: str | None
    claimed: bool
    at: float
    error: str = ""
    name: str = ""
    checked: bool = False
    took_effect: bool | None = None
    """For a claim that got no answer: whether its workspace exists anyway (the user's, under its name)."""


@dataclass
class ChaosReport:
    params: ChaosParams
    scenarios: list[ScenarioStats]
    workdir: Path
    started_at: float
    ended_at: float
    samples: int
    claims: list[ClaimRecord]
    detail: list[str]

    @property
    def violations(self) -> list[str]:
        return [f"{s.name}: {v}" for s in self.scenarios for v in s.violations]

    def prune(self) -> None:
        """Keep the logs (the table points to them), drop the databases and data directories."""
        for entry in self.workdir.iterdir():
            if entry.name == "logs":
                continue
            if entry.name == "pg" and (entry / "postgres.log").exists():
                (self.workdir / "logs" / "postgres.log").write_bytes((entry / "postgres.log").read_bytes())
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def claim_summary(self) -> str:
        total = len(self.claims)
        claimed = sum(1 for c in self.claims if c.status == 201 and c.claimed)
        cold = sum(1 for c in self.claims if c.status == 201 and not c.claimed)
        errors: dict[str, int] = {}
        for c in self.claims:
            if c.status != 201:
                key = str(c.status) if c.status else "no answer"
                errors[key] = errors.get(key, 0) + 1
        error_text = ", ".join(f"{n}× {k}" for k, n in sorted(errors.items())) or "none"
        unanswered = [c for c in self.claims if c.status == 0 and c.took_effect is not None]
        effect = ""
        if unanswered:
            took = sum(1 for c in unanswered if c.took_effect)
            effect = (
                f" ({took} of the {len(unanswered)} unanswered ones took effect: the workspace is the user's)"
            )
        return (
            f"{total} claims: {claimed} claimed a prebuild, {cold} cold builds, errors: {error_text}{effect}"
        )

    def table(self) -> str:
        header = (
            "| scenario | faults | over-target samples | double claims | lost workspaces | lost completions "
            "| stuck jobs | daemons lost | back at target / rejoined | result |"
        )
        lines = [header, "|" + "---|" * 10]
        for s in self.scenarios:
            daemons = (
                f"{s.daemons_lost} ({s.daemons_seen}/{s.daemons_expected} alive)"
                if s.daemons_checked
                else "-"
            )
            verdict = "ok" if not s.violations else "VIOLATION"
            lines.append(
                f"| {s.name} | {s.faults} | {s.over_target} / {s.samples} | {s.double_claims} | "
                f"{s.lost_workspaces} | {s.lost_completions} | {s.stuck_jobs} | {daemons} | "
                f"{s.recovery_cell()} | {verdict} |"
            )
        return "\n".join(lines)

    def text(self) -> str:
        out = [self.table(), "", self.claim_summary()]
        out.append(
            f"{self.samples} poller samples over {self.ended_at - self.started_at:.0f} s; logs in {self.workdir}"
        )
        notes = [f"- {s.name}: {n}" for s in self.scenarios for n in s.notes]
        if notes:
            out += ["", "Notes:", *notes]
        if self.detail:
            out += ["", "Violation detail:", *(f"- {d}" for d in self.detail)]
        if self.violations:
            out += ["", "VIOLATIONS:", *(f"- {v}" for v in self.violations)]
        return "\n".join(out)
