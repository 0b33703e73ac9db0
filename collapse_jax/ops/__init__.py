"""Backend-specific kernels behind a stable interface: the CPU matmul/Winograd convolutions
and the dual encoder's hand-written graph VJPs."""
