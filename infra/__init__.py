"""Local servers for development and tests: Kafka, MinIO and PostgreSQL run as real processes.

Entry points: infra.stack (Python API) and infra.cli (`gridflow up/down/status`).
"""
