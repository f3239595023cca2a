"""What the demo, the simulator, the benchmarks and the fault scenarios make up: synthetic
photos with EXIF (images), sample case histories made by the real aggregate (histories), the
pipeline run live beside them (live). Tests use them too; serving code never imports them
(a contract in pyproject.toml)."""
