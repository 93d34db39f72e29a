"""The on-disk contract: keys, record and field layout, Caffe Datum, the manifest schema, SplitMix64.

Specified in docs/FORMAT.md. Imports nothing else from lmdbshard but its errors."""
