"""The pipelines: each module is one env family, documented PettingZoo-style in its docstring."""
