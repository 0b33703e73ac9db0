"""collapse_jax: self-consuming (model collapse) training loops in JAX.

How the pieces fit (each a small module; see BUILD_NOTES.md's layout):

    config (configs/*.py, variants.py) --validate.py--> experiment.train_and_evaluate
      experiment: workdir, mesh, resume, chunks, evaluators, checkpoints, plots
        loop/generation.py  Loop.step = one generation, scanned over generations, vmapped
                            over seeds, jitted with shardings (parallel/mesh.py)
          loop/policies.py  policy(pool, g) -> counts: which pool rows generation g trains on
          loop/pool.py      DataPool: fixed-capacity immutable rows + generation/real tags
          data/<source>.py  real rows and their RowSpec (fields, data field, mask)
          models/<family>   init / fit / sample / evaluate, pure; models/training.py the
                            one optax loop; diffusion/ the shared masked diffusion core
            nets/, ops/     Flax modules; CPU conv kernels
        evals/<type>.py     host-side metrics and artifacts per generation (config.evals)
        checkpoint.py       Orbax: every generation's model, the loop state per chunk
      report/               plots, tables, report.html over one or several workdirs

Plug-ins (families, sources, evaluators) are found by name through registry.py.
"""
