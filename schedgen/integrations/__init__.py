"""Adapters for the trainers people use (PyTorch Lightning, the Hugging Face Trainer), being written for issue 18.

Each adapter is its own module and imports its framework only when imported; ``import
schedgen.integrations`` loads none of them.
"""
