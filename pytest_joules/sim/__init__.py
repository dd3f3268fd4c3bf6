"""The simulated device: a physical model of LLM inference on a GPU (see docs/simulator.md)."""
