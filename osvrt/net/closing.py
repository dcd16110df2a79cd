"""What every closable object of osvrt.net shares (kernel sockets, the
user-space stack's streams and listeners): aclose() and `async with`, both
through the class's own synchronous close()."""


class AsyncClosing:
    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> bool:
        self.close()
        return False
