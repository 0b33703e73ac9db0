"""One diffusion core: rows.py (masked rows, chunked maps), processes.py (DDPM, EDM, OT flow
matching), geodiff_process.py (GeoDiff's objective and Langevin sampler over conformers)
and family.py: `Family(process=..., network=..., rows=Rows.of(spec), budget=...)`, a
`Process` around a `Network` (the protocols there) and the ODE `Solver`. A family plugs in
the process it needs, as models/geodiff.py does with geodiff_process.py's."""
