"""One package per competition, each built only on ``pipelines.core``."""
