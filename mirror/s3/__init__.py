"""Object storage (S3 and compatibles: AWS S3, MinIO, Ceph RGW, Cloudflare R2).

- url.py          `s3://bucket/prefix` and the connection settings (`[s3]` of the config)
- credentials.py  where the keys come from (a 0600 file, the environment, the instance
                  profile) and how they are kept out of logs and messages
- client.py       `S3Client`: the one wrapper around obstore that everything S3 in the
                  project uses (create-only put, ranged get, head, delete, list,
                  multipart upload; bounded retries; errors mapped to the project's)
- layout.py       the names of the objects in a bucket, with their format version
- manifests.py    signed manifests in the bucket (what a node stored, for the others)
- origin.py       `BucketOrigin`: a miss filled from the bucket's manifests and chunks
- refs.py         the reference sets each node publishes (format, publisher)
- gc.py           the cross-node collection protocol (lease, two rounds, deletion rules)

The chunk backend on a bucket is mirror/store/s3backend.py; the bounded local cache in
front of it is mirror/store/cached.py.
"""
