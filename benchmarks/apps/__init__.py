"""FastAPI apps for the throughput benchmark; each module exposes ``app``."""
