"""Parameter-efficient continued pre-training: LoRA and QLoRA adapters built with the `peft` library.

- `config.py`: the `train.peft` section (`PeftConfig`) and `check_peft`, every combination that
  cannot work named by its dotted keys. Light: no torch at import, so config validation can use it.
- `adapters.py`: `apply_peft` (adapters on every linear layer of the decoder, the input
  embeddings and output layer trained in full), the optimizer's parameter groups, counts.
- `reference.py`: `FrozenBase`, the starting model's forward run on the training model itself
  (adapters off, the original embeddings and output layer), for KL without a second model.
- `export.py`: `merged_state_dict` (plain Hugging Face names, adapters merged, the training model
  untouched) and `save_adapter` (a folder `PeftModel.from_pretrained` loads onto the base).
- `memory.py`: `memory_estimate`, weights / gradients / optimizer states / activations of full
  and adapter training, for `cptkit plan`.
- `quantized.py`: QLoRA's 4-bit base weights (bitsandbytes), where CUDA is present.

The choices and their reasons are in docs/lora.md.
"""
