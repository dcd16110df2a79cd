"""8-byte words of a shared mapping, and the seqlock built on them.

The stats file (statsfile.py) is written by a running program and read by
`python -m osvrt top` (top.py) in another process, at the same time.  Python has no
atomic access to memory: struct.pack_into / unpack_from on an mmap are plain
byte copies, with no ordering.  On x86-64 stores are seen in program order
anyway; on arm64 they are not, so a reader could see a new thread name
beside an old id, or the "done" sequence number before the data it covers.
The `atomics` package (doodspav/atomics: lock-free loads and stores on any
buffer, with C11 memory orders, through cffi) gives the orders we need.

Costs: an atomics call is a cffi call (about 5 us here, and it releases the
GIL), and making a view of a word about 50 us.  So none of this is on a hot
path: the writer is the stats publisher (an OS thread, twice a second) and
the reader is `top`.  The writer stores only the words that changed.

The seqlock (one writer, any number of readers in other processes)
-------------------------------------------------------------------
Word 0 is the sequence number, odd while the data words are being written.

  writer:  seq <- s + 1   (relaxed)
           each changed data word <- v   (release: a reader that loads it,
                                          acquire, also sees seq = s + 1)
           seq <- s + 2   (release: a reader that sees s + 2 sees the data)
  reader:  s1 <- seq      (acquire)
           every data word   (acquire)
           s2 <- seq      (relaxed: ordered after the data loads by their
                           acquire)
           the copy is whole if s1 == s2 and s1 is even; otherwise retry.

Why no torn copy is accepted: if a data load returns a value stored in a
later write than the one s1 ended, that store (release) synchronizes with the
load (acquire), so the writer's earlier seq <- odd happens before the load
of s2, and s2 != s1.  If s1 is the even number that ended a write, its
release store happens before the data loads, so none of them returns a value
older than that write.  This is the all-atomic seqlock (Boehm, "Can seqlocks
get along with programming language memory models?", 2012), chosen because
atomics offers no fences.
"""
import contextlib
import struct

_WORD = 8


def load_atomics():
    """The atomics module (ImportError naming the package when it is missing)."""
    try:
        import atomics            # about 27 ms to import: only where it is used
    except ImportError as e:
        raise ImportError(f"osvrt: the stats file needs the `atomics` package ({e}); "
                          "pip install atomics, or Runtime(stats_file=False)") from e
    return atomics


class Words:
    """n consecutive 8-byte words at `offset` of a buffer (an mmap), each
    with an atomics view.  close() releases the views: the mapping can only
    be closed after that."""

    def __init__(self, buf, offset, n):
        atomics = load_atomics()
        self._order = atomics.MemoryOrder
        self._stack = contextlib.ExitStack()
        self._slices = []
        self._views = []
        mv = memoryview(buf)
        try:
            for i in range(n):
                s = mv[offset + i * _WORD:offset + (i + 1) * _WORD]
                self._slices.append(s)
                self._views.append(self._stack.enter_context(
                    atomics.atomicview(buffer=s, atype=atomics.UINT)))
        except BaseException:
            self.close()
            raise
        finally:
            mv.release()

    def __len__(self):
        return len(self._views)

    def load(self, i, order="acquire"):
        return self._views[i].load(order=self._orders(order))

    def store(self, i, value, order="release"):
        self._views[i].store(value, order=self._orders(order))

    def _orders(self, name):
        return {"relaxed": self._order.RELAXED, "acquire": self._order.ACQUIRE,
                "release": self._order.RELEASE}[name]

    def close(self):
        self._views = []
        self._stack.close()
        for s in self._slices:
            s.release()
        self._slices = []


class SeqlockWriter:
    """The single writer of a seqlock over `words` (word 0: the sequence)."""

    def __init__(self, words):
        self._w = words
        self._seq = words.load(0, "relaxed")
        self._shadow = [words.load(i, "relaxed") for i in range(1, len(words))]

    def write(self, data):
        """data: len(words) - 1 ints (u64); only changed words are stored."""
        if len(data) != len(self._shadow):
            raise ValueError(f"a seqlock write takes {len(self._shadow)} words, "
                             f"not {len(data)}")
        w = self._w
        w.store(0, self._seq + 1, "relaxed")          # odd: being written
        for i, v in enumerate(data):
            if v != self._shadow[i]:
                w.store(i + 1, v, "release")
                self._shadow[i] = v
        self._seq += 2
        w.store(0, self._seq, "release")               # even: done


def seqlock_read(words, tries=100):
    """A whole copy of the data words (a list of ints), or None when every
    try overlapped a write (the caller keeps its previous copy)."""
    n = len(words)
    for _ in range(tries):
        s1 = words.load(0, "acquire")
        if s1 & 1:
            continue
        data = [words.load(i, "acquire") for i in range(1, n)]
        if words.load(0, "relaxed") == s1:
            return data
    return None


def to_words(blob):
    """bytes (a multiple of 8 long) -> native-endian u64 ints."""
    return list(struct.unpack(f"={len(blob) // _WORD}Q", blob))


def from_words(words):
    return struct.pack(f"={len(words)}Q", *words)
