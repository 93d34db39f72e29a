"""Where datasets live: local folders, or object stores addressed by ``s3://`` and ``gs://`` URLs.

``urls`` parses and joins URLs and builds the filesystem client (pyarrow.fs: the AWS and Google
SDKs, with their own retries, multipart uploads and credential chains). ``objects`` holds the few
whole-object operations lmdbshard needs on top: size, read, write, upload, download, list, delete.
Local paths never go through here, and nothing here imports pyarrow until a URL is used.
"""
