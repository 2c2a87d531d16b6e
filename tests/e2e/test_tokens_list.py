"""`prebuildd tokens list` and `GET /api/v1/tokens` show when each token was last used; an unused one shows
none."""

from __future__ import annotations

from pathlib import Path

from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.api import API
from tests.support.cli import Cli
from tests.support.server import RunningServer


async def test_tokens_list_shows_the_last_use(running_server: RunningServer, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "cli")
    await cli.ok("login", running_server.url, "--token-file", str(running_server.data_dir / OWNER_TOKEN_FILE))
    async with running_server.client() as owner:
        spare = await owner.post(f"{API}/tokens", json={"name": "spare"})
        assert spare.status_code == 201, spare.text
        listed = {t["name"]: t for t in (await owner.get(f"{API}/tokens")).json()}
    assert listed["spare"]["last_used_at"] is None
    used = [t for name, t in listed.items() if name != "spare"]
    assert used and all(t["last_used_at"] is not None for t in used), listed  # the owner's, used just now

    rows = {
        line.split()[1]: line
        for line in (await cli.ok("tokens", "list")).out.splitlines()[1:]
        if line.strip()
    }
    assert "USED" in (await cli.ok("tokens", "list")).out.splitlines()[0].split()  # when it was last used
    assert "ago" in next(line for name, line in rows.items() if name != "spare"), rows
    spare_columns = rows["spare"].split()
    assert spare_columns[-2:] == ["-", "-"], rows["spare"]  # never used, not revoked
    as_json = (await cli.ok("tokens", "list", "--json")).json()
    assert {t["name"]: t["last_used_at"] is None for t in as_json}["spare"] is True
