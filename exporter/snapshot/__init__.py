"""Environment snapshots of a service (its interpreter's packages, CUDA, variables, model file
hashes) and what changed between two."""
