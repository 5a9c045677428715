"""All configuration, from ``LABELWRIGHT_*`` environment variables (see ``.env.example``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Precision = Literal["auto", "float32", "bfloat16"]
"""Arithmetic of the small CNN (``labelwright.core.cnn.dtype_policy``)."""
Effort = Literal["auto", "light", "standard", "high"]
"""How much the label stage trains (``labelwright.labeler.stage.EFFORTS``; auto: by estimate)."""


class Settings(BaseSettings):
    """One settings object for every process; each reads the fields it needs."""

    model_config = SettingsConfigDict(env_prefix="LABELWRIGHT_", env_file=".env", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    namespace: str = "labelwright"
    store: str = "s3://labelwright"
    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    s3_region: str = "us-east-1"
    database_url: str = "sqlite:///./labelwright.db"
    api_keys: str = ""
    gateway_url: str = "http://127.0.0.1:8000"
    api_key: str = ""

    metrics_port: int = Field(default=9100, description="/metrics port of a worker; 0 disables it")
    max_deliveries: int = Field(default=3, ge=1, description="tries before a task is dead-lettered")
    max_upload_bytes: int = 2 * 1024**3
    max_archive_ratio: int = Field(default=200, description="refuse archives that expand more")
    shard_size: int = Field(default=5000, ge=1, description="items per preprocess shard")

    image_size: int = 32
    max_image_pixels: int = 64_000_000
    max_file_bytes: int = 64 * 1024**2
    target_precision: float = Field(default=0.98, gt=0, lt=1)
    seed: int = 0
    epochs: int = 30
    precision: Precision = Field(
        default="auto", description="arithmetic of the small CNN; auto: bfloat16 where the CPU has it natively")
    label_workers: int = Field(
        default=0, ge=0, description="processes that train the label stage's folds side by side; 0: cores + 1 "
                                     "(at most the folds), 1: all folds in the stage's own process")
    label_effort: Effort = Field(
        default="auto", description="how much the label stage trains (light, standard, high); auto: high where "
                                    "its estimated time fits well inside label_time_budget, light where even "
                                    "standard would not fit")
    label_time_budget: float = Field(default=600.0, gt=0, description="seconds the label stage should take at most "
                                                                      "(guides label_effort=auto)")
    review_audit_share: float = Field(
        default=0.02, ge=0, lt=1, description="share of the unlabelled images the review queue hands out as a "
                                              "random audit sample, whose answers calibrate; 0: none")

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
