"""SocketTransport: the osvrt loop's TCP/Unix stream transport, its data
path in C (osvrt/_engine/aiotx.c, TxCore).

It is asyncio's own _SelectorSocketTransport with the per-byte work moved
to the engine:

- reading: the transport's fd sits in the loop's epoll with no selector
  key; the loop's C turn calls TxCore for it, which recv()s and calls
  protocol.data_received(bytes) (or get_buffer/buffer_updated) directly;
- write() is TxCore.write, set on the instance: one send() at once, and
  only what the kernel did not take is buffered (in C) until EPOLLOUT;
- asyncio's fields that the data path reads (_conn_lost, _eof,
  _empty_waiter, _protocol_paused, the water marks, and _buffer, whose
  truth and clear() are what asyncio's code uses) live in the TxCore and are
  properties here, so asyncio's close, abort, write_eof, _force_close,
  _fatal_error, _call_connection_lost, set_protocol, sendfile hand-over and
  get_extra_info run unchanged and see the same state;
- the loop routes _add_reader/_remove_reader/_remove_writer for this
  transport's fd to the TxCore (OsvrtEventLoop.route_reader), so asyncio's
  pause_reading/resume_reading/close change the epoll registration.

What asyncio does in Python that this does in C keeps asyncio's order and
messages: an error report is transport._fatal_error(exc, message); EOF is
asyncio's _read_ready__on_eof; pause/resume_writing are asyncio's
_maybe_pause_protocol/_maybe_resume_protocol.
"""
import select
import socket
from typing import Any
from asyncio import protocols, selector_events
from asyncio.log import logger

from .. import _engine

__all__ = ["SocketTransport"]

# asyncio's transport class (private: typeshed has no stub for it)
_AsyncioSocketTransport: Any = getattr(selector_events, "_SelectorSocketTransport")


def _core_field(name, doc):
    def get(self):
        return getattr(self.core, name)

    def put(self, value):
        setattr(self.core, name, value)

    return property(get, put, doc=doc)


class SocketTransport(_AsyncioSocketTransport):
    """asyncio's socket transport; reads, writes and their buffer in C."""

    _conn_lost = _core_field("conn_lost", "asyncio's _conn_lost, kept in C")
    _eof = _core_field("eof", "write_eof() was called (C refuses writes)")
    _empty_waiter = _core_field("waiter", "sendfile's wait for an empty buffer")
    _protocol_paused = _core_field("protocol_paused", "pause_writing() was called")
    _high_water = _core_field("high_water", "pause_writing above this many bytes")
    _low_water = _core_field("low_water", "resume_writing at or below this many bytes")

    @property
    def _buffer(self):
        # asyncio's code asks only whether output is pending and clears it:
        # the TxCore answers both (len() and clear()).
        return self.core

    @_buffer.setter
    def _buffer(self, value):
        pass                      # asyncio's __init__ sets its own (empty) buffer

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        self.core = _engine.TxCore(self, loop.loop_core, sock.fileno())
        self.write = self.core.write
        self.get_write_buffer_size = self.core.buffer_size
        super().__init__(loop, sock, protocol, waiter, extra, server)

    def __repr__(self):
        # asyncio's, with the polling state read from our epoll registration
        # (the fd is not in the selector, where asyncio's repr looks)
        info = [type(self).__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            mask = self.core.registered
            info.append("read=polling" if mask & select.EPOLLIN else "read=idle")
            state = "polling" if mask & select.EPOLLOUT else "idle"
            info.append(f"write=<{state}, bufsize={self.get_write_buffer_size()}>")
        return f"<{' '.join(info)}>"

    def set_protocol(self, protocol):
        self.core.set_protocol(protocol, isinstance(protocol, protocols.BufferedProtocol))
        super().set_protocol(protocol)

    def reading_starts(self):
        """Reading starts (after connection_made) or resumes: the protocol's
        data_received (or get_buffer/buffer_updated) is looked up again, so
        one that connection_made (or code while reading was paused) set on
        the instance is the one called.  asyncio looks it up per read; the
        C path keeps the bound method between these points."""
        protocol = self._protocol
        if protocol is not None:
            try:
                self.core.set_protocol(protocol, isinstance(protocol, protocols.BufferedProtocol))
            except Exception as exc:
                # (no data_received any more): asyncio fails the first read so
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return
        self.core.set_reading(True)

    # Reading on and off: the TxCore's registration, directly (asyncio's go
    # through the loop's _add_reader/_remove_reader, which the loop routes
    # here too; sendfile takes the transport out of the loop's table first).

    def _in_sendfile(self):
        # loop.sendfile() takes the transport out of the loop's table while
        # it runs, and registers the fd itself (add_writer): our own epoll
        # registration then waits (the loop's _sendfile_native makes it).
        return self._loop._transports.get(self._sock_fd) is not self

    def _add_reader(self, fd, callback, *args):
        if self.is_reading() and not self._in_sendfile():
            self.reading_starts()

    def pause_reading(self):
        if not self.is_reading():
            return
        self._paused = True
        self.core.set_reading(False)
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        if not self._in_sendfile():
            self.reading_starts()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def writelines(self, list_of_data):
        self.write(b"".join(list_of_data))

    def _call_connection_lost(self, exc):
        # Out of the loop's epoll and fd table before asyncio closes the fd
        # (a new socket may get the same number at once).
        self.core.detach()
        super()._call_connection_lost(exc)

    # ---- called by the TxCore ---------------------------------------------------

    def _osvrt_drained(self):
        """The buffered output is all sent: asyncio's _write_ready tail."""
        if self._conn_lost:
            return                # aborted meanwhile: connection_lost is scheduled
        waiter = self._empty_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._closing:
            self._call_connection_lost(None)
        elif self._eof:
            self._sock.shutdown(socket.SHUT_WR)

    def _osvrt_write_failed(self, exc):
        """send() failed on buffered output (the buffer is cleared)."""
        self._fatal_error(exc, "Fatal write error on socket transport")
        waiter = self._empty_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _osvrt_lost_write(self):
        logger.warning("socket.send() raised exception.")
