"""Per-promotion study design and the readout tables built from per-arm summaries (pandas, driver side).

A promotion is a **randomised experiment** when ``dim_promotion.is_randomized`` is true and it has a control
arm (``is_control``) with at least ``min_arm_size`` customers; its differences vs control are causal
effects. Anything else is an **observational** study: its exposed customers are compared with a
comparison group (its non-random control arm when it has one, else eligible unexposed customers), the
readout says why the difference is not causal, and an optional propensity-weighted estimate is added.

Example:
    >>> p = classify("PRM003", "VIP offer", False, {"treatment": 826}, [], 14, 0.1, min_arm_size=20)
    >>> p.study_type, p.use_comparison, p.causal
    ('OBSERVATIONAL', True, False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from cpbi_spark.analytics.uplift import observational, readout
from cpbi_spark.analytics.uplift.features import COMPARISON_ARM

RANDOMIZED = "RANDOMIZED"
OBSERVATIONAL = "OBSERVATIONAL"


@dataclass
class Promotion:
    """Design facts of one promotion, as found in the data and ``dim_promotion``."""

    promotion_id: str
    name: str
    is_randomized: bool
    arm_counts: dict[str, int]
    control_arms: list[str]
    window_days: int
    cost: float
    study_type: str
    reason: str
    control_arm: str | None
    use_comparison: bool
    extra: dict = field(default_factory=dict)

    @property
    def causal(self) -> bool:
        return self.study_type == RANDOMIZED

    @property
    def treatment_arms(self) -> list[str]:
        return sorted(a for a in self.arm_counts if a not in self.control_arms)

    @property
    def arms(self) -> list[str]:
        """Reference arm first, then the treatment arms (the code order of the learners)."""
        return [self.control_arm or COMPARISON_ARM, *self.treatment_arms]


def classify(promotion_id: str, name: str, is_randomized: bool, arm_counts: Mapping[str, int],
             control_arms: Sequence[str], window_days: int, cost: float, *, min_arm_size: int) -> Promotion:
    """Decide randomised vs observational, the reference arm and whether a comparison group is needed."""
    controls = sorted(control_arms, key=lambda a: -arm_counts.get(a, 0))
    control = controls[0] if controls else None
    control_n = arm_counts.get(control, 0) if control else 0
    has_treatment = any(a not in control_arms for a in arm_counts)
    reason = observational.observational_reason(bool(is_randomized), control is not None, control_n, min_arm_size)
    if not reason and not has_treatment:
        reason = "the promotion has only control customers: there is nothing to compare"
    study_type = RANDOMIZED if not reason else OBSERVATIONAL
    # An observational study keeps its own (non-random) control arm when it is large enough.
    use_comparison = study_type == OBSERVATIONAL and control_n < min_arm_size
    return Promotion(promotion_id, name, bool(is_randomized), dict(arm_counts), list(control_arms), int(window_days),
                     float(cost), study_type, reason, None if use_comparison else control, use_comparison)


def srm_row(p: Promotion, planned: Mapping[str, float] | None, srm_alpha: float) -> dict:
    """The sample-ratio-mismatch test of a randomised promotion (``not_applicable`` otherwise)."""
    if not p.causal:
        return {"srm_basis": "not_applicable", "srm_chi2": None, "srm_df": None, "srm_p_value": None,
                "srm_flag": None}
    counts = {a: n for a, n in p.arm_counts.items()}
    if planned:
        basis, shares = "planned", dict(planned)
    else:
        basis, shares = "assumed_equal", {a: 1.0 / len(counts) for a in counts}
    chi2, df, pv = readout.srm_test(counts, shares)
    return {"srm_basis": basis, "srm_chi2": chi2, "srm_df": df, "srm_p_value": pv, "srm_flag": bool(pv < srm_alpha)}


def mark_reference(summary: pd.DataFrame, promotions: Mapping[str, Promotion]) -> pd.DataFrame:
    """``is_control`` = the promotion's reference arm; rows of other control-like arms are dropped."""
    if summary.empty:
        return summary
    s = summary[summary["promotion_id"].isin(list(promotions))].copy()
    ref = s["promotion_id"].map(lambda pid: promotions[pid].control_arm or COMPARISON_ARM)
    s["is_control"] = s["arm"] == ref
    # Arms that are controls of another kind (e.g. a small non-random holdout) are not compared.
    keep = [bool(c) or a in promotions[pid].treatment_arms for pid, a, c in zip(s["promotion_id"], s["arm"],
                                                                                  s["is_control"], strict=True)]
    return s[keep].reset_index(drop=True)


def build_readout(overall: pd.DataFrame, by_segment: pd.DataFrame, promotions: Mapping[str, Promotion], *,
                  alpha: float, correction: str) -> pd.DataFrame:
    """Readout rows (estimate ``unadjusted``) for every promotion: overall (``segment = all``) and per segment.

    ``overall`` / ``by_segment``: summaries (``n``, ``mean__``/``var__`` of the outcome columns) by
    promotion (and segment), arm and ``is_control``. The reference arm of each promotion is marked as
    the control; p-values are adjusted within (promotion, metric, level).
    """
    frames = []
    for summary in (overall.assign(segment=readout.ALL_SEGMENTS), by_segment):
        if summary.empty:
            continue
        s = mark_reference(summary, promotions)
        frames.append(readout.compare_to_control(s, group=["promotion_id", "segment"], alpha=alpha))
    if not frames or all(f.empty for f in frames):
        return pd.DataFrame()
    rows = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    rows["level"] = rows["segment"].map(lambda s: "overall" if s == readout.ALL_SEGMENTS else "segment")
    rows = readout.add_adjusted_pvalues(rows, ["promotion_id", "metric", "level"], correction, alpha)
    rows["correction"] = correction
    rows["estimate"] = "unadjusted"
    rows["study_type"] = rows["promotion_id"].map(lambda pid: promotions[pid].study_type)
    rows["causal"] = rows["promotion_id"].map(lambda pid: promotions[pid].causal)
    rows["interpretation"] = [readout.describe(r, bool(r["causal"]), alpha) for r in rows.to_dict("records")]
    return rows.drop(columns=["level", "se"])


def adjusted_rows(p: Promotion, frame: pd.DataFrame, covariates: Sequence[str], *, alpha: float, settings,
                  seed: int, smd_threshold: float) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Propensity-weighted (ATT) readout rows, weighted balance and overlap diagnostics of one promotion.

    ``frame``: the promotion's units (exposed arms and the reference group) with outcomes and features.
    """
    exposed = (frame["arm"] != (p.control_arm or COMPARISON_ARM)).to_numpy()
    covs = observational.covariates_for_propensity(covariates, frame)
    rows, balance_rows, overlap = [], [], {}
    if exposed.all() or not exposed.any() or not covs:
        return pd.DataFrame(), pd.DataFrame(), {"status": "not_estimable"}
    r = observational.ipw_att(frame[covs], exposed,
                              {m: frame[col].to_numpy(dtype=float) for m, (col, _k) in readout.METRICS.items()},
                              clip=tuple(settings.propensity_clip), bounds=tuple(settings.overlap_bounds),
                              bootstrap=settings.bootstrap, seed=seed, alpha=alpha, smd_threshold=smd_threshold)
    overlap = r["overlap"]
    label = observational.adjusted_label(overlap["status"])
    reference = p.control_arm or COMPARISON_ARM
    for metric, (col, _kind) in readout.METRICS.items():
        est = r["estimates"][metric]
        y = frame[col].to_numpy(dtype=float)
        rows.append({
            "promotion_id": p.promotion_id, "segment": readout.ALL_SEGMENTS, "arm": "exposed",
            "control_arm": f"{reference} (weighted)", "metric": metric,
            "n": int(exposed.sum()), "value": float(y[exposed].mean()), "control_n": int((~exposed).sum()),
            "control_value": est["control_value"], "difference": est["att"],
            "relative_lift": est["att"] / est["control_value"] if est["control_value"] else math.nan,
            "ci_low": est["ci_low"], "ci_high": est["ci_high"],
            "ci_method": f"bootstrap_percentile_{settings.bootstrap}",
            "statistic": est["att"] / est["se"] if est["se"] == est["se"] and est["se"] > 0 else math.nan,
            "df": math.nan, "p_value": est["p_value"], "p_adjusted": est["p_value"], "correction": "none",
            "estimate": "ipw_adjusted", "study_type": OBSERVATIONAL, "causal": False,
            "interpretation": f"{label}; overlap {overlap['status']} "
                              f"({overlap['share_exposed_outside']:.0%} of exposed customers above the "
                              f"{settings.overlap_bounds[1]:.2f} propensity bound, weighted max |SMD| "
                              f"{overlap['max_abs_smd_after']:.2f})",
        })
    w = r["propensity"][~exposed] / (1 - r["propensity"][~exposed])
    for cov in covs:
        balance_rows.append({"promotion_id": p.promotion_id, "arm": "exposed", "covariate": cov,
                             "weighting": "ipw_att", "mean_arm": float(frame.loc[exposed, cov].mean()),
                             "mean_control": float((w * frame.loc[~exposed, cov].to_numpy(dtype=float)).sum()
                                                   / w.sum()),
                             "smd": float(r["smd_after"][cov]),
                             "flagged": bool(abs(r["smd_after"][cov]) > smd_threshold)})
    out = pd.DataFrame(rows)
    out["significant"] = (out["p_value"] < alpha) & out["p_value"].notna()
    return out, pd.DataFrame(balance_rows), overlap


def study_row(p: Promotion, srm: Mapping, balance_table: pd.DataFrame, overlap: Mapping, n_units: int) -> dict:
    """One ``uplift_studies`` row."""
    b = balance_table[(balance_table["promotion_id"] == p.promotion_id) & (balance_table["weighting"] == "none")] \
        if not balance_table.empty else balance_table
    n_comparison = n_units - sum(p.arm_counts.values()) if p.use_comparison else 0
    label = (f"{RANDOMIZED}: differences vs {p.control_arm} are causal effects of the promotion"
             if p.causal else f"{OBSERVATIONAL}: not a causal effect - {p.reason}")
    return {
        "promotion_id": p.promotion_id, "promotion_name": p.name, "study_type": p.study_type, "causal": p.causal,
        "reason": p.reason or "randomised assignment with a control arm", "is_randomized": p.is_randomized,
        "has_control": bool(p.control_arms), "arms": ",".join(p.arms), "control_arm": p.control_arm or COMPARISON_ARM,
        "n_units": int(n_units), "n_exposed": int(sum(p.arm_counts.values())), "n_comparison": int(n_comparison),
        "response_window_days": p.window_days, "cost_per_contact": p.cost, **srm,
        "balance_max_abs_smd": float(b["smd"].abs().max()) if len(b) else None,
        "balance_flagged_covariates": int(b["flagged"].sum()) if len(b) else 0,
        "overlap_status": overlap.get("status") if overlap else ("not_applicable" if p.causal else None),
        "overlap_share_exposed_outside": overlap.get("share_exposed_outside") if overlap else None,
        "overlap_share_comparison_outside": overlap.get("share_comparison_outside") if overlap else None,
        "overlap_ess_comparison": overlap.get("ess_comparison") if overlap else None,
        "overlap_max_abs_smd_after": overlap.get("max_abs_smd_after") if overlap else None,
        "label": label,
    }
