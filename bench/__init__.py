"""The benchmark suite (``python -m bench``): the service vs the hardware and the alternatives."""
