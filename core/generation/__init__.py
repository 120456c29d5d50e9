"""Sampling responses from a policy (`backends`: transformers, or vLLM on a GPU, seeded) and
judging a trained policy against its reference by win rate (`evaluation`). The package
re-exports nothing: import the module you need.
"""
