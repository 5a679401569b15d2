"""Using a finished checkpoint outside training: `deepyard eval` and `deepyard explain`.

Data flow: CHECKPOINT (a step directory, a checkpoint.uri, a lineage, a run or job folder)
→ `locate.resolve` (only published checkpoints whose files verify) → `loaded.load` (the
job spec from the manifest, the model rebuilt and given the consolidated fp32 weights) →
`offline.evaluate` (the model's own task, rank 0 of 1, no DeepSpeed engine) or
`saliency` (gradient x input) → JSON, Parquet, PNG and HTML files, and the run's record
(`evals_offline.json`, shown by `deepyard report`).
"""
