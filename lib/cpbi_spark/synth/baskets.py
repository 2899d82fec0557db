"""Basket composition with analytically known item-pair lifts (planted truth #1).

Process, per basket and independently of the customer:

* every product j is included independently with probability ``pi[j]`` (Bernoulli per basket,
  so a product appears at most once per basket);
* for each planted pair (a, b) a fraction ``q`` of baskets is forced to contain both;
* a basket left empty gets one "filler" product drawn from the products that are in no
  planted or independent pair, so the inclusion probabilities of the pair items stay exact.

Hence ``P(a) = 1 - (1 - q)(1 - pi_a)`` and ``P(a, b) = q + (1 - q) pi_a pi_b`` per basket, and the
independent pairs (q = 0) have lift exactly 1.

Example:
    >>> import numpy as np
    >>> from cpbi_spark.synth.timeline import Timeline
    >>> from cpbi_spark.synth.catalog import build_catalog
    >>> model = BasketModel(build_catalog(42, 300, Timeline()), seed=42)
    >>> basket, product = model.draw(np.random.default_rng(0), 1000)
    >>> bool(np.unique(basket).size == 1000)  # no basket is empty
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpbi_spark.synth.catalog import Catalog
from cpbi_spark.synth.params import TARGET_LINES_PER_BASKET
from cpbi_spark.synth.seeding import derive_rng

ZIPF_EXPONENT = 0.9
MAX_BACKGROUND_PI = 0.06  # background items stay less popular than the planted "popular" items


@dataclass(frozen=True)
class PairSpec:
    """A planted pair placed on the first free product of each category."""

    category_a: str
    category_b: str
    pi_a: float
    pi_b: float
    q: float  # share of baskets forced to contain both; 0 for an independent pair
    kind: str  # "planted" or "independent"


PAIR_SPECS: tuple[PairSpec, ...] = (
    PairSpec("Phones", "Phone Accessories", 0.035, 0.050, 0.024, "planted"),
    PairSpec("Bakery", "Dairy", 0.070, 0.065, 0.020, "planted"),
    PairSpec("Fitness", "Beverages", 0.035, 0.035, 0.022, "planted"),
    PairSpec("Produce", "Snacks", 0.100, 0.090, 0.0, "independent"),
    PairSpec("Skincare", "Haircare", 0.090, 0.080, 0.0, "independent"),
    PairSpec("Kitchen", "Personal Care", 0.080, 0.080, 0.0, "independent"),
)


def bernoulli_hits(rng: np.random.Generator, n: int, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (0..n-1) of the successes of ``n`` Bernoulli(probs[j]) trials for every j.

    Exact and O(successes): the gaps between successes are geometric, drawn for all j at once.
    Returns ``(position, j)`` arrays.
    """
    probs = np.asarray(probs, dtype=np.float64)
    mean = n * probs
    m = np.ceil(mean + 6 * np.sqrt(mean) + 10).astype(np.int64)  # enough gaps except with ~1e-9 odds
    owner = np.repeat(np.arange(len(probs)), m)
    cs = np.cumsum(rng.geometric(probs[owner]))
    seg_end = np.cumsum(m)
    seg_start = seg_end - m
    base = np.where(seg_start > 0, cs[np.maximum(seg_start - 1, 0)], 0)
    pos = cs - np.repeat(base, m) - 1
    keep = pos < n
    positions, owners = [pos[keep]], [owner[keep]]
    total = cs[seg_end - 1] - base  # = 1 + last drawn position of each j
    for j in np.flatnonzero(total < n).tolist():  # ran short: keep drawing (deterministically)
        last = int(total[j])
        while last < n:
            c = last + np.cumsum(rng.geometric(probs[j], size=int(m[j])))
            hit = c[c <= n] - 1
            positions.append(hit)
            owners.append(np.full(len(hit), j))
            last = int(c[-1])
    return np.concatenate(positions), np.concatenate(owners)


class BasketModel:
    """Inclusion probabilities per product plus the planted pairs; draws baskets' product sets."""

    def __init__(self, catalog: Catalog, seed: int) -> None:
        rng = derive_rng(seed, "basket_model")
        self.n_products = catalog.n
        self.catalog = catalog
        pi = np.zeros(catalog.n)
        taken: set[int] = set()
        pairs: list[tuple[int, int, float, PairSpec]] = []
        for spec in PAIR_SPECS:
            a = catalog.first_of_category(spec.category_a, taken)
            taken.add(a)
            b = catalog.first_of_category(spec.category_b, taken)
            taken.add(b)
            pi[a], pi[b] = spec.pi_a, spec.pi_b
            pairs.append((a, b, spec.q, spec))
        self.pairs = pairs
        special = np.array(sorted(taken))
        background = np.setdiff1d(np.arange(catalog.n), special)
        # Zipf popularity on a random order, capped, scaled so a basket has ~TARGET lines on average.
        ranks = rng.permutation(len(background))
        weights = 1.0 / (ranks + 5.0) ** ZIPF_EXPONENT
        special_mass = sum(self._pair_marginals(pi, a, b, q)[0] + self._pair_marginals(pi, a, b, q)[1]
                           for a, b, q, _ in pairs)
        p_empty = 0.0
        for _ in range(4):  # P(empty) depends on the background mass: iterate to a fixed point
            target = TARGET_LINES_PER_BASKET - special_mass - p_empty
            pi[background] = _capped_scale(weights, target, MAX_BACKGROUND_PI)
            p_empty = self.p_empty_given(pi)
        self.pi = pi
        self.background = background
        self.filler_cdf = np.cumsum(pi[background]) / pi[background].sum()

    @staticmethod
    def _pair_marginals(pi: np.ndarray, a: int, b: int, q: float) -> tuple[float, float, float]:
        p_a = 1 - (1 - q) * (1 - pi[a])
        p_b = 1 - (1 - q) * (1 - pi[b])
        return p_a, p_b, q + (1 - q) * pi[a] * pi[b]

    def p_empty_given(self, pi: np.ndarray) -> float:
        """Probability that neither the Bernoulli draws nor the forced pairs put anything in a basket."""
        log_keep = np.log1p(-pi).sum() + sum(np.log1p(-q) for _, _, q, _ in self.pairs)
        return float(np.exp(log_keep))

    def marginals(self) -> np.ndarray:
        """Per-basket inclusion probability of every product, filler included."""
        marg = self.pi.copy()
        for a, b, q, _ in self.pairs:
            marg[a], marg[b], _ = self._pair_marginals(self.pi, a, b, q)
        p_empty = self.p_empty_given(self.pi)
        filler_share = np.diff(np.concatenate([[0.0], self.filler_cdf]))
        marg[self.background] += p_empty * filler_share
        return marg

    def expected_lines_per_basket(self) -> float:
        return float(self.marginals().sum())

    def draw(self, rng: np.random.Generator, n_baskets: int) -> tuple[np.ndarray, np.ndarray]:
        """Product sets of ``n_baskets`` baskets as ``(basket_index, product_index)``, sorted."""
        if n_baskets == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        n_p = self.n_products
        pos, prod = bernoulli_hits(rng, n_baskets, self.pi)
        codes = [pos * n_p + prod]
        for a, b, q, _ in self.pairs:
            if q > 0:
                forced = np.flatnonzero(rng.random(n_baskets) < q)
                codes += [forced * n_p + a, forced * n_p + b]
        merged = np.unique(np.concatenate(codes))  # a product at most once per basket
        present = np.zeros(n_baskets, dtype=bool)
        present[merged // n_p] = True
        empty = np.flatnonzero(~present)
        filler = self.background[np.searchsorted(self.filler_cdf, rng.random(len(empty)), side="right")
                                 .clip(max=len(self.background) - 1)]
        merged = np.sort(np.concatenate([merged, empty * n_p + filler]))
        return merged // n_p, merged % n_p

    def pair_truths(self) -> list[dict]:
        """The planted expectation per pair: per-basket p_a, p_b, p_ab and lift = p_ab / (p_a p_b)."""
        out = []
        cat = self.catalog
        for a, b, q, spec in self.pairs:
            p_a, p_b, p_ab = self._pair_marginals(self.pi, a, b, q)
            out.append({
                "product_a": cat.product_id[a], "product_b": cat.product_id[b],
                "category_a": spec.category_a, "category_b": spec.category_b,
                "kind": spec.kind, "forced_share_q": q,
                "pi_a": spec.pi_a, "pi_b": spec.pi_b,
                "p_a": round(p_a, 8), "p_b": round(p_b, 8), "p_ab": round(p_ab, 8),
                "lift": round(p_ab / (p_a * p_b), 6),
                "confidence_a_to_b": round(p_ab / p_a, 6),
            })
        return out


def _capped_scale(weights: np.ndarray, total: float, cap: float) -> np.ndarray:
    """Scale ``weights`` to sum to ``total`` with no entry above ``cap`` (capped mass is redistributed)."""
    out = np.zeros_like(weights)
    free = np.ones(len(weights), dtype=bool)
    remaining = total
    for _ in range(len(weights)):
        out[free] = weights[free] * remaining / weights[free].sum()
        over = free & (out > cap)
        if not over.any():
            break
        out[over] = cap
        free &= ~over
        remaining = total - out[~free].sum()
    return out
