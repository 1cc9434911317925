"""The pieces of the local runner (`python local_runner.py`) and of the long-running entry
points (`python -m shared.runner.consumer`, `python -m shared.runner.relay`)."""
