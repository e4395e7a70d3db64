"""Run directories and their JSON-lines event stream. No Qt, no torch: the GUI, the
CLI and the engine all read and write runs through here."""
