from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class HyperParameters(BaseModel):
    """Training hyper-parameters with sane defaults for adapters; NaN/inf and nonsense are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    learning_rate: float = Field(default=1e-3, gt=0, le=1.0)
    head_learning_rate: float | None = Field(default=None, gt=0, le=1.0)
    # LoRA+ (Hayou et al. 2024): the adapters' zero-initialised up-projections at this x learning_rate
    up_lr_ratio: float = Field(default=1.0, gt=0, le=1000)
    epochs: float = Field(default=3, gt=0, le=100)
    batch_size: int = Field(default=32, ge=1, le=1024)
    max_length: int = Field(default=128, ge=8, le=4096)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    eval_every: int | None = Field(default=None, ge=1, le=10_000_000)
    max_train_rows: int | None = Field(default=None, ge=1, le=100_000_000)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task: str = Field(max_length=200)
    base_model: str = Field(max_length=200)
    dataset_id: int = Field(ge=1)
    method: str = Field(default="houlsby", max_length=32)
    method_config: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: HyperParameters = Field(default_factory=HyperParameters)
    parent_version: int | None = Field(default=None, ge=1)


class JobOut(BaseModel):
    id: int
    task: str
    base_model: str
    dataset_id: int
    method: str
    method_config: dict[str, Any]
    hyperparameters: dict[str, Any]
    parent_version: int | None
    state: str
    progress: dict[str, Any]
    attempts: int
    max_attempts: int
    cancel_requested: bool
    error_code: str | None
    error_message: str | None
    version: int | None
    submitted_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    logs: list[str] = Field(default_factory=list)
