"""fruitlens: train image classifiers on folders of labelled images and explain what they learned."""

__version__ = "0.1.0"
