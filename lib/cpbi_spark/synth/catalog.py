"""Product catalog: department -> category -> product, list prices and the batch-2 price changes.

Example:
    >>> from cpbi_spark.synth.timeline import Timeline
    >>> cat = build_catalog(seed=42, n_products=300, timeline=Timeline())
    >>> len(cat.product_id), len(cat.category_names), cat.product_id[0]
    (300, 30, 'P00001')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpbi_spark.synth.reference_data import DEPARTMENTS, PRODUCT_ADJECTIVES
from cpbi_spark.synth.seeding import derive_rng
from cpbi_spark.synth.timeline import DAY, Timeline, iso_utc

PRICE_CHANGE_SHARE = 0.03
MIN_PRICE_CHANGES = 5


@dataclass
class Catalog:
    """Column arrays of the product master; prices are integer cents (USD)."""

    product_id: list[str]
    product_name: list[str]
    brand: list[str]
    category: np.ndarray  # index into category_names
    unit_cost_cents: np.ndarray
    list_price_cents: np.ndarray
    updated_ts: np.ndarray
    category_names: list[str]
    category_department: np.ndarray  # category index -> department index
    department_names: list[str]
    category_return_prob: np.ndarray
    department_extra_units: np.ndarray
    changed: np.ndarray  # product indices whose list price changes in batch 2
    changed_list_price_cents: np.ndarray
    change_ts: int

    @property
    def n(self) -> int:
        return len(self.product_id)

    @property
    def department(self) -> np.ndarray:
        return self.category_department[self.category]

    def list_price_at(self, product: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """USD list price (cents) of each product at each epoch second (the batch-2 change applies from
        ``change_ts`` on)."""
        price = self.list_price_cents[product].copy()
        new_price = self.list_price_cents.copy()
        new_price[self.changed] = self.changed_list_price_cents
        late = ts >= self.change_ts
        price[late] = new_price[product[late]]
        return price

    def first_of_category(self, name: str, taken: set[int]) -> int:
        """Lowest product index of category ``name`` not in ``taken`` (used to place planted items)."""
        cat = self.category_names.index(name)
        for idx in np.flatnonzero(self.category == cat).tolist():
            if idx not in taken:
                return idx
        raise ValueError(f"no free product left in category {name!r}")

    def records(self, indices: np.ndarray, batch2_prices: bool = False) -> list[dict]:
        """JSON-ready product rows (``products_<batch>.jsonl``) for ``indices``."""
        list_price = self.list_price_cents.copy()
        updated = self.updated_ts.copy()
        if batch2_prices:
            list_price[self.changed] = self.changed_list_price_cents
            updated[self.changed] = self.change_ts
        stamps = iso_utc(updated[indices])
        return [
            {
                "product_id": self.product_id[i],
                "product_name": self.product_name[i],
                "brand": self.brand[i],
                "category": self.category_names[self.category[i]],
                "department": self.department_names[self.category_department[self.category[i]]],
                "unit_cost": round(int(self.unit_cost_cents[i]) / 100, 2),
                "list_price": round(int(list_price[i]) / 100, 2),
                "updated_at": stamp,
            }
            for i, stamp in zip(indices.tolist(), stamps, strict=True)
        ]


def _to_99(usd: np.ndarray) -> np.ndarray:
    """Retail price points: whole currency units minus one cent (x.99), at least 0.99."""
    return np.maximum(np.floor(usd), 1).astype(np.int64) * 100 - 1


def build_catalog(seed: int, n_products: int, timeline: Timeline) -> Catalog:
    """The product master for ``n_products`` products (every category gets at least n/30 of them)."""
    rng = derive_rng(seed, "catalog")
    categories = [c for d in DEPARTMENTS for c in d.categories]
    cat_dept = np.array([di for di, d in enumerate(DEPARTMENTS) for _ in d.categories], dtype=np.int64)
    n_cat = len(categories)
    # Round-robin then shuffle: every category is populated, so planted items always find a product.
    category = rng.permutation(np.arange(n_products) % n_cat)
    dept = cat_dept[category]
    lo = np.array([d.price_range_usd[0] for d in DEPARTMENTS])[dept]
    hi = np.array([d.price_range_usd[1] for d in DEPARTMENTS])[dept]
    price = _to_99(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    cost = np.rint(price * rng.uniform(0.35, 0.70, n_products)).astype(np.int64)
    brand_pick = rng.integers(0, 4, n_products)
    adj_pick = rng.integers(0, len(PRODUCT_ADJECTIVES), n_products)
    model = rng.integers(100, 1000, n_products)
    brands = [DEPARTMENTS[d].brands[b] for d, b in zip(dept.tolist(), brand_pick.tolist(), strict=True)]
    names = [
        f"{b} {PRODUCT_ADJECTIVES[a]} {categories[c].noun} {m}"
        for b, a, c, m in zip(brands, adj_pick.tolist(), category.tolist(), model.tolist(), strict=True)
    ]
    # Master data predates the window: last edited in the second half of 2023.
    base = timeline.months[0].start - 214 * DAY
    updated = base + rng.integers(0, 200, n_products) * DAY + 6 * 3600
    width = max(5, len(str(n_products)))
    ids = [f"P{i + 1:0{width}d}" for i in range(n_products)]

    n_changed = max(MIN_PRICE_CHANGES, round(PRICE_CHANGE_SHARE * n_products))
    changed = np.sort(rng.choice(n_products, n_changed, replace=False))
    new_price = _to_99(price[changed] / 100 * rng.uniform(0.85, 1.15, n_changed))
    new_price = np.where(new_price == price[changed], new_price + 100, new_price)  # a change is a change
    # Prices change mid-month in batch 2, so batch-2 sales straddle the old and the new price.
    change_ts = timeline.batch_start(2) + 14 * DAY
    return Catalog(
        product_id=ids, product_name=names, brand=brands, category=category,
        unit_cost_cents=cost, list_price_cents=price, updated_ts=updated.astype(np.int64),
        category_names=[c.name for c in categories], category_department=cat_dept,
        department_names=[d.name for d in DEPARTMENTS],
        category_return_prob=np.array([c.return_prob for c in categories]),
        department_extra_units=np.array([d.extra_units_mean for d in DEPARTMENTS]),
        changed=changed, changed_list_price_cents=new_price, change_ts=int(change_ts),
    )
