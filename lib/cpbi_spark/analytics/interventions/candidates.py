"""Candidate interventions from the analyses' insight tables, each with an expected value and its interval.

Every function takes the (small, aggregated) insight tables as pandas frames and returns rows of
:data:`COLUMNS`. ``expected_value`` is the incremental **profit** over the horizon: the margin on the
incremental net revenue after returns, minus the action's direct cost (contacts). The interval combines
the statistical interval of the evidence (a measured uplift, a rule's volume, a return rate) with the
assumed range of what is not measured (a take rate, a reduction share); the row's ``assumptions`` say which.

Example:
    >>> rows = cross_sell(rules, scopes, cfg, run_id="20261125T101500Z", data_span=(t0, t1))  # doctest: +SKIP
    >>> rows[["action", "expected_value", "ci_low", "ci_high"]].head()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from cpbi_spark.analytics.interventions.config import InterventionsConfig

COLUMNS = ["intervention_id", "intervention_type", "action", "audience", "audience_size", "expected_value",
           "ci_low", "ci_high", "horizon_days", "confidence", "evidence", "assumptions", "source_analysis",
           "source_table", "source_run_id"]
Z95 = 1.959963984540054


def intervention_id(kind: str, *key: object) -> str:
    """A stable id from the type and what it acts on (the same action keeps its id across runs)."""
    text = "|".join([kind, *map(str, key)])
    return f"{kind}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def poisson_interval(count: float, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson mean given an observed ``count``.

    >>> tuple(round(x, 2) for x in poisson_interval(10))
    (4.8, 18.39)
    """
    from scipy.stats import chi2

    low = 0.0 if count <= 0 else chi2.ppf(alpha / 2, 2 * count) / 2
    return float(low), float(chi2.ppf(1 - alpha / 2, 2 * count + 2) / 2)


def wilson_interval(x: float, n: float, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion (statsmodels), (nan, nan) without trials."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return math.nan, math.nan
    low, high = proportion_confint(x, n, alpha=alpha, method="wilson")
    return float(low), float(high)


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def cross_sell(rules: pd.DataFrame, scopes: pd.DataFrame, cfg: InterventionsConfig, run_id: str,
               data_span: tuple[object, object]) -> pd.DataFrame:
    """Prompt consequent C to baskets holding antecedent A without C, for strong, low-return rules.

    Volume: baskets with A and without C in the analysed window (``data_span`` = first and last basket
    time when the analysis had no window), scaled to the horizon (Poisson interval).
    Value per added C: the rule's ``consequent_net_value`` (margin minus expected return cost, per unit).
    Take rate: assumed (``cross_sell.take_rate`` within its low/high range). One row per item pair,
    the direction with the higher value.
    """
    c = cfg.cross_sell
    if rules.empty:
        return _frame([])
    sel = rules[(rules["level"] == c.level) & (rules["segment_key"] == "all") & rules["is_significant"].fillna(False)
                & ~rules["high_return_flag"].fillna(False) & ~rules["low_expected_count"].fillna(False)
                & (rules["lift"] >= c.min_lift) & (rules["consequent_size"] == 1)
                & (rules["consequent_net_value"] > 0)].copy()
    if sel.empty:
        return _frame([])
    scope = scopes[(scopes["level"] == c.level) & (scopes["segment_key"] == "all")]
    start, end = pd.Timestamp(scope["window_start"].iloc[0]), pd.Timestamp(scope["window_end"].iloc[0])
    if pd.isna(start) or pd.isna(end):  # no window configured: the data's own span
        start, end = (pd.Timestamp(x) if x is not None else pd.NaT for x in data_span)
    timed = not (pd.isna(start) or pd.isna(end))
    # Without basket times (a basket-per-line export) volumes cannot be put per day: the observed volume is used.
    window_days = max((end - start).total_seconds() / 86400.0, 1.0) if timed else None
    scale = cfg.horizon_days / window_days if timed else 1.0
    horizon = cfg.horizon_days if timed else None
    sel["gap"] = (sel["antecedent_count"] - sel["support_count"]).clip(lower=0)
    sel["value"] = sel["gap"] * scale * c.take_rate * sel["consequent_net_value"]
    sel["pair"] = sel.apply(lambda r: " & ".join(sorted([r["antecedent_key"], r["consequent_key"]])), axis=1)
    best = sel.sort_values(["value", "lift"], ascending=False).drop_duplicates("pair").head(c.max_rules)
    rows = []
    for r in best.itertuples(index=False):
        lo_n, hi_n = poisson_interval(r.gap)
        a_name = r.antecedent_names or r.antecedent_key
        c_name = r.consequent_names or r.consequent_key
        rows.append({
            "intervention_id": intervention_id("cross_sell", c.level, r.antecedent_key, r.consequent_key),
            "intervention_type": "cross_sell",
            "action": f"Recommend {c_name} to shoppers buying {a_name} (bundle or checkout prompt)",
            "audience": f"baskets with {a_name} but not {c_name}",
            "audience_size": round(r.gap * scale),
            "expected_value": r.value,
            "ci_low": lo_n * scale * c.take_rate_low * r.consequent_net_value,
            "ci_high": hi_n * scale * c.take_rate_high * r.consequent_net_value,
            "horizon_days": horizon,
            "confidence": "medium" if r.p_adjusted < 0.001 else "low",
            "evidence": (f"rule {r.antecedent_key} -> {r.consequent_key}: lift {r.lift:.2f}, confidence "
                         f"{r.confidence:.1%}, adjusted p {r.p_adjusted:.1e}, consequent return rate "
                         f"{r.consequent_return_rate:.1%}, net value {r.consequent_net_value:.2f} per unit; "
                         f"{int(r.gap):,} baskets had {r.antecedent_key} without it "
                         + (f"in {window_days:.0f} days" if timed else "in the data")),
            "assumptions": (f"take rate {c.take_rate:.0%} of prompted baskets (range {c.take_rate_low:.0%}-"
                            f"{c.take_rate_high:.0%}), "
                            + ("volume as in the analysed window" if timed
                               else "the observed volume once (the data have no basket times)")),
            "source_analysis": "baskets", "source_table": "basket_rules", "source_run_id": run_id,
        })
    return _frame(rows)


def best_randomised_uplift(readout: pd.DataFrame, studies: pd.DataFrame) -> pd.Series | None:
    """The overall conversion uplift of the randomised promotion arm with the highest significant effect."""
    if readout.empty or studies.empty:
        return None
    causal = set(studies.loc[studies["causal"].fillna(False), "promotion_id"])
    r = readout[readout["promotion_id"].isin(causal) & (readout["segment"] == "all")
                & (readout["metric"] == "conversion") & readout["difference"].notna()
                & readout["significant"].fillna(False) & (readout["difference"] > 0)]
    if "estimate" in r:
        r = r[r["estimate"] == "unadjusted"]
    return None if r.empty else r.sort_values("difference", ascending=False).iloc[0]


def win_back(profile: pd.DataFrame, readout: pd.DataFrame, studies: pd.DataFrame, cfg: InterventionsConfig,
             run_id: str) -> pd.DataFrame:
    """Contact RFM segments at risk of not buying again, valued with the best measured promotion response.

    Expected value = customers x conversion uplift x margin on their mean net order value - contact cost.
    The uplift and its 95% interval are those of the best significant randomised promotion (the response
    of a comparable contact); without one the assumed response rate is used (confidence low).
    """
    w, margin = cfg.win_back, float(cfg.margin_rate or 0)
    if profile.empty:
        return _frame([])
    best = best_randomised_uplift(readout, studies)
    cost = 0.0
    if best is not None:
        lift, lift_lo, lift_hi = float(best["difference"]), float(best["ci_low"]), float(best["ci_high"])
        row = studies[studies["promotion_id"] == best["promotion_id"]]
        cost = float(row["cost_per_contact"].fillna(0).iloc[0]) if len(row) else 0.0
        source = (f"randomised promotion {best['promotion_id']} ({best['arm']}): conversion uplift "
                  f"{lift:+.1%} (95% CI {lift_lo:+.1%} to {lift_hi:+.1%})")
        confidence, assumption = "medium", (f"at-risk customers respond like the customers of "
                                            f"{best['promotion_id']}; one extra order per responder")
    else:
        lift = lift_lo = lift_hi = w.assumed_response_rate
        source, confidence = "no randomised promotion with a significant effect", "low"
        assumption = f"assumed response rate {lift:.0%}; one extra order per responder"
    rows = []
    for segment in w.segments:
        members = profile[profile["rfm_segment"] == segment]
        n = len(members)
        if n == 0:
            continue
        orders = members["orders"].clip(lower=1)
        order_value = float((members["net_revenue"] / orders).mean())
        per = margin * order_value

        def value(u: float, n: int = n, per: float = per) -> float:
            return n * (u * per - cost)

        rows.append({
            "intervention_id": intervention_id("win_back", segment),
            "intervention_type": "win_back",
            "action": f"Win-back offer to the '{segment}' customers",
            "audience": f"RFM segment {segment}", "audience_size": n,
            "expected_value": value(lift), "ci_low": value(lift_lo), "ci_high": value(lift_hi),
            "horizon_days": cfg.horizon_days, "confidence": confidence,
            "evidence": (f"{n:,} customers, mean net order value {order_value:,.2f}, mean recency "
                         f"{members['recency_days'].mean():.0f} days; {source}"),
            "assumptions": f"{assumption}; margin {margin:.0%}; contact cost {cost:.2f}",
            "source_analysis": "cohorts", "source_table": "customer_purchase_profile",
            "source_run_id": run_id,
        })
    return _frame(rows)


def _causal_readout(readout: pd.DataFrame, studies: pd.DataFrame, metric: str) -> pd.DataFrame:
    causal = set(studies.loc[studies["causal"].fillna(False), "promotion_id"])
    r = readout[readout["promotion_id"].isin(causal) & (readout["metric"] == metric)
                & readout["difference"].notna()]
    return r[r["estimate"] == "unadjusted"] if "estimate" in r else r


def _study_terms(studies: pd.DataFrame, promotion_id: str, cfg: InterventionsConfig) -> tuple[float, int]:
    """A promotion's contact cost (0 when unknown) and its response window (the horizon of its actions)."""
    study = studies[studies["promotion_id"] == promotion_id].iloc[0]
    cost = float(study["cost_per_contact"]) if pd.notna(study["cost_per_contact"]) else 0.0
    window = study["response_window_days"]
    return cost, int(window) if pd.notna(window) else cfg.horizon_days


def promotion_targeting(readout: pd.DataFrame, studies: pd.DataFrame, cfg: InterventionsConfig,
                        run_id: str) -> pd.DataFrame:
    """Send a randomised promotion's arm to the segments where it measurably pays, valued per campaign.

    Per promotion, arm and segment: customers of the segment in the study x (margin x net revenue uplift
    per customer - contact cost), with the Welch interval of the uplift. Kept when the interval of the
    conversion uplift is above zero and the value is positive.
    """
    margin, p = float(cfg.margin_rate or 0), cfg.promotions
    rev = _causal_readout(readout, studies, "net_revenue_per_customer")
    conv = _causal_readout(readout, studies, "conversion")
    if rev.empty:
        return _frame([])
    rows = []
    for r in rev[rev["segment"] != "all"].itertuples(index=False):
        c = conv[(conv["promotion_id"] == r.promotion_id) & (conv["segment"] == r.segment) & (conv["arm"] == r.arm)]
        if c.empty or not (c["ci_low"].iloc[0] > 0):
            continue
        n = int(r.n + r.control_n)
        if n < p.min_segment_customers:
            continue
        cost, horizon = _study_terms(studies, r.promotion_id, cfg)

        def value(d: float, n: int = n, cost: float = cost) -> float:
            return n * (margin * d - cost)

        if value(r.difference) <= 0:
            continue
        cu = c.iloc[0]
        rows.append({
            "intervention_id": intervention_id("promotion_target", r.promotion_id, r.arm, r.segment),
            "intervention_type": "promotion_target",
            "action": f"Send {r.promotion_id} ({r.arm}) to {r.segment} customers",
            "audience": f"segment {r.segment}", "audience_size": n,
            "expected_value": value(r.difference), "ci_low": value(r.ci_low), "ci_high": value(r.ci_high),
            "horizon_days": horizon,
            "confidence": "high" if bool(cu["significant"]) else "medium",
            "evidence": (f"randomised test: conversion {cu['value']:.1%} vs control {cu['control_value']:.1%} "
                         f"({cu['difference']:+.1%}, 95% CI {cu['ci_low']:+.1%} to {cu['ci_high']:+.1%}); "
                         f"net revenue per customer {r.difference:+.2f} (95% CI {r.ci_low:+.2f} to "
                         f"{r.ci_high:+.2f})"),
            "assumptions": (f"the next campaign reaches as many {r.segment} customers as the test; margin "
                            f"{margin:.0%}; contact cost {cost:.2f}"),
            "source_analysis": "uplift", "source_table": "uplift_readout", "source_run_id": run_id,
        })
    return _frame(rows)


def promotion_stop(readout: pd.DataFrame, studies: pd.DataFrame, cfg: InterventionsConfig,
                   run_id: str) -> pd.DataFrame:
    """Stop sending a randomised promotion's arm whose net revenue uplift is not above zero.

    Value of stopping = treated customers x (contact cost - margin x net revenue uplift per customer):
    the cost saved plus the harm avoided when the effect is negative.
    """
    margin = float(cfg.margin_rate or 0)
    rev = _causal_readout(readout, studies, "net_revenue_per_customer")
    rows = []
    for r in rev[rev["segment"] == "all"].itertuples(index=False):
        if r.ci_low > 0:  # it pays on average: not a stop candidate
            continue
        cost, horizon = _study_terms(studies, r.promotion_id, cfg)
        n = int(r.n)

        def value(d: float, n: int = n, cost: float = cost) -> float:
            return n * (cost - margin * d)

        if value(r.difference) <= 0:
            continue
        verdict = "a negative effect" if r.ci_high < 0 else "no effect distinguishable from zero"
        rows.append({
            "intervention_id": intervention_id("promotion_stop", r.promotion_id, r.arm),
            "intervention_type": "promotion_stop",
            "action": f"Stop {r.promotion_id} ({r.arm}): {verdict}",
            "audience": f"customers sent {r.promotion_id} ({r.arm})", "audience_size": n,
            "expected_value": value(r.difference), "ci_low": value(r.ci_high), "ci_high": value(r.ci_low),
            "horizon_days": horizon,
            "confidence": "high" if r.ci_high < 0 else "medium",
            "evidence": (f"randomised test: net revenue per customer {r.difference:+.2f} vs control (95% CI "
                         f"{r.ci_low:+.2f} to {r.ci_high:+.2f}), p {r.p_value:.2g}"),
            "assumptions": f"margin {margin:.0%}; contact cost {cost:.2f} saved per customer not contacted",
            "source_analysis": "uplift", "source_table": "uplift_readout", "source_run_id": run_id,
        })
    return _frame(rows)


def return_reduction(rates: pd.DataFrame, cfg: InterventionsConfig, window_days: float,
                     run_id: str) -> pd.DataFrame:
    """Reduce returns in categories whose value return rate is far above the overall rate.

    Excess refunds = (category rate - overall rate) x sold value, per horizon; the action is assumed to
    remove ``reduction_share`` of them, each avoided refund keeping its margin and its handling cost. The
    interval carries the Wilson interval of the category's line return rate.
    """
    r_cfg, margin = cfg.returns, float(cfg.margin_rate or 0)
    cats = rates[rates["dimension"] == "category"].copy()
    if cats.empty or cats["sold_amount"].sum() <= 0:
        return _frame([])
    overall = cats["returned_amount"].sum() / cats["sold_amount"].sum()
    scale = cfg.horizon_days / max(window_days, 1.0)
    per_refund = (margin + r_cfg.handling_cost_rate) * r_cfg.reduction_share
    high = cats[cats["amount_return_rate"] >= r_cfg.min_rate_ratio * overall].copy()
    high["excess"] = (high["amount_return_rate"] - overall) * high["sold_amount"] * scale
    rows = []
    for r in high.sort_values("excess", ascending=False).head(r_cfg.max_categories).itertuples(index=False):
        lo, hi = wilson_interval(r.returned_lines, r.sale_lines)
        # the rate interval on lines, carried to the value rate proportionally
        ratio_lo = lo / r.line_return_rate if r.line_return_rate else 1.0
        ratio_hi = hi / r.line_return_rate if r.line_return_rate else 1.0

        def value(rate: float, sold: float = r.sold_amount) -> float:
            return max(rate - overall, 0.0) * sold * scale * per_refund

        rows.append({
            "intervention_id": intervention_id("return_reduction", r.dimension_value),
            "intervention_type": "return_reduction",
            "action": f"Cut returns in {r.dimension_value} (size/fit guidance, product content, quality check)",
            "audience": f"buyers of category {r.dimension_value}", "audience_size": round(r.sale_lines * scale),
            "expected_value": value(r.amount_return_rate),
            "ci_low": value(r.amount_return_rate * ratio_lo), "ci_high": value(r.amount_return_rate * ratio_hi),
            "horizon_days": cfg.horizon_days, "confidence": "medium",
            "evidence": (f"value return rate {r.amount_return_rate:.1%} vs {overall:.1%} overall; line return "
                         f"rate {r.line_return_rate:.1%} (95% CI {lo:.1%} to {hi:.1%}) over {int(r.sale_lines):,} "
                         f"mature sale lines"),
            "assumptions": (f"the action removes {r_cfg.reduction_share:.0%} of the excess returns; an avoided "
                            f"return keeps the margin ({margin:.0%}) and the handling cost "
                            f"({r_cfg.handling_cost_rate:.0%} of the refund)"),
            "source_analysis": "cohorts", "source_table": "return_rates", "source_run_id": run_id,
        })
    return _frame(rows)


def rank(candidates: list[pd.DataFrame], top_n: int) -> pd.DataFrame:
    """All candidates ranked by expected value (ties by the interval's lower end), ``rank`` from 1."""
    frames = [c for c in candidates if not c.empty]
    if not frames:
        return _frame([]).assign(rank=pd.Series(dtype="int64"))
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(["expected_value", "ci_low", "intervention_id"], ascending=[False, False, True])
    out = out.head(top_n).reset_index(drop=True)
    out["rank"] = range(1, len(out) + 1)
    return out
