"""Language models as the engine uses them: loading tokenizers and models on one device and
dtype (`load`), deciding whether a model folder may run code (`trust`) and summed
log-probabilities of responses under a policy (`logprobs`). Importing `load` or `logprobs`
loads torch, so the package re-exports nothing: import the module you need.
"""
