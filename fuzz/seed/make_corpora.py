#!/usr/bin/env python3
"""Turns captured request frames and a broker's data directory into the fuzz seed corpora.

    python3 make_corpora.py FRAMES_DIR DATA_DIR CORPUS_DIR

FRAMES_DIR is capture_proxy.py's output, DATA_DIR the `--data-dir` of the broker that served the
traffic (stopped). Writes, deduplicated by content (file name: SHA-1 prefix), at most MAX_PER_TARGET
files per target, none larger than MAX_FILE_BYTES:
- request/: the frames as captured, named client-<api key>-v<version>-<hash> (tests/fuzz_corpus.rs
  checks that every one of them decodes);
- request_body/: the same frames as `request_body` reads them (API index, version offset, body);
- record_batch/: flags byte 0 + one batch of each segment, and flags 0 + runs of whole batches;
- index/: each segment's .index/.timeindex (empty when it has none) and its .log, in the layout
  `spate::fuzzing::segment` reads;
- offsets_record/: each record of `__consumer_offsets`, in `spate::fuzzing::offsets_record`'s layout.
"""

import hashlib
import os
import struct
import sys

MAX_PER_TARGET = 300
MAX_FILE_BYTES = 64 * 1024

# handlers::SUPPORTED, in order: (api key, min version, first flexible version or None).
SUPPORTED = [(0, 3, 9), (1, 4, 12), (2, 1, 6), (3, 0, 9), (8, 2, 8), (9, 1, 6), (10, 0, 3), (11, 0, 6),
             (12, 0, 4), (13, 0, 4), (14, 0, 4), (15, 0, 5), (16, 0, 3), (18, 0, 3), (19, 2, 5), (20, 1, 4),
             (23, 2, 4), (32, 1, 4), (42, 0, 2), (47, 0, None), (68, 0, 0), (69, 0, 0)]


def uvarint(b, at):
    v = shift = 0
    while True:
        x = b[at]
        at += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if not x & 0x80:
            return v, at


def varint(b, at):
    v, at = uvarint(b, at)
    return (v >> 1) ^ -(v & 1), at


class Out:
    def __init__(self, root, target):
        self.dir = os.path.join(root, target)
        os.makedirs(self.dir, exist_ok=True)
        self.n = len(os.listdir(self.dir))

    def put(self, data, prefix=""):
        if self.n >= MAX_PER_TARGET or len(data) > MAX_FILE_BYTES:
            return
        path = os.path.join(self.dir, prefix + hashlib.sha1(data).hexdigest()[:16])
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
            self.n += 1


def body_input(frame):
    """The `request_body` input for a captured frame, or None for an API Spate lacks."""
    key, ver = struct.unpack(">hh", frame[:4])
    for i, (k, lo, flex) in enumerate(SUPPORTED):
        if k == key:
            break
    else:
        return None
    (n,) = struct.unpack(">h", frame[8:10])
    at = 10 + max(n, 0)
    if flex is not None and ver >= flex:
        tags, at = uvarint(frame, at)
        for _ in range(tags):
            _, at = uvarint(frame, at)
            size, at = uvarint(frame, at)
            at += size
    return bytes([i, ver - lo]) + frame[at:]


def batches(log):
    at = 0
    while at + 61 <= len(log):
        (n,) = struct.unpack(">i", log[at + 8:at + 12])
        if n < 49 or at + 12 + n > len(log):
            return
        yield log[at:at + 12 + n]
        at += 12 + n


def records(batch):
    """(key, value) of each record of an uncompressed batch."""
    (attrs,) = struct.unpack(">h", batch[21:23])
    if attrs & 7:
        return
    (count,) = struct.unpack(">i", batch[57:61])
    at = 61
    for _ in range(count):
        length, at = varint(batch, at)
        end = at + length
        at += 1
        _, at = varint(batch, at)
        _, at = varint(batch, at)
        klen, at = varint(batch, at)
        key = batch[at:at + klen] if klen >= 0 else None
        at += max(klen, 0)
        vlen, at = varint(batch, at)
        value = batch[at:at + vlen] if vlen >= 0 else None
        yield key, value
        at = end


def main():
    frames_dir, data_dir, root = sys.argv[1:4]
    req, body, rb, idx, off = (Out(root, t) for t in ["request", "request_body", "record_batch", "index", "offsets_record"])
    for name in sorted(os.listdir(frames_dir)):
        frame = open(os.path.join(frames_dir, name), "rb").read()
        key, ver = struct.unpack(">hh", frame[:4])
        req.put(frame, f"client-{key}-v{ver}-")
        b = body_input(frame)
        if b is not None:
            body.put(b)
    for dirpath, _, files in sorted(os.walk(data_dir)):
        for f in sorted(files):
            if not f.endswith(".log"):
                continue
            stem = f[:-4]
            log = open(os.path.join(dirpath, f), "rb").read().rstrip(b"\0")
            if not log:
                continue
            index = lambda ext: open(os.path.join(dirpath, stem + ext), "rb").read() if os.path.exists(os.path.join(dirpath, stem + ext)) else b""
            offsets, times = index(".index"), index(".timeindex")
            # flags 4: index.interval.bytes 4096, CRCs as found.
            idx.put(bytes([4]) + struct.pack(">IHH", int(stem), len(offsets), len(times)) + offsets + times + log[:MAX_FILE_BYTES - 100])
            run = b""
            for bt in batches(log):
                rb.put(b"\0" + bt)
                if len(run) + len(bt) < 8192:
                    run += bt
                if "__consumer_offsets" in dirpath:
                    for k, v in records(bt):
                        if k is not None:
                            off.put(bytes([1 if v is None else 0]) + struct.pack(">H", len(k)) + k + (v or b""))
            rb.put(b"\0" + run)
    for o in (req, body, rb, idx, off):
        print(o.dir, o.n)


if __name__ == "__main__":
    main()
