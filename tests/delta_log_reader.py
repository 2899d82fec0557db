"""A small Delta log reader for the tests, independent of delta-rs and delta-spark.

It follows the Delta protocol (PROTOCOL.md, "Action Reconciliation") with nothing but
``json`` and ``pyarrow``: start from the newest checkpoint at or before the wanted version
(when there is one), replay the ``_delta_log/<version>.json`` commits after it in order, and
keep the last ``add``/``remove`` per file path: the files still added are the live set. The
tests compare that set with what the engines report, so an engine bug in the log (a missing
remove, an add of a file that is not on disk, a wrong ``numRecords``) cannot hide behind the
engine's own reader.

Example:
    >>> snap = read_log("/tmp/t")                                  # doctest: +SKIP
    >>> snap.version, len(snap.files), snap.protocol["minWriterVersion"]   # doctest: +SKIP
    (3, 2, 2)
    >>> live_row_count("/tmp/t")                                    # doctest: +SKIP
    5
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

_COMMIT = re.compile(r"^(\d{20})\.json$")
# Classic single-file (<v>.checkpoint.parquet) and multi-part (<v>.checkpoint.<i>.<n>.parquet) checkpoints.
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")


@dataclass
class LogSnapshot:
    """The reconciled state of a table at one version."""

    version: int
    files: dict[str, dict[str, Any]]  # absolute local path -> its add action
    protocol: dict[str, Any]
    metadata: dict[str, Any]
    txns: dict[str, int] = field(default_factory=dict)  # appId -> last recorded version


def table_root(path: str) -> str:
    """A local folder path for ``path`` (plain path or ``file:`` URI)."""
    parsed = urlparse(path)
    return unquote(parsed.path) if parsed.scheme == "file" else path


def _log_dir(path: str) -> str:
    return os.path.join(table_root(path), "_delta_log")


def commit_versions(path: str) -> list[int]:
    """Versions that have a JSON commit file, ascending."""
    return sorted(int(m.group(1)) for name in os.listdir(_log_dir(path)) if (m := _COMMIT.match(name)))


def commit_actions(path: str, version: int) -> list[dict[str, Any]]:
    """The actions of one commit, in file order (one JSON object per line)."""
    with open(os.path.join(_log_dir(path), f"{version:020d}.json"), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _file_path(root: str, action_path: str) -> str:
    """Add/remove paths are URI-encoded, relative to the table root unless absolute URIs."""
    parsed = urlparse(action_path)
    if parsed.scheme == "file":
        return os.path.normpath(unquote(parsed.path))
    if parsed.scheme:
        raise NotImplementedError(f"only local tables are supported, got {action_path}")
    return os.path.normpath(os.path.join(root, unquote(action_path)))


def _checkpoint_actions(log_dir: str, version: int, names: list[str]) -> list[dict[str, Any]]:
    """Actions stored in the checkpoint of ``version`` (all its parts), as plain dicts."""
    import pyarrow.parquet as pq

    parts = sorted(n for n in names if (m := _CHECKPOINT.match(n)) and int(m.group(1)) == version)
    actions: list[dict[str, Any]] = []
    for part in parts:
        table = pq.read_table(os.path.join(log_dir, part))
        for row in table.to_pylist():
            for kind in ("add", "remove", "protocol", "metaData", "txn"):
                if row.get(kind) is not None:
                    actions.append({kind: row[kind]})
    return actions


def read_log(path: str, version: int | None = None) -> LogSnapshot:
    """Replay the log up to ``version`` (default: the newest) into a :class:`LogSnapshot`."""
    root = table_root(path)
    log_dir = _log_dir(path)
    names = os.listdir(log_dir)
    if any(re.match(r"^\d{20}\.checkpoint\.[0-9a-f-]{36}\.(json|parquet)$", n) for n in names):
        raise NotImplementedError("V2 (UUID-named) checkpoints are not supported by this test reader")
    commits = commit_versions(path)
    checkpoints = {int(m.group(1)) for n in names if (m := _CHECKPOINT.match(n))}
    target = version if version is not None else max(commits + sorted(checkpoints))
    start = max((v for v in checkpoints if v <= target), default=None)

    actions: list[dict[str, Any]] = []
    if start is not None:
        actions += _checkpoint_actions(log_dir, start, names)
    first = start + 1 if start is not None else 0
    wanted = [v for v in commits if first <= v <= target]
    if wanted != list(range(first, target + 1)):
        raise ValueError(f"{path}: commits {first}..{target} are not all present (found {wanted})")
    for v in wanted:
        actions += commit_actions(path, v)

    files: dict[str, dict[str, Any]] = {}
    protocol: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    txns: dict[str, int] = {}
    for action in actions:
        if "add" in action:
            add = action["add"]
            # A deletion vector makes a file partly live; these tables must never have one.
            if add.get("deletionVector"):
                raise AssertionError(f"{path}: unexpected deletion vector on {add['path']}")
            files[_file_path(root, add["path"])] = add
        elif "remove" in action:
            files.pop(_file_path(root, action["remove"]["path"]), None)
        elif "protocol" in action:
            protocol = action["protocol"]
        elif "metaData" in action:
            metadata = action["metaData"]
        elif "txn" in action:
            txns[action["txn"]["appId"]] = int(action["txn"]["version"])
    return LogSnapshot(target, files, protocol, metadata, txns)


def live_files(path: str, version: int | None = None) -> set[str]:
    """Absolute paths of the files that make up the table at ``version``."""
    return set(read_log(path, version).files)


def live_row_count(path: str, version: int | None = None) -> int:
    """Rows of the table at ``version``: the sum of the live parquet files' footer row counts."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f in live_files(path, version))


def data_files_on_disk(path: str) -> set[str]:
    """Every file under the table folder except the log (committed, orphaned or half-written)."""
    root = table_root(path)
    out = set()
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not (folder == root and d == "_delta_log")]
        out.update(os.path.normpath(os.path.join(folder, n)) for n in names)
    return out
