"""Checkpoints: DeepSpeed state + data cursors + RNG, published atomically to a store.

Data flow: the training loop asks `Checkpointer.save()` at a step boundary; every rank
hands DeepSpeed's state to a background writer, which writes it under the store's
`<lineage>/step-<N>/` prefix with a per-rank record of hashes; rank 0 publishes the
manifest last. Only a checkpoint with a complete, verified manifest is resumed from.
"""
