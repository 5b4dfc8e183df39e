"""Training-side tools: a streaming loader over the shards and Affinity-Pooling-aware length budgeting."""
