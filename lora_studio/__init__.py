"""LoRA Studio: train LoRA adapters for text and Stable Diffusion models on your own GPU."""
__version__ = "0.1.0"
