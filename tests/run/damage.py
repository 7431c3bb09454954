#!/usr/bin/env python3
"""Damage HDF5 files the way disks and copies do, for the corruption tests (tests/run/run_small.sh).

  damage.py data FILE DSET [--every]   flip one bit inside the stored data of DSET's first chunk
                                        (every chunk with --every), or of its contiguous data
  damage.py header FILE DSET           flip one bit inside DSET's object header
  damage.py truncate FILE              cut the file to half its size

Prints what it changed (file offset) and exits 1 if it could not."""
import os
import sys

import h5py


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x08]))
    print(f"{path}: flipped a bit at byte {offset}")


def data_offsets(path, dset, every):
    with h5py.File(path, "r") as f:
        d = f[dset]
        if d.chunks is None:
            off = d.id.get_offset()
            if off is None:
                sys.exit(f"{path}:{dset}: no stored data to damage")
            return [off + d.id.get_storage_size() // 2]
        n = d.id.get_num_chunks()
        infos = [d.id.get_chunk_info(i) for i in range(n if every else 1)]
        return [c.byte_offset + c.size // 3 for c in infos]


def header_offset(path, dset):
    with h5py.File(path, "r") as f:
        return h5py.h5o.get_info(f[dset].id).addr + 24


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    mode, path = argv[0], argv[1]
    if mode == "data" and len(argv) >= 3:
        offs = data_offsets(path, argv[2], "--every" in argv[3:])
    elif mode == "header" and len(argv) >= 3:
        offs = [header_offset(path, argv[2])]
    elif mode == "truncate":
        size = os.path.getsize(path)
        os.truncate(path, size // 2)
        print(f"{path}: cut from {size} to {size // 2} bytes")
        return
    else:
        sys.exit(__doc__)
    for off in offs:  # offsets are read before the first change
        flip(path, off)


if __name__ == "__main__":
    main(sys.argv[1:])
