"""unlearn_search: does machine unlearning really remove poisoned training data?"""

__version__ = "0.1.0"
