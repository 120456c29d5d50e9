"""DPO training on an export with TRL (`trainer`), the callbacks that report its progress and
write its metrics (`callbacks`), and the listing of a workspace's training runs (`runs`).
Importing `trainer` loads torch, so the package re-exports nothing.
"""
