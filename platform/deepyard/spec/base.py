"""The base of every spec section: an unknown key is an error (never a silently ignored
setting), values are frozen once validated, and defaults are validated too."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


NOT_YET = "is not yet supported by this deepyard version"
