"""Training in PyTorch: the epoch loop, optimizer, schedule, checkpoints, and the main.py session."""
