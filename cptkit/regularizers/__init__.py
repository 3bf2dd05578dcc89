"""Penalties against forgetting, built from `regularizer.*`: one config key each.

- kl (`kl.py`): KL divergence to the frozen starting model, computed inside the student's one
  forward by the fused chunked loss (`cptkit.train.losses`).
- ewc (`ewc.py`, `fisher.py`): (weight/2) * sum F (theta - theta0)^2 with a diagonal Fisher
  estimated on data.general, saved to RUN_DIR/fisher.safetensors and reusable by later runs.
- l2sp (`ewc.py`): the same penalty with F = 1.

`build.build_regularizer` runs before the model is wrapped for DDP and before a resumed run
loads its checkpoint, so the anchors and the reference are always the starting weights. This
package's own import is light (no torch): the config section is `config.py`.
"""
