"""Fault scenarios on the local stack that count what the system was told against what it kept
(`gridflow chaos`). Each scenario runs gridflow's real processes and prints its accounting."""
