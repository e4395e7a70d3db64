"""``python -m lora_studio`` is the ``lora-studio`` command."""
from .cli import main

raise SystemExit(main())
