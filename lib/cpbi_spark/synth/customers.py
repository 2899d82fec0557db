"""Customer population, behavioural features and the SCD2 version history of the customer master.

Every customer gets a first-purchase time (which fixes the acquisition cohort), a loyalty tier,
a first-purchase channel and a first-basket-discount flag. The master is a change feed: version 0
at signup, later versions when the customer moves (street/city/region) or changes tier. Changes
always happen after the first purchase, so "tier at first purchase" is the signup tier.

Delivery per batch (``customers_<batch>.csv``): a version lands in the batch whose window holds its
``updated_at``, except

* LATE updates: a move between two batch-1 versions, withheld from batch 1 and delivered in batch 2;
* REPEATS: an exact copy (same attributes, same ``updated_at``) of a batch-1 version, re-sent in batch 2.

Example:
    >>> from cpbi_spark.synth.timeline import Timeline
    >>> from cpbi_spark.synth.stores import build_stores
    >>> tl = Timeline()
    >>> pop = build_population(42, 300, tl, build_stores(42, tl))
    >>> pop.customer_id[0], int((pop.versions["kind"] == "late").sum()) >= 3
    ('C000001', True)
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cpbi_spark.synth.params import (
    CHANNELS,
    FIRST_BASKET_DISCOUNT_SHARE,
    FIRST_CHANNEL_PROBS,
    TIER_PROBS,
    TIERS,
)
from cpbi_spark.synth.reference_data import COUNTRIES, EMAIL_DOMAINS, FIRST_NAMES, LAST_NAMES, STREETS
from cpbi_spark.synth.seeding import derive_rng
from cpbi_spark.synth.stores import Stores
from cpbi_spark.synth.timeline import DAY, Timeline, draw_time_of_day, iso_date, iso_utc, utc_weekday

CUSTOMER_COLUMNS: tuple[str, ...] = (
    "customer_id", "account_id", "first_name", "last_name", "email", "phone", "street_address", "city",
    "region", "country", "loyalty_tier", "signup_date", "updated_at",
)
EXTRA_VERSION_PROBS = (0.72, 0.17, 0.08, 0.03)  # number of attribute changes after the first purchase
TIER_CHANGE_SHARE = 0.6  # a change is a tier change with this probability, else a move
LATE_SHARE, MIN_LATE = 0.004, 3
REPEAT_SHARE, MIN_REPEAT = 0.003, 3
MIN_CHANGED_BATCH2 = 3
HOUSEHOLD_SHARE = 0.08  # customers that share the account of an earlier customer
MISSING_PHONE_SHARE = 0.04
ADDRESS_UNIT_SHARE = 0.15  # "12 Main St, Apt 4": a quoted comma inside a CSV field


def acquisition_shares(n_months: int) -> np.ndarray:
    """Share of customers whose first purchase falls in each month.

    85 % in the first five months so early cohorts are large (~1,000 customers at scale 1), a trickle
    afterwards, 1.5 % in each batch-2 month.
    """
    shares = np.zeros(n_months)
    shares[:5] = 0.17
    shares[5:n_months - 2] = 0.12 / (n_months - 7)
    shares[n_months - 2:] = 0.015
    return shares / shares.sum()


@dataclass
class Population:
    """Per-customer arrays (index = position in ``customer_id``) and the version table."""

    customer_id: list[str]
    account_id: list[str]
    acq_month: np.ndarray
    t_first: np.ndarray
    signup_ts: np.ndarray
    tier0: np.ndarray
    chan0: np.ndarray
    first_discount: np.ndarray
    first_weekend: np.ndarray
    country: np.ndarray
    home_region: np.ndarray
    home_store: np.ndarray  # (n, 3): store index per channel
    versions: pd.DataFrame
    lam: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _tier_keys: np.ndarray | None = None
    _tier_vals: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.customer_id)

    def tier_at(self, cust: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Loyalty tier index valid at ``ts`` (true history; repeats carry no information)."""
        if self._tier_keys is None:
            true = self.versions[self.versions["kind"] != "repeat"].sort_values(["cust", "ts"])
            self._tier_keys = true["cust"].to_numpy(np.int64) * (1 << 33) + true["ts"].to_numpy(np.int64)
            self._tier_vals = true["loyalty_tier"].map({t: i for i, t in enumerate(TIERS)}).to_numpy()
        keys = np.asarray(cust, dtype=np.int64) * (1 << 33) + np.asarray(ts, dtype=np.int64)
        pos = np.searchsorted(self._tier_keys, keys, side="right") - 1
        return self._tier_vals[pos]

    def customer_rows(self, batch: int) -> list[list[str]]:
        """CSV rows of ``customers_<batch>.csv`` in ``updated_at`` order."""
        v = self.versions[self.versions["delivered"] == batch].sort_values(["ts", "cust", "kind"])
        stamps = iso_utc(v["ts"].to_numpy())
        signup = iso_date(self.signup_ts[v["cust"].to_numpy()])
        cols = [v[c].tolist() for c in ("first_name", "last_name", "email", "phone", "street_address", "city",
                                        "region", "country", "loyalty_tier")]
        custs = v["cust"].tolist()
        return [
            [self.customer_id[c], self.account_id[c], *vals, s, u]
            for c, *vals, s, u in zip(custs, *cols, signup, stamps, strict=True)
        ]


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _pick(rng: np.random.Generator, options: tuple[str, ...], n: int) -> list[str]:
    return [options[i] for i in rng.integers(0, len(options), n).tolist()]


def _street(rng: np.random.Generator, country: str) -> str:
    number = int(rng.integers(1, 300))
    street = STREETS[country][int(rng.integers(0, len(STREETS[country])))]
    base = f"{number} {street}" if country in ("US", "GB") else f"{street} {number}"
    if rng.random() < ADDRESS_UNIT_SHARE:
        unit = {"US": "Apt", "GB": "Flat"}.get(country, "App.")
        base += f", {unit} {int(rng.integers(1, 40))}"
    return base


def _phone(rng: np.random.Generator, country: str) -> str:
    if rng.random() < MISSING_PHONE_SHARE:
        return ""
    digits = "".join(str(d) for d in rng.integers(0, 10, 7).tolist())
    prefix = COUNTRIES[[c.code for c in COUNTRIES].index(country)].phone_prefix
    return f"{prefix}-555-{digits[:3]}-{digits[3:]}"


def build_population(seed: int, n: int, timeline: Timeline, stores: Stores) -> Population:
    """Draw ``n`` customers, their features, home stores and full version history."""
    rng = derive_rng(seed, "customers")
    months = timeline.months
    n_months = timeline.n_months
    acq = rng.choice(n_months, n, p=acquisition_shares(n_months))
    country = rng.choice(len(COUNTRIES), n, p=[c.customer_share for c in COUNTRIES])
    regions_of = [np.flatnonzero(stores.region_country == ci) for ci in range(len(COUNTRIES))]
    region = np.array([regions_of[c][int(u * len(regions_of[c]))]
                       for c, u in zip(country.tolist(), rng.random(n).tolist(), strict=True)])
    tier0 = rng.choice(len(TIERS), n, p=TIER_PROBS)
    chan0 = rng.choice(len(CHANNELS), n, p=FIRST_CHANNEL_PROBS)
    first_discount = rng.random(n) < FIRST_BASKET_DISCOUNT_SHARE
    offsets = np.array([COUNTRIES[c].utc_offset_minutes for c in country.tolist()], dtype=np.int64)
    starts = timeline.month_starts()
    days = np.array([m.days for m in months])
    t_first = starts[acq] + rng.integers(0, days[acq]) * DAY + draw_time_of_day(rng, chan0, offsets)
    signup = t_first - rng.integers(3600, 90 * DAY, n)
    # Customer ids follow signup order, as a real CRM would number them.
    order = np.argsort(signup, kind="stable")
    acq, country, region, tier0, chan0 = acq[order], country[order], region[order], tier0[order], chan0[order]
    first_discount, t_first, signup = first_discount[order], t_first[order], signup[order]
    width = max(6, len(str(n)))
    customer_id = [f"C{i + 1:0{width}d}" for i in range(n)]

    codes = [COUNTRIES[c].code for c in country.tolist()]
    first_name = [FIRST_NAMES[c][i % len(FIRST_NAMES[c])]
                  for c, i in zip(codes, rng.integers(0, 1000, n).tolist(), strict=True)]
    last_name = [LAST_NAMES[c][i % len(LAST_NAMES[c])]
                 for c, i in zip(codes, rng.integers(0, 1000, n).tolist(), strict=True)]
    # Households: some customers share the account (and surname) of an earlier customer.
    account_id: list[str] = []
    next_account = 0
    share = rng.random(n) < HOUSEHOLD_SHARE
    partner_u = rng.random(n)
    for i in range(n):
        if share[i] and i > 0:
            j = int(partner_u[i] * i)
            account_id.append(account_id[j])
            last_name[i] = last_name[j]
        else:
            next_account += 1
            account_id.append(f"A{next_account:0{width}d}")
    email_n = rng.integers(1, 999, n).tolist()
    domains = _pick(rng, EMAIL_DOMAINS, n)
    email = [f"{_ascii(f)}.{_ascii(la)}{k}@{d}"
             for f, la, k, d in zip(first_name, last_name, email_n, domains, strict=True)]
    phone = [_phone(rng, c) for c in codes]
    street = [_street(rng, c) for c in codes]
    city_names = [stores.region_cities[r] for r in region.tolist()]
    city = [cs[int(u * len(cs))] for cs, u in zip(city_names, rng.random(n).tolist(), strict=True)]

    home_store = np.zeros((n, 3), dtype=np.int64)
    phys_u = rng.random(n)
    home_store[:, 0] = [stores.physical_by_region[r][int(u * len(stores.physical_by_region[r]))]
                        for r, u in zip(region.tolist(), phys_u.tolist(), strict=True)]
    home_store[:, 1] = np.array(stores.online_by_country)[country]
    home_store[:, 2] = np.array(stores.mobile_by_country)[country]

    base = {
        "first_name": first_name, "last_name": last_name, "email": email, "phone": phone,
        "street_address": street, "city": city, "region": region, "country": codes, "tier": tier0,
    }
    versions = _versions(rng, timeline, stores, base, t_first, signup, acq)
    return Population(
        customer_id=customer_id, account_id=account_id, acq_month=acq, t_first=t_first.astype(np.int64),
        signup_ts=signup.astype(np.int64), tier0=tier0, chan0=chan0, first_discount=first_discount,
        first_weekend=np.isin(utc_weekday(t_first), (5, 6)), country=country, home_region=region,
        home_store=home_store, versions=versions,
    )


def _next_tier(tier: int, u: float) -> int:
    if tier == len(TIERS) - 1:
        return tier - 1
    if tier == 0:
        return 1
    return tier + 1 if u < 0.8 else tier - 1


def _versions(rng: np.random.Generator, timeline: Timeline, stores: Stores, base: dict,
              t_first: np.ndarray, signup: np.ndarray, acq: np.ndarray) -> pd.DataFrame:
    """The true version history plus late/repeat delivery rows, as one table."""
    n = len(t_first)
    b1_end = timeline.batch_end(1)
    horizon_end = timeline.horizon_end
    n_extra = rng.choice(len(EXTRA_VERSION_PROBS), n, p=EXTRA_VERSION_PROBS)
    # LATE customers: early acquisitions with a fixed history "move, then tier change" inside batch 1.
    n_late = max(MIN_LATE, round(LATE_SHARE * n))
    late_pool = np.flatnonzero((acq <= 2) & (n_extra == 0))
    late = np.sort(rng.choice(late_pool, n_late, replace=False))
    change_plan: dict[int, list[tuple[int, str]]] = {}
    for i in np.flatnonzero(n_extra > 0).tolist():
        lo, hi = int(t_first[i]) + DAY, horizon_end - DAY
        times = np.sort(lo + (rng.random(int(n_extra[i])) * max(hi - lo, 1)).astype(np.int64))
        kinds = ["tier" if u < TIER_CHANGE_SHARE else "move" for u in rng.random(len(times)).tolist()]
        change_plan[i] = list(zip(times.tolist(), kinds, strict=True))
    for i in late.tolist():
        t1 = int(t_first[i]) + int(rng.integers(5, 60)) * DAY + int(rng.integers(0, DAY))
        t2 = t1 + int(rng.integers(5, 60)) * DAY + int(rng.integers(0, DAY))
        change_plan[i] = [(t1, "move"), (t2, "tier")]
    # Guarantee some batch-2 changes of customers that already exist in batch 1.
    existing = signup < b1_end
    changed_b2 = {i for i, plan in change_plan.items() if existing[i] and any(t >= b1_end for t, _ in plan)}
    if len(changed_b2) < MIN_CHANGED_BATCH2:
        pool = np.array([i for i in np.flatnonzero(existing & (acq < timeline.n_months - 2)).tolist()
                         if i not in change_plan])
        for i in rng.choice(pool, MIN_CHANGED_BATCH2 - len(changed_b2), replace=False).tolist():
            t = b1_end + int(rng.integers(1, 40)) * DAY + int(rng.integers(0, DAY))
            change_plan[int(i)] = [(t, "tier")]

    rows: dict[str, list] = {k: [] for k in ("cust", "ts", "first_name", "last_name", "email", "phone",
                                             "street_address", "city", "region", "country", "loyalty_tier",
                                             "kind", "change")}

    def emit(i: int, ts: int, state: dict, kind: str, change: str) -> None:
        rows["cust"].append(i)
        rows["ts"].append(ts)
        for k in ("first_name", "last_name", "email", "phone", "street_address", "city", "country"):
            rows[k].append(state[k])
        rows["region"].append(stores.region_label(state["region"]))
        rows["loyalty_tier"].append(TIERS[state["tier"]])
        rows["kind"].append(kind)
        rows["change"].append(change)

    late_set = set(late.tolist())
    for i in range(n):
        state = {k: (v[i] if not isinstance(v, np.ndarray) else int(v[i])) for k, v in base.items()}
        emit(i, int(signup[i]), state, "signup", "")
        for j, (t, kind) in enumerate(change_plan.get(i, [])):
            if kind == "tier":
                state["tier"] = _next_tier(state["tier"], float(rng.random()))
            else:
                ci = int(stores.region_country[state["region"]])
                same_country = np.flatnonzero(stores.region_country == ci).tolist()
                choices = [r for r in same_country if r != state["region"]]
                state["region"] = choices[int(rng.integers(0, len(choices)))]
                cities = stores.region_cities[state["region"]]
                state["city"] = cities[int(rng.integers(0, len(cities)))]
                state["street_address"] = _street(rng, state["country"])
            emit(i, t, state, "late" if (i in late_set and j == 0) else "change", kind)
    versions = pd.DataFrame(rows)
    versions["delivered"] = np.where(versions["ts"].to_numpy() < b1_end, 1, 2)
    versions.loc[versions["kind"] == "late", "delivered"] = 2
    # REPEATS: customers untouched in batch 2 get one of their batch-1 versions re-sent verbatim.
    touched = set(versions.loc[versions["delivered"] == 2, "cust"].tolist())
    b1 = versions[(versions["delivered"] == 1) & ~versions["cust"].isin(touched)]
    pool = np.array(sorted(set(b1["cust"].tolist())))
    n_rep = max(MIN_REPEAT, round(REPEAT_SHARE * n))
    picked = np.sort(rng.choice(pool, n_rep, replace=False))
    rows_of = b1.groupby("cust").indices  # customer -> positions in b1
    pick_rows = [rows_of[i][int(rng.integers(0, len(rows_of[i])))] for i in picked.tolist()]
    repeat_rows = b1.iloc[pick_rows].assign(kind="repeat", delivered=2)
    return pd.concat([versions, repeat_rows], ignore_index=True)
