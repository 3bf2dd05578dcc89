"""cptkit: continued pre-training of causal language models, from raw documents to a report."""

__version__ = "0.1.0"
