"""The card-fraud example: a simulated card processor (transactions, delayed chargebacks) and the model
that scores its transactions. `simulator` is the source system, `source.extract` its entry point
(`contract.source.entry_point` in config/closedloop.yaml), `replay` the drift monitor replayed over
simulated weeks in memory (the monitoring tests and benchmarks measure the policy with it).
"""
