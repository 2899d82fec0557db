"""The cpbi exception family.

Every error raised on purpose by cpbi derives from :class:`CpbiError`, so a scheduler
or a notebook can catch ``CpbiError`` and know the failure is a reported one, not a bug.

Example:
    >>> try:
    ...     raise ConfigError([ConfigProblem("conf/base/tables.yaml", "tables.x.keys", "must not be empty")])
    ... except CpbiError as exc:
    ...     print(exc)
    1 problem in the configuration:
      - conf/base/tables.yaml: tables.x.keys: must not be empty
"""

from __future__ import annotations

from dataclasses import dataclass


class CpbiError(Exception):
    """Base class of every error cpbi raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in the configuration: where it is and what is wrong."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"


class ConfigError(CpbiError):
    """The configuration is invalid; carries every problem found, not only the first."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = [f"{len(self.problems)} {noun} in the configuration:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class TableError(CpbiError):
    """A table operation failed (missing table, schema mismatch, unsupported option)."""


class TableNotFound(TableError):
    """The table does not exist at its configured location."""


class CommitConflict(TableError):
    """A commit lost against a concurrent writer and could not be retried safely."""


class EngineUnavailable(TableError):
    """The requested table engine cannot start in this environment."""


class IngestError(CpbiError):
    """Landing files could not be ingested (unreadable file, schema drift rejected by policy)."""


class PipelineError(CpbiError):
    """A pipeline stage could not complete (missing upstream table, reconciliation failure)."""


class QualityError(PipelineError):
    """A blocking data-quality check failed; promotion to the next layer was stopped."""


class AnalysisError(CpbiError):
    """An analysis cannot run on the given data or parameters (with a reason and a suggestion)."""


class AccessDenied(CpbiError):
    """The current role has no grant for the requested table or column."""
