"""``eval.gate``: conditions a run's evaluation must meet before ``export`` or ``serve`` will ship it.

Each condition is one mapping with a ``check`` naming its kind::

    gate:
      - {check: delta, metric: accuracy, min: 0.02}        # tuned - base >= 0.02 and the 95% CI's low end > 0
      - {check: delta, metric: "grader:correct"}            # the same on a grader's mean score
      - {check: score, metric: "grader:correct", min: 0.7}  # the tuned model's own value
      - {check: forgetting, max_pct: 5}                     # general-chat perplexity rose at most 5%
      - {check: bias_flips}                                 # tuned flip rate not above the base model's
      - {check: memorisation}                               # tuned training-data extraction not above base
      - {check: factual_drift, max: 0.05}                   # at most 5% of facts go from right to wrong
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tunesmith.core.config.base import Section


class DeltaCheck(Section):
    """tuned - base on a metric (or ``grader:<name>``) at least ``min``, and its 95% CI above 0 unless told not."""

    check: Literal["delta"]
    metric: str = Field(min_length=1, description="A metric of eval/metrics.json, e.g. accuracy or grader:<name>.")
    min: float = Field(0.0, description="The smallest acceptable tuned - base (base - tuned if lower_is_better).")
    ci_above_zero: bool = Field(True, description="Also require the 95% CI's lower bound of the gain above 0.")
    lower_is_better: bool = Field(False, description="For metrics where less is better (ece, invalid_rate).")

    def describe(self) -> str:
        gain = f"base - tuned on {self.metric}" if self.lower_is_better else f"tuned - base on {self.metric}"
        return f"{gain} >= {self.min:g}" + (" with its 95% CI above 0" if self.ci_above_zero else "")


class ScoreCheck(Section):
    """The tuned model's own value of a metric within [min, max]."""

    check: Literal["score"]
    metric: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> ScoreCheck:
        if self.min is None and self.max is None:
            raise ValueError(f"eval.gate score check on {self.metric}: set min or max")
        return self

    def describe(self) -> str:
        bounds = [f">= {self.min:g}"] if self.min is not None else []
        bounds += [f"<= {self.max:g}"] if self.max is not None else []
        return f"tuned {self.metric} " + " and ".join(bounds)


class ForgettingCheck(Section):
    """Perplexity on held-out general chat rose by at most ``max_pct`` percent (eval.forgetting)."""

    check: Literal["forgetting"]
    max_pct: float = Field(5.0, ge=0)

    def describe(self) -> str:
        return f"forgetting (general-chat perplexity change) <= {self.max_pct:g}%"


class NotAboveBaseCheck(Section):
    """The tuned model's rate (bias-probe flips, memorised training rows) at most the base model's + tolerance."""

    check: Literal["bias_flips", "memorisation"]
    tolerance: float = Field(0.0, ge=0, le=1, description="Allowed excess over the base rate (a share, 0-1).")

    def describe(self) -> str:
        what = "bias-probe flip rate" if self.check == "bias_flips" else "memorised training rows"
        return f"{what} not above base" + (f" + {self.tolerance:g}" if self.tolerance else "")


class FactualDriftCheck(Section):
    """At most ``max`` of the shipped general-knowledge questions go from right (base) to wrong (tuned)."""

    check: Literal["factual_drift"]
    max: float = Field(0.05, ge=0, le=1)

    def describe(self) -> str:
        return f"facts right for base but wrong for tuned <= {self.max:.0%}"


GateCheck = Annotated[
    DeltaCheck | ScoreCheck | ForgettingCheck | NotAboveBaseCheck | FactualDriftCheck, Field(discriminator="check")
]
