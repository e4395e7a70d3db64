"""``lora-studio serve``: an OpenAI-compatible HTTP server in front of the playground
process, one base model with its adapters as model ids. No torch in this process."""
