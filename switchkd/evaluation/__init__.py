"""Evaluation of VLMs on MiniVL-10: pure metrics, paired bootstrap, batched inference."""
