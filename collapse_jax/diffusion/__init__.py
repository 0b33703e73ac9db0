"""One diffusion core: processes, samplers, networks and the family skeleton.

  rows.py       Rows (data field, mask, aux fields of a RowSpec), masked noise and means,
                the chunked lax.map of sampling and evaluation
  processes.py  DDPM (linear or sigmoid betas; DDIM / ancestral sampler), EDM (Heun)
  flow.py       OT conditional flow matching (minibatch Sinkhorn coupling)
  ode.py        ODE solvers; exact log-likelihood along a probability-flow ODE
  family.py     Network and Process protocols; Family, the GenerativeModel around them

A process owns its corruption, training law, loss, test loss, sampler (``lax.scan`` over
steps) and probability-flow ODE, and calls the network only as ``net(x_t, t, cond, key)``.
Padding (``mask == 0``) gets no noise, no loss and no weight in means, and the network's
output there is zeroed; valid entries draw the same noise however much padding a row has.
Aux fields are passed to the network in ``cond`` (with the mask) and copied into samples.

How another family plugs in (e.g. conformer diffusion with a GNN), in its
``models/<name>.py``:

  class MyNet:  # a family.Network
    def init(self, key, x, cond): ...           # x [1, ...] -> params
    def apply(self, params, x, t, cond, key):   # x_t [n, ...]; t [n] float (DDPM: the step
      ...                                       # index); cond: aux fields + mask; key: None
                                                # unless training -> [n, ...] (DDPM: epsilon)

  def build(config, layout, spec):
    process = DDPM(beta_schedule="sigmoid", beta_start=1e-7, beta_end=9e-3, eta=1.0)
    return Family(process=process, network=MyNet(...), rows=Rows.of(spec),
                  budget=training.Budget.from_config(config.model), ...)
    # or family.from_config(config, spec, process, network=MyNet(...)): the shared fields
    # (temperature, inference_batch_size, initial_steps, eval_seed, exact_nll, solver)

  def check_config(config, spec):
    return family.check_config(config, spec)    # + its own (not check_network: Flax nets)

`Family` then gives init / fit (``initial_steps`` at generation 0) / chunked sample /
evaluate (``test_loss`` at fixed levels and key; ``test_nll`` with ``exact_nll``) /
``log_likelihood(state, x)``. Samples condition on the test rows' aux fields, cycled;
override ``Family.conditions`` (``dataclasses`` subclass) to condition on others. A new
process implements `family.Process` (``train_loss``, ``test_loss``, ``sample``,
``probability_flow``).
"""
