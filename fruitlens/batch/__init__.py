"""Batch runs over many images: which rows, in which chunks, resumable parts, pictures. One engine for the
command line and the Prefect flows."""
