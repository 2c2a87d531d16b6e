"""Templates as the tests write them: a directory on disk from a manifest and files, and the shared ones."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def write_template(root: Path, manifest: str, files: Mapping[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "prebuildd.toml").write_text(manifest)
    for name, content in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if name.endswith(".sh"):
            path.chmod(0o755)
    return root


# An exec template with required, optional and immutable parameters and a preset: cold builds end to end.
EXEC_MANIFEST = """
provisioner = "exec"
[exec]
create = "create.sh"
stop = "stop.sh"
delete = "delete.sh"

[[parameters]]
name = "repo"
type = "string"
required = true

[[parameters]]
name = "size"
type = "string"
default = "small"
options = ["small", "large"]

[[parameters]]
name = "cpu"
type = "number"
default = 2
mutable = false
validation = { min = 1, max = 8 }

[[presets]]
name = "web"
parameters = { repo = "https://example.com/web.git", size = "large" }
"""

EXEC_FILES = {
    "create.sh": """#!/bin/sh
set -e
mkdir -p "$PREBUILDD_DATA_DIR"
echo "cloning $PREBUILDD_PARAM_REPO ($PREBUILDD_PARAM_SIZE, $PREBUILDD_PARAM_CPU cpu)"
echo "$PREBUILDD_PARAM_REPO" > "$PREBUILDD_DATA_DIR/repo"
echo "created-$PREBUILDD_WORKSPACE_NAME" > "$PREBUILDD_STATE_FILE"
printf '{"path": "%s"}' "$PREBUILDD_DATA_DIR" > "$PREBUILDD_OUTPUTS_FILE"
""",
    "stop.sh": """#!/bin/sh
echo "stopping with state $(cat "$PREBUILDD_STATE_FILE")"
""",
    "delete.sh": """#!/bin/sh
echo "deleting with state $(cat "$PREBUILDD_STATE_FILE")"
rm -rf "$PREBUILDD_DATA_DIR"
""",
}


BLOCKING_MANIFEST = """
provisioner = "exec"
[exec]
create = "create.sh"
stop = "stop.sh"
delete = "delete.sh"
"""


def blocking_files(release: Path) -> dict[str, str]:
    """A create step that logs, waits for ``release`` to exist, then logs again: a build that stays active."""
    return {
        "create.sh": f'#!/bin/sh\necho "started $PREBUILDD_WORKSPACE_NAME"\n'
        f'while [ ! -f "{release}" ]; do sleep 0.05; done\necho "finished $PREBUILDD_WORKSPACE_NAME"\n',
        "stop.sh": "#!/bin/sh\necho stopping\n",
        "delete.sh": "#!/bin/sh\necho deleting\n",
    }
