"""The typed cpbi configuration: pydantic models with ``extra="forbid"`` so typos are reported.

Models check one value at a time (types, literals, names); rules that relate several fields
(keys are declared columns, SCD2 needs its columns, a source feeds a bronze table) live in
:mod:`cpbi_spark.config.checks`, so every broken rule is reported, not only the first one.
Build a :class:`CpbiConfig` with :func:`cpbi_spark.config.load_config`, not by hand.

Example:
    >>> from cpbi_spark.config import load_config
    >>> cfg = load_config(env="ci")                                    # doctest: +SKIP
    >>> cfg.physical_name("raw_transactions")                          # doctest: +SKIP
    'customer_purchase_behavior_insights_raw_transactions'
    >>> cfg.table_path("raw_transactions")                             # doctest: +SKIP
    '/work/cpbi-data-ci/lakehouse/bronze/customer_purchase_behavior_insights_raw_transactions'
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints

from cpbi_spark.config.field_types import (
    ColumnName,
    ConfValue,
    EmptyDictIfNone,
    EmptyListIfNone,
    Location,
    Name,
    NonEmptyStr,
    SparkKey,
    SparkSqlType,
    TimeZone,
    is_uri,
)
from cpbi_spark.config.masking import mask_secrets
from cpbi_spark.config.platform import ExpectationSuiteConfig, PlatformConfig
from cpbi_spark.errors import ConfigError, ConfigProblem

Layer = Literal["bronze", "silver", "gold", "insights", "platform"]
LAYERS: tuple[str, ...] = ("bronze", "silver", "gold", "insights", "platform")
PiiPolicy = Literal["hash", "mask", "drop", "none"]
# The columns SCD2 maintains itself, and the Spark types each may have.
SCD2_COLUMN_TYPES: dict[str, tuple[str, ...]] = {
    "valid_from": ("timestamp", "date"),
    "valid_to": ("timestamp", "date"),
    "is_current": ("boolean",),
}
SCD2_COLUMNS: tuple[str, ...] = tuple(SCD2_COLUMN_TYPES)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectConfig(_Model):
    """Project identity; ``table_prefix`` + logical name = physical table name."""

    name: NonEmptyStr = "cpbi"
    table_prefix: Annotated[str, StringConstraints(pattern=r"^([a-z][a-z0-9_]*)?$")] = (
        "customer_purchase_behavior_insights_"
    )
    reporting_currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    owner: NonEmptyStr = "data-platform"


class StorageConfig(_Model):
    """Where data lives. Local paths are made absolute at load time; URIs are kept as is."""

    root: Location  # lakehouse tables: <root>/<layer>/<physical name>
    landing: Location  # landed source files, read by ingestion
    outputs: Location  # reports, the default MLflow store, run logs


class MlflowConfig(_Model):
    """MLflow tracking; no ``tracking_uri`` means a sqlite file under ``<outputs>/mlruns``."""

    tracking_uri: NonEmptyStr | None = None
    experiment: NonEmptyStr = "cpbi"


class GoldConfig(_Model):
    """How the gold stage applies silver changes.

    ``incremental: true`` recomputes only the gold rows the silver changes since the last run affect
    (:mod:`cpbi_spark.gold.incremental`; same tables as a full recompute, tested). Off by default: its
    scope queries still scan whole tables (no data skipping yet), so on the sizes measured (up to about
    0.5M lines) a full recompute of gold is faster.
    """

    incremental: bool = False


class MaintenanceConfig(_Model):
    """Table upkeep by ``cpbi maintain`` (a scheduled job, apart from the pipeline).

    Compaction rewrites a table's files smaller than half of ``target_file_mb`` into files of about
    that size once it has at least ``min_small_files`` of them (each batch adds a few small files;
    reads slow down with their number). Vacuum then deletes the files no version of the last
    ``retention_hours`` uses: time travel, and gold's reading of silver changes, reach back that far
    (older changes make gold recompute in full). ``layers`` limits both to tables of those layers.
    """

    target_file_mb: Annotated[int, Field(ge=1)] = 128
    min_small_files: Annotated[int, Field(ge=2)] = 8
    retention_hours: Annotated[int, Field(ge=0)] = 168
    vacuum: bool = True
    layers: list[Layer] = Field(default_factory=lambda: list(get_args(Layer)))


Entity = Literal[
    "transactions", "returns", "customers", "products", "stores", "exchange_rates", "promotions",
    "promotion_exposures", "campaign_results", "table",
]
ENTITIES: tuple[str, ...] = (
    "transactions", "returns", "customers", "products", "stores", "exchange_rates", "promotions",
    "promotion_exposures", "campaign_results", "table",
)


class ExcludeRule(_Model):
    """Lines to keep out of the facts (postage, fees, ...): counted and kept in the quarantine, never lost."""

    column: ColumnName  # canonical column the rule looks at
    values: Annotated[list[str], EmptyListIfNone] = Field(default_factory=list)  # exact values (trimmed)
    pattern: NonEmptyStr | None = None  # or a regular expression matching the whole value
    reason: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")] = "excluded"


class ReturnRule(_Model):
    """How an export marks returns and cancellations among its sale lines."""

    negative_quantity: bool = False  # a negative quantity is a return (not an error)
    # canonical column -> prefix, e.g. {basket_id: "C"} for invoice numbers of cancellations
    id_prefix: Annotated[dict[ColumnName, NonEmptyStr], EmptyDictIfNone] = Field(default_factory=dict)


class HeaderJoin(_Model):
    """Order headers for lines exported without them: customer, time, store live on the order, not the line.

    ``table`` is a declared table keyed on ``basket_id`` and filled by an ``entity: table`` source (the
    headers file); ``columns`` are the canonical columns a line takes from its order's header.
    """

    table: Name
    columns: Annotated[list[ColumnName], Field(min_length=1)]


class SourceConfig(_Model):
    """One logical landing source and how its file columns map to canonical names."""

    # What the rows are; default: the source's own name (transactions, customers, ...).
    entity: Entity | None = None
    format: Literal["csv", "jsonl", "parquet", "basket_lines"]
    path: NonEmptyStr  # glob, relative to storage.landing unless absolute or a URI
    options: Annotated[dict[str, ConfValue], EmptyDictIfNone] = Field(default_factory=dict)
    bronze_table: Name
    columns: Annotated[dict[ColumnName, NonEmptyStr], EmptyDictIfNone]  # canonical -> column in file
    record_key: Annotated[list[ColumnName], EmptyListIfNone] = Field(default_factory=list)
    # canonical columns that must not be empty (default: the entity's usual ids, see silver.entities)
    not_null: Annotated[list[ColumnName], EmptyListIfNone] = Field(default_factory=list)
    timestamp_format: NonEmptyStr | None = None
    timezone: TimeZone = "UTC"
    on_new_columns: Literal["evolve", "reject"] = "reject"
    required: bool = True
    # a fixed currency for exports without a currency column
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = None
    # file columns holding discounts as positive numbers (summed into discount_amount)
    discounts: Annotated[list[NonEmptyStr], EmptyListIfNone] = Field(default_factory=list)
    returns: ReturnRule = Field(default_factory=ReturnRule)
    exclude: Annotated[list[ExcludeRule], EmptyListIfNone] = Field(default_factory=list)
    # extra file columns kept as a JSON object of attributes (e.g. demographics of a customer)
    attributes: Annotated[dict[ColumnName, NonEmptyStr], EmptyDictIfNone] = Field(default_factory=dict)
    # canonical columns with one constant value (e.g. the promotion id of a campaign export)
    fixed: Annotated[dict[ColumnName, ConfValue], EmptyDictIfNone] = Field(default_factory=dict)
    # entity "table": the declared table the rows are typed into and merged on its keys
    target_table: Name | None = None
    # entity "campaign_results": arm values that mean "not contacted" (the control group)
    control_arms: Annotated[list[NonEmptyStr], EmptyListIfNone] = Field(default_factory=list)
    # entity "transactions": columns taken from the order headers (a separate file) by basket_id
    header: HeaderJoin | None = None

    def entity_of(self, name: str) -> str:
        """The entity of this source (its ``entity``, else its name)."""
        return self.entity or name

    def file_columns(self) -> list[str]:
        """Every column this mapping reads from the files, in mapping order, once."""
        return list(dict.fromkeys([*self.columns.values(), *self.discounts, *self.attributes.values()]))


class MappingInfo(_Model):
    """Marks a configuration file as a source mapping of a retailer's export (``cpbi run --source FILE``)."""

    name: NonEmptyStr
    description: str = ""
    replaces_sources: bool = True  # the mapping's sources replace the built-in ones


class TableConfig(_Model):
    """One logical table. ``columns: {}`` is allowed for bronze only, meaning "as received"."""

    layer: Layer
    description: str
    grain: NonEmptyStr  # "one row per ..."
    keys: Annotated[list[ColumnName], Field(min_length=1)]
    columns: Annotated[dict[ColumnName, SparkSqlType], EmptyDictIfNone]
    scd_type: Literal[0, 1, 2] = 0
    tracked: Annotated[list[ColumnName], EmptyListIfNone] = Field(default_factory=list)
    pii: Annotated[dict[ColumnName, PiiPolicy], EmptyDictIfNone] = Field(default_factory=dict)
    partition_by: Annotated[list[ColumnName], EmptyListIfNone] = Field(default_factory=list)
    owner: NonEmptyStr | None = None
    tags: Annotated[list[NonEmptyStr], EmptyListIfNone] = Field(default_factory=list)

    @property
    def as_received(self) -> bool:
        """A bronze table without declared columns stores the landed columns unchanged."""
        return self.layer == "bronze" and not self.columns


class CpbiConfig(_Model):
    """The whole validated configuration, plus lookups the jobs need."""

    # key path -> the file (or "<override>") that set it; kept by the loader so that checks made later
    # (an analysis validating its block) name the file to edit
    _origins: Any = PrivateAttr(default=None)

    def origin(self, path: tuple[Any, ...], default: str) -> str:
        """The file that last set ``path`` (or its nearest set parent), else ``default``."""
        return self._origins.origin(path, default=default) if self._origins is not None else default

    env: str
    conf_dir: str
    project: ProjectConfig = Field(default_factory=ProjectConfig)
    storage: StorageConfig
    engine: Literal["auto", "delta-rs", "delta-spark"] = "auto"
    spark: Annotated[dict[SparkKey, ConfValue], EmptyDictIfNone] = Field(default_factory=dict)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    gold: GoldConfig = Field(default_factory=GoldConfig)
    maintenance: MaintenanceConfig = Field(default_factory=MaintenanceConfig)
    sources: Annotated[dict[Name, SourceConfig], EmptyDictIfNone]
    tables: Annotated[dict[Name, TableConfig], EmptyDictIfNone]
    refdata: Annotated[dict[Name, list[dict[str, Any]]], EmptyDictIfNone] = Field(default_factory=dict)
    analyses: Annotated[dict[str, dict[str, Any]], EmptyDictIfNone] = Field(default_factory=dict)
    mapping: MappingInfo | None = None  # set when a source mapping file is loaded
    platform: PlatformConfig = Field(default_factory=PlatformConfig)  # platform sources A-D (conf/base/platform.yaml)
    expectations: Annotated[dict[Name, ExpectationSuiteConfig], EmptyDictIfNone] = Field(default_factory=dict)

    def _unknown(self, section: str, name: str, known: list[str]) -> ConfigError:
        hint = difflib.get_close_matches(name, known, n=1)
        reason = f"unknown {section[:-1]} (did you mean {hint[0]!r}?)" if hint else f"unknown {section[:-1]}"
        return ConfigError([ConfigProblem(self.conf_dir, f"{section}.{name}", reason)])

    def table(self, name: str) -> TableConfig:
        """The table called ``name``; an unknown name raises :class:`ConfigError` (key ``tables.<name>``)."""
        try:
            return self.tables[name]
        except KeyError:
            raise self._unknown("tables", name, list(self.tables)) from None

    def source(self, name: str) -> SourceConfig:
        """The source called ``name``; an unknown name raises :class:`ConfigError` (``sources.<name>``)."""
        try:
            return self.sources[name]
        except KeyError:
            raise self._unknown("sources", name, list(self.sources)) from None

    def tables_in_layer(self, layer: Layer) -> dict[str, TableConfig]:
        """Tables of one layer, in declaration order, e.g. ``cfg.tables_in_layer("bronze")``."""
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; layers are {', '.join(LAYERS)}")
        return {name: table for name, table in self.tables.items() if table.layer == layer}

    def physical_name(self, name: str) -> str:
        """``project.table_prefix`` + logical name, for a declared table."""
        self.table(name)
        return f"{self.project.table_prefix}{name}"

    def table_path(self, name: str) -> str:
        """``<storage.root>/<layer>/<physical name>`` of a declared table."""
        return f"{self.storage.root.rstrip('/')}/{self.table(name).layer}/{self.physical_name(name)}"

    def source_glob(self, name: str) -> str:
        """The file glob of a source: its ``path`` under ``storage.landing`` unless absolute or a URI."""
        path = self.source(name).path
        if is_uri(path) or Path(path).is_absolute():
            return path
        return f"{self.storage.landing.rstrip('/')}/{path}"

    def mlflow_tracking_uri(self) -> str:
        """The configured tracking URI, else ``sqlite:///<outputs>/mlruns/mlflow.db``.

        The folder of the sqlite file is not created here: loading the config has no side effects.
        """
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        folder = local_folder(self.storage.outputs)
        if folder is None:
            raise ConfigError(
                [ConfigProblem(self.conf_dir, "mlflow.tracking_uri", DEFAULT_MLFLOW_NEEDS_LOCAL_OUTPUTS)]
            )
        return f"sqlite:///{folder}/mlruns/mlflow.db"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``cpbi config show``; secret-looking values are shown as ``***``."""
        return mask_secrets(self.model_dump(mode="json"))


DEFAULT_MLFLOW_NEEDS_LOCAL_OUTPUTS = (
    "set mlflow.tracking_uri: the default sqlite store needs storage.outputs to be a local folder"
)


def local_folder(location: str) -> str | None:
    """The local path of a storage location (``file://`` URIs included), or None for remote stores."""
    if not is_uri(location):
        return location
    parsed = urlparse(location)
    return parsed.path if parsed.scheme == "file" else None
