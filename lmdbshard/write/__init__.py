"""The write path of a conversion job: listing, plan, Ray shard tasks, per-sample pipeline, shard files, resume, commit."""
