"""Backend-specific kernels behind a stable interface: the CPU matmul/Winograd convolutions."""
