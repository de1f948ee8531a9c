"""What a step's domain handler returns: stored in its inbox, reported to the saga."""
from typing import Any

from pydantic import BaseModel, Field


class StepOutcome(BaseModel):
    """A step's result as stored in its inbox and reported to the saga."""

    succeeded: bool
    reason: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] | None = None  # the next step's input, when it succeeded

    @classmethod
    def ok(cls, output: BaseModel | None = None, **detail: Any) -> "StepOutcome":
        dumped = None if output is None else output.model_dump(mode="json")
        return cls(succeeded=True, output=dumped, detail=detail)

    @classmethod
    def failed(cls, reason: str, **detail: Any) -> "StepOutcome":
        return cls(succeeded=False, reason=reason, detail=detail)
