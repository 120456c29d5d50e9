"""Turning pairs into margins: the reward-model and implicit (DPO log-ratio) scorers
(`scorers`), what a run is asked to do (`config`), the scoring run that writes a workspace's
score tables (`run`), the seed policy pi_1 it trains for implicit margins (`seed_policy`) and
sharded runs over several processes (`distributed`). Importing it loads torch, so the package
re-exports nothing.
"""
