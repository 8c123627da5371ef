"""How a blast probability becomes a label, and which cells go to a human."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecisionSettings:
    """How a p_blast becomes a label; the band [review_low, review_high) goes to a human."""

    threshold: float = 0.5
    review_low: float = 0.25
    review_high: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 <= self.review_low <= self.threshold <= self.review_high <= 1.0:
            raise ValueError("decision settings must satisfy 0 <= review_low <= threshold <= review_high <= 1")

    def as_dict(self) -> dict[str, float]:
        """As recorded with a capture's results (the settings that produced its labels)."""
        return {"threshold": self.threshold, "review_low": self.review_low, "review_high": self.review_high}

    @classmethod
    def from_model(cls, provenance: dict) -> "DecisionSettings":
        decision = provenance.get("decision", {}) if isinstance(provenance, dict) else {}
        return cls(**{k: float(v) for k, v in decision.items() if k in ("threshold", "review_low", "review_high")})


def verdict_label(p_blast: float, decision: DecisionSettings) -> tuple[str, bool]:
    label = "blast" if p_blast >= decision.threshold else "normal"
    return label, decision.review_low <= p_blast < decision.review_high
