#!/usr/bin/env python3
"""A TCP proxy that delays everything it forwards, both ways, by a fixed time.

The test suite runs it inside a test host's network namespace to give that host a slow link
(this machine's kernel has no netem). Each chunk read is written out `--delay-ms` after it was
read, in order, so the link is slow but not narrow.

    delay_proxy.py --listen 127.0.0.1:4700 --target 198.18.0.1:4700 --delay-ms 150
"""

import argparse
import asyncio
import time


async def pump(reader, writer, delay):
    queue = asyncio.Queue()

    async def read():
        try:
            while data := await reader.read(65536):
                await queue.put((time.monotonic() + delay, data))
        finally:
            await queue.put((time.monotonic() + delay, None))

    async def write():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                break
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except OSError:
            pass

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--delay-ms", type=int, required=True)
    args = parser.parse_args()
    listen_host, listen_port = args.listen.rsplit(":", 1)
    target_host, target_port = args.target.rsplit(":", 1)
    delay = args.delay_ms / 1000

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(
                target_host, int(target_port)
            )
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer, delay),
            pump(server_reader, client_writer, delay),
        )

    server = await asyncio.start_server(handle, listen_host, int(listen_port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
