"""A stand-in for the `terraform` binary, for protocol tests: it plays what a scenario file says.

``FAKE_TERRAFORM_SCENARIO`` names a JSON file keyed by subcommand (``init``, ``apply``, ``destroy``, ``output``,
``validate``); each entry may hold:

- ``stdout`` / ``stderr``: lines to print (a string as it is, anything else as one JSON line);
- ``state``: text to write as ``terraform.tfstate`` (before exiting);
- ``sleep``: seconds to sleep after printing; ``on_int``: what SIGINT does meanwhile: ``"exit"`` (print
  "interrupted", exit 1) or ``"ignore"``; ``pid_file``: where to write its pid first;
- ``signal``: a signal name to kill itself with after printing; ``exit``: the exit status (default 0).

A subcommand the scenario does not name succeeds silently. ``FAKE_TERRAFORM_LOG`` names a file to which each
call appends one JSON line: argv, the working directory, the environment, the tfvars and state files it found.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    argv = sys.argv[1:]
    command = argv[0] if argv else ""
    cwd = Path.cwd()
    log = os.environ.get("FAKE_TERRAFORM_LOG")
    if log:
        tfvars = cwd / "prebuildd.auto.tfvars.json"
        state = cwd / "terraform.tfstate"
        record = {
            "argv": argv,
            "cwd": str(cwd),
            "env": dict(os.environ),
            "tfvars": json.loads(tfvars.read_text()) if tfvars.exists() else None,
            "state": state.read_text() if state.exists() else None,
        }
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
    scenario_file = os.environ.get("FAKE_TERRAFORM_SCENARIO")
    scenario = json.loads(Path(scenario_file).read_text()) if scenario_file else {}
    step = scenario.get(command, {})
    for stream, name in ((sys.stdout, "stdout"), (sys.stderr, "stderr")):
        for line in step.get(name, []):
            stream.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
        stream.flush()
    if "state" in step:
        (cwd / "terraform.tfstate").write_text(step["state"])
    if step.get("pid_file"):
        Path(step["pid_file"]).write_text(str(os.getpid()))
    if step.get("on_int") == "exit":

        def interrupted(signum: int, frame: object) -> None:
            print("interrupted", flush=True)
            sys.exit(1)

        signal.signal(signal.SIGINT, interrupted)
    elif step.get("on_int") == "ignore":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if step.get("sleep"):
        time.sleep(float(step["sleep"]))
    if step.get("signal"):
        os.kill(os.getpid(), getattr(signal, f"SIG{step['signal']}"))
    return int(step.get("exit", 0))


if __name__ == "__main__":
    sys.exit(main())
