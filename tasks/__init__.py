"""Thin Prefect tasks: read paths, call one library function, write files, return small plain values."""
