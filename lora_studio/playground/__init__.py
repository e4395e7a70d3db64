"""The playground process: keeps one base model loaded and generates with adapters
switched on it, answering JSON-line requests (runs/playground_protocol.py). Started by
runs/playground_launch.py; ``python -m lora_studio.playground``."""
