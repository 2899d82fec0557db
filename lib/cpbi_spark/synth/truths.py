"""Planted truths for the manifest: generator parameters and exact expectations derived from them.

Every ``expected``/``planted`` value below comes from the process parameters (for exposure-dependent
quantities: conditional on the drawn exposures); ``realized`` values are measured on the generated
valid rows for diagnostics only.

Example:
    >>> from cpbi_spark.synth.world import build_world
    >>> world = build_world(42, 0.05)
    >>> P = active_prob_matrix(world, 2)
    >>> P.shape == (world.pop.n, 3)
    True
"""

from __future__ import annotations

import numpy as np

from cpbi_spark.synth.activity import (
    ALPHA,
    COEF_CHANNEL,
    COEF_FIRST_DISCOUNT,
    COEF_FIRST_WEEKEND,
    COEF_TIER,
    LAMBDA_TIER_MULT,
    p_active_exposed,
    p_background,
)
from cpbi_spark.synth.params import (
    CHANNELS,
    FIRST_BASKET_DISCOUNT_PCT,
    LOCAL_PRICE_FACTOR,
    RETURN_DELAY_DAYS,
    TIERS,
)
from cpbi_spark.synth.promotions import CONVERSION_EXTRA_BASKETS, PROMOTIONS
from cpbi_spark.synth.realized import Realized
from cpbi_spark.synth.timeline import DAY, iso_date, iso_utc
from cpbi_spark.synth.world import World

REPURCHASE_MONTHS = 3


def _r(x: float) -> float:
    return round(float(x), 6)


def active_prob_matrix(world: World, last_month: int) -> np.ndarray:
    """P(customer i active in month m) for m = 0..last_month, promotion exposures included."""
    pop = world.pop
    out = np.zeros((pop.n, last_month + 1))
    for m in range(last_month + 1):
        p = p_background(pop.acq_month, world.offset, m)
        for exp in world.exposures_in_month(m):
            p[exp.cust] = p_active_exposed(exp.p_month, exp.lam, exp.f, exp.conv_prob)
        out[:, m] = p
    return out


def basket_pair_truths(world: World, real: Realized, last: int) -> dict:
    counts = real.pair_counts[: last + 1].sum(axis=0)
    n_b = int(real.baskets[: last + 1].sum())
    pairs = world.baskets.pair_truths()
    for pair, (n_a, n_bb, n_ab) in zip(pairs, counts.tolist(), strict=True):
        p_a, p_b, p_ab = n_a / n_b, n_bb / n_b, n_ab / n_b
        pair["realized"] = {"baskets": n_b, "baskets_a": n_a, "baskets_b": n_bb, "baskets_ab": n_ab,
                            "lift": _r(p_ab / (p_a * p_b)) if n_a and n_bb else None}
    return {
        "definition": ("per valid SALE basket (distinct basket_id after dedup, dirty lines excluded): "
                       "p_x = P(basket contains product x), lift = p_ab / (p_a * p_b)"),
        "process": ("independent Bernoulli(pi_j) inclusion per product and basket; a share q of baskets "
                    "is forced to contain both items of a planted pair; empty baskets get one filler "
                    "item that is never a pair item"),
        "pairs": pairs,
    }


def retention_truths(world: World, real: Realized, P: np.ndarray, last: int) -> dict:
    pop, tl = world.pop, world.timeline
    cohorts = []
    for a in range(last + 1):
        members = np.flatnonzero(pop.acq_month == a)
        if len(members) == 0:
            continue
        periods = range(last - a + 1)
        cohorts.append({
            "cohort": tl.months[a].label, "customers": len(members),
            "expected": [_r(P[members, a + k].mean()) for k in periods],
            "realized": [_r(real.active[members, a + k].mean()) for k in periods],
        })
    return {
        "definition": ("cohort = UTC month of the customer's first valid SALE basket; retention(k) = "
                       "share of the cohort with >= 1 valid SALE basket in UTC month cohort + k"),
        "expected_is": ("mean over the cohort's customers of their planted probability of being active "
                        "(promotion exposures included; conditional on the drawn exposures)"),
        "cohorts": cohorts,
    }


def _segment_block(exp, real_conv: np.ndarray | None) -> dict:
    spec = exp.spec
    effects = spec.effect_matrix() * 100
    segments = {}
    for s, tier in enumerate(TIERS):
        in_seg = exp.segment == s
        arms = {}
        for a, arm in enumerate(spec.arm_names):
            sel = in_seg & (exp.arm == a)
            arms[arm] = {
                "n": int(sel.sum()),
                "planted_effect_pp": float(effects[a, s]),
                "expected_conversion": _r(exp.conv_prob[sel].mean()) if sel.any() else None,
                "realized_conversion": (_r(real_conv[sel].mean()) if sel.any() and real_conv is not None
                                        else None),
            }
        segments[tier] = {
            "n": int(in_seg.sum()),
            "baseline_conversion": _r(exp.baseline[in_seg].mean()) if in_seg.any() else None,
            "arms": arms,
        }
    return segments


def _overall(exp, conv: np.ndarray | None, arm: int) -> dict:
    sel = exp.arm == arm
    if not sel.any():
        return {"expected_conversion": None, "expected_counterfactual": None, "realized_conversion": None}
    return {
        "expected_conversion": _r(exp.conv_prob[sel].mean()),
        "expected_counterfactual": _r(exp.baseline[sel].mean()),
        "realized_conversion": _r(conv[sel].mean()) if conv is not None else None,
    }


def promotion_truths(world: World, real: Realized, last: int) -> dict:
    out = {}
    for spec in PROMOTIONS:
        if spec.month_index > last:
            continue
        exp = world.exposures[spec.promotion_id]
        conv = real.converted.get(spec.promotion_id)
        block: dict = {
            "is_randomized": spec.is_randomized,
            "month": world.timeline.months[spec.month_index].label,
            "first_exposure": iso_utc(exp.exposed_ts[:1])[0] if len(exp.cust) else None,
            "response_window_days": spec.response_window_days,
            "arms_planned_share": dict(spec.arms),
            "arms_n": {arm: int((exp.arm == a).sum()) for a, arm in enumerate(spec.arm_names)},
            "exposed": len(exp.cust),
            "segment_by": "loyalty_tier valid at exposed_ts (SCD2 as-of the customer master)",
            "segments": _segment_block(exp, conv),
            "overall": {arm: _overall(exp, conv, a) for a, arm in enumerate(spec.arm_names)},
            "discount_pct_on_treated_response_baskets": spec.discount_pct,
        }
        if not spec.is_randomized:
            effect = float(spec.effect_matrix()[0, 0] * 100)
            targeted = float(exp.conv_prob.mean()) if len(exp.cust) else 0.0
            naive = (targeted - exp.targeting["nontargeted_baseline"]) * 100
            block["targeting"] = {k: v for k, v in exp.targeting.items()
                                  if k not in ("nontargeted_baseline",)}
            block["true_effect_pp"] = effect
            block["expected_conversion_nontargeted"] = _r(exp.targeting["nontargeted_baseline"])
            block["expected_naive_difference_pp"] = _r(naive)
            block["naive_bias_pp"] = _r(naive - effect)
            block["note"] = ("non-randomised: targeted customers are heavier buyers, so targeted vs "
                             "non-targeted conversion overstates the effect; the non-targeted expectation "
                             "holds for any response_window_days window inside the campaign month")
        out[spec.promotion_id] = block
    return {
        "definition": ("conversion = >= 1 valid SALE basket of the customer in [exposed_ts, exposed_ts + "
                       "response_window_days); planted effect = conversion(treatment arm) - "
                       "conversion(counterfactual), in percentage points, per segment"),
        "process": ("inside the window the exposed customer's background baskets are replaced: "
                    "conversion with probability baseline + effect, then "
                    f"1 + Poisson({CONVERSION_EXTRA_BASKETS}) baskets at uniform times in the window; "
                    "baseline = exact probability that the background process would have put a basket "
                    "in that window, so control = no promotion"),
        "promotions": out,
    }


def return_rate_truths(world: World, real: Realized, batch: int) -> dict:
    cat = world.catalog
    lines, returned = real.cat_lines[batch], real.cat_returned[batch]
    cutoff = world.timeline.batch_end(batch) - RETURN_DELAY_DAYS[1] * DAY
    return {
        "definition": "P(a valid sale line is returned), per product category; one return per returned line",
        "return_delay_days": list(RETURN_DELAY_DAYS),
        "censoring": (f"returns after the end of the last generated batch are never written; lines posted "
                      f"before {iso_utc([cutoff])[0]} have their returns fully observed as of this batch"),
        "returned_quantity": "uniform on 1..sold quantity; amount = returned quantity x unit_price",
        "categories": {
            name: {
                "department": cat.department_names[cat.category_department[c]],
                "return_prob": float(cat.category_return_prob[c]),
                "realized": {"lines": int(lines[c]), "returned": int(returned[c]),
                             "rate": _r(returned[c] / lines[c]) if lines[c] else None},
            }
            for c, name in enumerate(cat.category_names)
        },
    }


def repurchase_truths(world: World, real: Realized, P: np.ndarray, last: int) -> dict:
    pop = world.pop
    eligible = np.flatnonzero(pop.acq_month + REPURCHASE_MONTHS <= last)
    ks = np.arange(1, REPURCHASE_MONTHS + 1)
    idx = pop.acq_month[eligible][:, None] + ks[None, :]
    p_rep = 1 - np.prod(1 - P[eligible[:, None], idx], axis=1)
    r_rep = real.active[eligible[:, None], idx].any(axis=1)
    features = {
        "loyalty_tier": (pop.tier0[eligible], list(TIERS)),
        "first_channel": (pop.chan0[eligible], list(CHANNELS)),
        "first_basket_discount": (pop.first_discount[eligible].astype(int), [False, True]),
        "first_basket_weekend": (pop.first_weekend[eligible].astype(int), [False, True]),
    }
    expected, realized = {}, {}
    for name, (codes, levels) in features.items():
        expected[name], realized[name] = {}, {}
        for li, level in enumerate(levels):
            sel = codes == li
            key = str(level).lower()
            expected[name][key] = {"n": int(sel.sum()), "p": _r(p_rep[sel].mean()) if sel.any() else None}
            realized[name][key] = _r(r_rep[sel].mean()) if sel.any() else None
    return {
        "outcome": ("customer active (>= 1 valid SALE basket) in UTC month first_purchase_month + k, k >= 1; "
                    "months are independent given the features"),
        "model": ("logit P(active at k) = alpha_k + coef[loyalty_tier] + coef[first_channel] "
                  "+ coef * first_basket_discount + 0 * first_basket_weekend"),
        "alpha_k": {str(k): _r(ALPHA[k]) for k in range(1, last + 1)},
        "coefficients": {
            "loyalty_tier": COEF_TIER, "first_channel": COEF_CHANNEL,
            "first_basket_discount": COEF_FIRST_DISCOUNT, "first_basket_weekend": COEF_FIRST_WEEKEND,
        },
        "reference_levels": {"loyalty_tier": "bronze", "first_channel": "store"},
        "directions": {"loyalty_tier": "higher tier -> more repurchase",
                       "first_channel": "mobile > store > online",
                       "first_basket_discount": "negative", "first_basket_weekend": "none"},
        "no_effect_features": ["first_basket_weekend"],
        "feature_definitions": {
            "loyalty_tier": "loyalty_tier at the first purchase (= at signup: tier changes come later)",
            "first_channel": "channel of the store of the customer's first valid basket",
            "first_basket_discount": (f"the first basket's lines cost {100 - FIRST_BASKET_DISCOUNT_PCT:.0f}% "
                                      "of the regular local price "
                                      "round(list_price * local_price_factor[currency], 2)"),
            "first_basket_weekend": "the first basket's posted_ts falls on a Saturday or Sunday (UTC)",
            "local_price_factor": LOCAL_PRICE_FACTOR,
        },
        "basket_count": {"per_active_month": "1 + Poisson(lambda)", "lambda0": _r(world.lam0),
                         "lambda_tier_multiplier": LAMBDA_TIER_MULT},
        f"repurchase_{REPURCHASE_MONTHS}m": {
            "definition": (f"active in at least one of the {REPURCHASE_MONTHS} UTC months after the "
                           "first-purchase month (customers whose window ends inside the data)"),
            "customers": len(eligible),
            "expected": expected,
            "realized": realized,
        },
    }


def build_truths(world: World, real: Realized, batch: int) -> dict:
    """All planted truths as of the end of ``batch`` (cumulative over batches 1..batch)."""
    last = world.timeline.batch_months(batch)[-1].index
    P = active_prob_matrix(world, last)
    return {
        "basket_pairs": basket_pair_truths(world, real, last),
        "retention": retention_truths(world, real, P, last),
        "promotion_effects": promotion_truths(world, real, last),
        "return_rates": return_rate_truths(world, real, batch),
        "repurchase_drivers": repurchase_truths(world, real, P, last),
        "as_of": iso_date([world.timeline.batch_end(batch) - DAY])[0],
    }
