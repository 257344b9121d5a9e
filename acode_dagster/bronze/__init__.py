"""The bronze layer: its fixed layout on a folder or S3, and how a version of a partition is
written, audited, published or quarantined by one writer at a time."""
