"""Reading converted shards: ShardedDataset, samplers, streams, Ray Data, and verification.

Never imports lmdbshard.convert, Ray (but ray_data.py) or Hydra."""
