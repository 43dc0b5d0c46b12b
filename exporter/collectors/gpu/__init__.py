"""The GPU collector: NVML, the nvidia-smi fallback, XID events, /proc joins and CUDA compatibility."""
