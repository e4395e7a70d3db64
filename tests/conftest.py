import os

# GUI tests run without a display; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Rebuildable caches (tokenised datasets) go to a folder of this run, not the user's.
if "LORA_STUDIO_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["LORA_STUDIO_CACHE_DIR"] = tempfile.mkdtemp(prefix="lora-studio-cache-")
