"""Iterative (online) DPO-DM (`iteration`): each round samples responses from the current
policy, scores them with a reward model, pairs best against worst, selects by margin and
trains the next policy, resumable round by round. It re-exports nothing (it loads torch).
"""
