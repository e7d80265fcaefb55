"""Pool drivers behind one interface (``base``): ``local_dir``, ``shared_fs`` and
``shared_block``; ``files`` is the on-disk layout the file-based drivers share."""
