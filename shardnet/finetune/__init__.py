"""Fine-tuning through remote blocks: the client holds the embeddings, the head and the trainable parameters
(LoRA adapters of the attention projections, or deep prompts); workers run the frozen layers forward and
backward (`worker/training.py`). See docs/finetune.md.

    params = TrainableParams.create(config, method="lora", rank=4, seed=0)
    trainer = Trainer(ends, spans, params, lr=1e-3)
    for batch in batches: loss = await trainer.step(batch)
"""
