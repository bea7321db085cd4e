"""Prefect flows composing the tasks: index, train, evaluate, explain, and the nightly pipeline."""
