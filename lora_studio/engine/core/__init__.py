"""What every model family shares: the optimizer-step loop (loop.py), step counts and
data order (order.py), optimizer and schedule (optim.py), checkpoints and resume
(checkpoint.py), run control and errors (control.py), safetensors writes and header
metadata, and the run itself (trainer.py). family.py is the interface a family
implements."""
