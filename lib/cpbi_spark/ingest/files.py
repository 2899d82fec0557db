"""Landing files: find them by glob, fingerprint them (sha256, size) without loading them.

Works on local paths and on any filesystem pyarrow knows (s3://, gs://, hdfs://).

Example:
    >>> [f.name for f in list_landing_files("/landing", "transactions/*.csv")]   # doctest: +SKIP
    ['transactions_2024-01.csv', 'transactions_2024-02.csv']
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass

_CHUNK = 1 << 20  # stream files in 1 MiB chunks: bounded memory whatever the file size


@dataclass(frozen=True)
class LandingFile:
    """A landing file and its fingerprint."""

    uri: str
    name: str
    size: int
    sha256: str


def _filesystem(root: str):
    from pyarrow import fs as pafs

    if "://" not in root:  # a local path is not a URI: a space or '#' in it must not be URI-parsed
        return pafs.LocalFileSystem(), root
    return pafs.FileSystem.from_uri(root)


def resolve(root: str, pattern: str) -> tuple[str, str]:
    """Split an absolute/URI pattern or one relative to ``root`` into (base folder, glob)."""
    full = pattern if ("://" in pattern or pattern.startswith("/")) else f"{root.rstrip('/')}/{pattern}"
    head, _, _ = full.partition("*")
    base = head.rsplit("/", 1)[0] if "*" in full or "?" in full else full.rsplit("/", 1)[0]
    return base, full


def sha256_of(uri: str) -> tuple[str, int]:
    """The sha256 and size of a file, streamed."""
    filesystem, path = _filesystem(uri)
    digest = hashlib.sha256()
    size = 0
    with filesystem.open_input_stream(path) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def list_landing_files(root: str, pattern: str) -> list[LandingFile]:
    """Files matching ``pattern`` (a glob relative to ``root``), sorted by name, fingerprinted."""
    from pyarrow import fs as pafs

    base, full = resolve(root, pattern)
    filesystem, base_path = _filesystem(base)
    info = filesystem.get_file_info(base_path)
    if info.type == pafs.FileType.NotFound:
        return []
    prefix = base[: len(base) - len(base_path)] if "://" in base else ""
    full_path = full[len(prefix):] if prefix and full.startswith(prefix) else full
    if full_path.startswith("file://"):
        full_path = full_path[len("file://"):]
    found = []
    for entry in filesystem.get_file_info(pafs.FileSelector(base_path, recursive=True)):
        if entry.type != pafs.FileType.File or not fnmatch.fnmatch(entry.path, full_path):
            continue
        name = entry.path.rsplit("/", 1)[-1]
        if name.startswith((".", "_")):
            continue  # hidden files and markers are never landing data
        uri = f"{prefix}{entry.path}" if prefix else entry.path
        digest, size = sha256_of(uri)
        found.append(LandingFile(uri=uri, name=name, size=size, sha256=digest))
    return sorted(found, key=lambda f: f.uri)


def read_first_line(uri: str, encoding: str = "utf-8") -> str:
    """The first line of a text file (the CSV header), without reading the rest."""
    filesystem, path = _filesystem(uri)
    with filesystem.open_input_stream(path) as fh:
        buf = b""
        while b"\n" not in buf:
            chunk = fh.read(65536)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\n", 1)[0].decode(encoding.replace("_", "-"), errors="replace").lstrip("\ufeff").rstrip("\r")
