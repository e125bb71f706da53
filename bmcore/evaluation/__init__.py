"""Evaluation of a model on whole studies: scoring (:mod:`.evaluate`, needs torch) and the headline table
(:mod:`.headline`, torch-free). This ``__init__`` imports nothing, so the headline table can be drawn in a
process without torch."""
