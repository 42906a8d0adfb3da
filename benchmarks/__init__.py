"""pushsource side by side with ezstream and Liquidsoap, on one machine, in one run.

``python -m benchmarks`` (see benchmarks/README.md). Figures are printed and
written as JSON; nothing here asserts a target.
"""
