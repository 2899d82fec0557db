"""Stores (physical, online and mobile per country) and the store opened in batch 2.

Example:
    >>> from cpbi_spark.synth.timeline import Timeline
    >>> st = build_stores(42, Timeline())
    >>> sorted(set(st.channel_name(i) for i in range(st.n)))
    ['mobile', 'online', 'store']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from cpbi_spark.synth.params import CHANNELS
from cpbi_spark.synth.reference_data import COUNTRIES, CURRENCIES
from cpbi_spark.synth.seeding import derive_rng
from cpbi_spark.synth.timeline import DAY, Timeline, epoch, iso_date

NEW_STORE_SHARE = 0.4  # share of in-store baskets of its region that move to the batch-2 store
ONLINE_REGION = "National"


@dataclass
class Stores:
    """Column arrays of the store master plus lookups used when baskets pick a store."""

    store_id: list[str]
    store_name: list[str]
    channel: np.ndarray  # index into CHANNELS
    region: list[str]
    country: np.ndarray  # index into COUNTRIES
    opened_ts: np.ndarray
    batch: np.ndarray  # delivery batch of the store row
    region_names: list[str]  # global region list "<country>/<region>"
    region_cities: list[tuple[str, ...]]
    region_country: np.ndarray
    physical_by_region: list[list[int]]  # global region index -> batch-1 physical store indices
    online_by_country: list[int]
    mobile_by_country: list[int]
    new_store: int
    new_store_region: int

    @property
    def n(self) -> int:
        return len(self.store_id)

    @property
    def currency_idx(self) -> np.ndarray:
        return np.array([CURRENCIES.index(COUNTRIES[c].currency) for c in self.country.tolist()])

    @property
    def offset_minutes(self) -> np.ndarray:
        return np.array([COUNTRIES[c].utc_offset_minutes for c in self.country.tolist()], dtype=np.int64)

    def region_label(self, r: int) -> str:
        """Region name as printed in the files (without the country prefix)."""
        return self.region_names[r].split("/", 1)[1]

    def channel_name(self, i: int) -> str:
        return CHANNELS[int(self.channel[i])]

    def rows(self, batch: int) -> list[list[str]]:
        """CSV rows of ``stores_<batch>.csv``."""
        idx = np.flatnonzero(self.batch == batch)
        dates = iso_date(self.opened_ts[idx])
        return [
            [self.store_id[i], self.store_name[i], CHANNELS[self.channel[i]], self.region[i],
             COUNTRIES[self.country[i]].code, COUNTRIES[self.country[i]].currency, d]
            for i, d in zip(idx.tolist(), dates, strict=True)
        ]


def build_stores(seed: int, timeline: Timeline) -> Stores:
    """Two physical stores in each country's first region, one in the others, plus online and mobile."""
    rng = derive_rng(seed, "stores")
    ids: list[str] = []
    names: list[str] = []
    channel: list[int] = []
    region: list[str] = []
    country: list[int] = []
    region_names: list[str] = []
    region_cities: list[tuple[str, ...]] = []
    region_country: list[int] = []
    physical_by_region: list[list[int]] = []
    online_by_country: list[int] = []
    mobile_by_country: list[int] = []

    def add(name: str, chan: int, reg: str, ci: int) -> int:
        ids.append(f"S{len(ids) + 1:03d}")
        names.append(name)
        channel.append(chan)
        region.append(reg)
        country.append(ci)
        return len(ids) - 1

    for ci, c in enumerate(COUNTRIES):
        for ri, (reg, cities) in enumerate(c.regions.items()):
            region_names.append(f"{c.code}/{reg}")
            region_cities.append(cities)
            region_country.append(ci)
            physical_by_region.append([add(f"CPBI Market {city}", 0, reg, ci)
                                       for city in cities[: 2 if ri == 0 else 1]])
        online_by_country.append(add(f"CPBI Online {c.code}", 1, ONLINE_REGION, ci))
        mobile_by_country.append(add(f"CPBI App {c.code}", 2, ONLINE_REGION, ci))
    n_initial = len(ids)
    opened_ts = epoch(date(2012, 1, 1)) + rng.integers(0, 10 * 365, n_initial) * DAY
    # The batch-2 store opens on the first day of batch 2 in the US West region.
    west = region_names.index("US/West")
    new_store = add("CPBI Market Denver Tech Center", 0, "West", 0)
    return Stores(
        store_id=ids, store_name=names, channel=np.array(channel), region=region, country=np.array(country),
        opened_ts=np.concatenate([opened_ts, [timeline.batch_start(2)]]).astype(np.int64),
        batch=np.array([1] * n_initial + [2]), region_names=region_names, region_cities=region_cities,
        region_country=np.array(region_country), physical_by_region=physical_by_region,
        online_by_country=online_by_country, mobile_by_country=mobile_by_country,
        new_store=new_store, new_store_region=west,
    )
