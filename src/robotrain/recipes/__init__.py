"""Whole pipelines from an empty folder: record the sim data, train, evaluate, report
(`demo`: `robotrain demo`)."""
