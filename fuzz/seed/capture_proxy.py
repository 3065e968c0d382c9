#!/usr/bin/env python3
"""Capturing TCP proxy for seeding the `request` corpus from real client traffic.

    python3 capture_proxy.py LISTEN_PORT UPSTREAM_PORT OUT_DIR

Listens on 127.0.0.1:LISTEN_PORT and forwards every connection to 127.0.0.1:UPSTREAM_PORT (a
`spate serve --advertised-listener 127.0.0.1:LISTEN_PORT`, so clients come back through the
proxy after Metadata). Each request frame a client sends is split off by its 4-byte length
prefix and written, without the prefix, to OUT_DIR/<api key>-v<version>-<sha1 prefix>
(identical frames are written once). Responses pass through untouched. Runs until killed.
"""

import asyncio
import hashlib
import os
import sys


async def pump_requests(reader, writer, out_dir):
    buf = b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
        buf += data
        while len(buf) >= 4:
            n = int.from_bytes(buf[:4], "big", signed=True)
            if n < 0 or len(buf) < 4 + n:
                break
            frame, buf = buf[4:4 + n], buf[4 + n:]
            if len(frame) >= 4:
                key = int.from_bytes(frame[0:2], "big", signed=True)
                ver = int.from_bytes(frame[2:4], "big", signed=True)
                name = f"{key}-v{ver}-{hashlib.sha1(frame).hexdigest()[:12]}"
                path = os.path.join(out_dir, name)
                if not os.path.exists(path):
                    with open(path, "wb") as f:
                        f.write(frame)
    writer.close()


async def pump(reader, writer):
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()


async def main():
    listen, upstream, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.makedirs(out_dir, exist_ok=True)

    async def handle(cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pump_requests(cr, uw, out_dir), pump(ur, cw), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
