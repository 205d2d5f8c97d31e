"""Benchmarks of the inventory at realistic size: `python -m benchmarks --help`.

Not tests: each benchmark times a service beside a raw-driver baseline measured in the same
run on the same database, and reports the figure against its goal (README's performance
table lists the goals and the latest figures).
"""
