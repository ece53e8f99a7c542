"""The query strings of /v1: which model version a request means, and how to answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.card import ALIAS_PATTERN


class ModelQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1)
    alias: str | None = Field(default=None, pattern=ALIAS_PATTERN)

    @model_validator(mode="after")
    def _one_selector(self) -> ModelQuery:
        if self.version is not None and self.alias is not None:
            raise ValueError("give version or alias, not both")
        return self


class PredictQuery(ModelQuery):
    explain: bool = False
    top_k: int = Field(default=5, ge=1, le=1000)
    store: bool = False
    allow_other_modality: bool = False
