"""Fakes at the GPU boundary (pynvml, nvidia-smi) and a fake /proc tree builder."""
