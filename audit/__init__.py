"""Audit: replay the log into a fresh database, verify it against the live one, see any moment.

Pure cores (chain, segments, summaries, what-if, moments) are separate from the adapters
(Kafka and object-store readers, the archiver, database comparison) and the CLI.
"""
