"""One diffusion core: rows.py (masked rows, chunked maps), processes.py (DDPM, EDM, OT flow
matching) and family.py: `Family(process=..., network=..., rows=Rows.of(spec), budget=...)`,
a `Process` around a `Network` (the protocols there) and the ODE `Solver`; another family
plugs in its own, as models/conformer_diffusion.py's GeoDiff does."""
