"""Backend-specific kernels behind a stable interface: the CPU matmul/Winograd convolutions,
the dense layers' weight gradients in the form XLA:CPU runs fast, and the dual encoder's
hand-written graph VJPs."""
