"""The entry of an API worker process of `prebuildd server --workers N` (``python -m
prebuildd.cli.worker_process``, started by ``server.workers.WorkerProcess``, never by hand): the configuration
from stdin, logging, then a server in the worker role until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import structlog

from prebuildd.cli.flags import configure_logging
from prebuildd.runtime.config import ServerConfig


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prebuildd-worker", description="An API worker of `prebuildd server`."
    )
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from prebuildd.server.process import Server
    from prebuildd.server.startup import StartupError
    from prebuildd.server.workers import WorkerRole

    args = _arguments(sys.argv[1:] if argv is None else argv)
    config = ServerConfig(**json.loads(sys.stdin.read()))
    configure_logging(config.log_format, config.log_level, access_log=config.access_log)
    structlog.contextvars.bind_contextvars(worker=args.index)
    role = WorkerRole(index=args.index, fd=args.fd, run_dir=args.run_dir, parent_pid=args.parent)
    try:
        asyncio.run(Server(config, worker=role).run())
    except StartupError:
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
