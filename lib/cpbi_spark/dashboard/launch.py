"""``cpbi dashboard``: check the configuration and the role, then run the Streamlit server.

The server is a child process (``python -m streamlit run app.py``) so that Streamlit owns its event loop
and signals; the configuration travels to the script as JSON in :data:`~cpbi_spark.dashboard.OPTIONS_VARIABLE`
(every ``--set``, ``--source``, the env, the conf folder and the role), so the app builds exactly the
context ``cpbi run`` would.

Example:
    >>> cmd = streamlit_command(port=8502, host="0.0.0.0", headless=True)
    >>> cmd[1:4], cmd[cmd.index("--server.port") + 1]
    (['-m', 'streamlit', 'run'], '8502')
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from cpbi_spark.dashboard import OPTIONS_VARIABLE
from cpbi_spark.errors import CpbiError

APP = Path(__file__).with_name("app.py")


def streamlit_command(*, port: int, host: str, headless: bool) -> list[str]:
    """The ``streamlit run`` command line for the dashboard script."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.port", str(port), "--server.address", host,
            "--server.headless", "true" if headless else "false",
            # A served dashboard is not being edited: no file watcher, and nothing is sent to a third party.
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The app's options from the command line (paths made absolute: the server may resolve them later)."""
    from cpbi_spark.cli import parse_overrides

    conf_dir = args.conf_dir or os.environ.get("CPBI_CONF_DIR")
    return {"env": args.env, "conf_dir": str(Path(conf_dir).resolve()) if conf_dir else None,
            "sources": [str(Path(s).resolve()) for s in args.source or []],
            "overrides": parse_overrides(args.set or []), "role": args.role}


def check(options: dict[str, Any]) -> str:
    """Load the configuration once before serving, so a bad value or role fails here, not in the browser.

    Returns the environment's name; raises :class:`~cpbi_spark.errors.CpbiError` naming the known roles.
    """
    from cpbi_spark.config import load_config

    kwargs: dict[str, Any] = {"env": options["env"], "extra_files": options["sources"],
                              "overrides": options["overrides"]}
    if options["conf_dir"]:
        kwargs["conf_dir"] = options["conf_dir"]
    config = load_config(**kwargs)
    roles = config.platform.roles
    if options["role"] not in roles:
        raise CpbiError(f"unknown role {options['role']!r}; the roles of platform.roles are "
                        f"{', '.join(sorted(roles)) or 'none'}")
    return config.env


def url(host: str, port: int) -> str:
    """The address to open: a server on every interface is reached through this machine's name."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def launch(args: argparse.Namespace) -> int:
    """Serve the dashboard until the server stops or Ctrl-C; returns the server's exit code (0 on Ctrl-C)."""
    options = options_from_args(args)
    env = check(options)
    child_env = {**os.environ, OPTIONS_VARIABLE: json.dumps(options)}
    print(f"dashboard: {url(args.host, args.port)} (env {env}, role {args.role}); Ctrl-C stops it", flush=True)
    proc = subprocess.Popen(streamlit_command(port=args.port, host=args.host, headless=args.headless), env=child_env)

    def stop(signum: int, _frame: object) -> None:
        # A service manager's SIGTERM must stop the server too, not leave it running without its parent.
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to both processes; let the server finish cleanly
        proc.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
