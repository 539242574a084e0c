"""switchkd: Switch-KD visual-switch knowledge distillation for vision-language models."""

__version__ = "0.1.0"
