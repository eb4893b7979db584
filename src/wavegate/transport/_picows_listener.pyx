# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled picows listener: the receive path of the picows transport, in C.

picows parses frames in C and calls ``on_ws_frame`` for each. Here that callback is a
C method too (a ``cdef class`` over picows' own ``WSListener``, compiled against its
``.pxd``), so a frame costs no Python call: it is validated (RSV bits, fragments,
UTF-8, the message size, the close code) and its message is stored in a ring of slots.
``take()`` hands over a stored message as a packet without awaiting anything (JSON is
decoded then, not on arrival: thousands of decoded dicts waiting would cost the garbage
collector; and the packet is made without running ``__init__``);
``recv()`` awaits one. Everything rare (endings, write pressure, timers) is the owner's, in Python
(``picows_transport.PicowsTransport``).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyTypeObject
from cpython.unicode cimport PyUnicode_DecodeUTF8

from picows.picows cimport WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

import asyncio

cdef extern from *:
    """
    #ifndef WAVEGATE_PICOWS_VERSION
    #define WAVEGATE_PICOWS_VERSION "unknown"
    #endif
    #include "structmember.h"
    #define WAVEGATE_SLOT_OBJECT 16  /* T_OBJECT_EX, Py_T_OBJECT_EX: a __slots__ member */

    /* Where a __slots__ member lives in its objects, or -1 if descr is not one. */
    static Py_ssize_t wavegate_slot_offset(PyObject *descr) {
        if (Py_TYPE(descr) != &PyMemberDescr_Type) return -1;
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != WAVEGATE_SLOT_OBJECT || member->flags != 0) return -1;
        return member->offset;
    }

    /* A new instance of a slotted class with one member set, without running
       __init__ (what a dataclass's __init__ would do, at a fraction of the cost). */
    static PyObject *wavegate_new_packet(PyTypeObject *type, Py_ssize_t offset,
                                         PyObject *value) {
        PyObject *made = type->tp_alloc(type, 0);
        if (made == NULL) return NULL;
        Py_INCREF(value);
        *(PyObject **)((char *)made + offset) = value;
        return made;
    }

    """
    const char* WAVEGATE_PICOWS_VERSION
    Py_ssize_t wavegate_slot_offset(object descr)
    object wavegate_new_packet(PyTypeObject* type, Py_ssize_t offset, object value)

BUILT_AGAINST = WAVEGATE_PICOWS_VERSION.decode()
"""The picows version whose C layouts this module was compiled against."""
API = 2
"""What the transport may call: raised with each change to it (2: ``ping_now``), so
that a stale build (an editable install not rebuilt) is refused, not half used."""

cdef Py_ssize_t _FIRST_SLOTS = 8  # grows by doubling: an idle connection stays small
cdef Py_ssize_t _PAUSE_AT = 256
cdef Py_ssize_t _PAUSE_AT_BYTES = 1 << 20
"""Messages (or bytes) waiting unread before the socket stops being read: the peer then
meets backpressure, and memory stays bounded."""
cdef Py_ssize_t _RESUME_AT = 64
cdef Py_ssize_t _RESUME_AT_BYTES = 256 << 10


cdef struct _Meta:
    Py_ssize_t size  # bytes on the wire
    bint text        # a text message (a str)


cdef inline bint _valid_close_code(int code) noexcept:
    """Whether ``code`` may appear in a close frame (RFC 6455 7.4, IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


cdef class Listener(WSListener):
    """One connection's receive side. ``owner`` gets the rare events by name:
    ``_connected(transport)``, ``_failed(code, reason)``, ``_peer_closed()``,
    ``_disconnected(transport)``,
    ``_writing_paused()``, ``_writing_resumed()``, ``_known_ending()``."""

    cdef:
        WSTransport _wt
        object _owner
        object _loop
        list _slots
        _Meta* _meta
        Py_ssize_t _bytes
        Py_ssize_t _head
        Py_ssize_t _count
        Py_ssize_t _mask
        object _waiter
        bytearray _parts
        WSMsgType _parts_kind
        Py_ssize_t _max_size
        bint _ended
        bint _reading_paused
        bint _closing
        object _pong
        bytes _ping_payload
        unsigned long long _pings
        object _loads
        bint _decode_json
        object _payload_error
        object _json_type
        object _text_type
        object _bytes_type
        Py_ssize_t _json_offset
        Py_ssize_t _text_offset
        Py_ssize_t _bytes_offset
        public unsigned long long taken_frames
        public unsigned long long taken_bytes

    def __init__(self, owner, Py_ssize_t max_size):
        if self._meta != NULL:
            raise RuntimeError("a Listener is initialised once")
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._slots = [None] * _FIRST_SLOTS
        self._meta = <_Meta*>PyMem_Malloc(_FIRST_SLOTS * sizeof(_Meta))
        if self._meta == NULL:
            raise MemoryError()
        self._mask = _FIRST_SLOTS - 1
        self._max_size = max_size
        self._parts_kind = WSMsgType.CONTINUATION

    def __dealloc__(self):
        PyMem_Free(self._meta)

    # -- called by picows ----------------------------------------------------------

    cpdef on_ws_connected(self, WSTransport transport):
        self._wt = transport
        self._owner._connected(transport)

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType kind = frame.msg_type
        if self._ended:
            return  # after a close frame or a failure nothing more is read
        if frame.payload_size > self._max_size:
            # picows has refused it already (it still delivers it: its parser goes on
            # after this error); frames it parsed before are still delivered.
            self._fail(1009, f"message larger than max_size ({self._max_size} bytes)")
        elif frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._fail(1002, "reserved bits set, but no extension was negotiated")
        elif kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            if self._parts is not None:
                self._fail(1002, "a new message began inside a fragmented one")
            elif frame.fin:
                self._message(kind, frame.payload_ptr, frame.payload_size)
            else:
                self._parts_kind = kind
                self._parts = bytearray()
                self._fragment(frame)
        elif kind == WSMsgType.CONTINUATION:
            if self._parts is None:
                self._fail(1002, "a continuation frame with no message to continue")
            else:
                self._fragment(frame)
        elif kind == WSMsgType.PONG:
            self._ponged(frame)
        elif kind == WSMsgType.CLOSE:
            self._closed_by_peer(frame)
        # PING: picows answers it (enable_auto_pong).

    cpdef on_ws_disconnected(self, WSTransport transport):
        self._ended = True
        self._parts = None
        self._wake()
        if self._pong is not None and not self._pong.done():
            self._pong.cancel()
        self._owner._disconnected(transport)

    cpdef pause_writing(self):
        # Not passed on to picows: its own send would then wait after writing.
        self._owner._writing_paused()

    cpdef resume_writing(self):
        self._owner._writing_resumed()

    # -- frames --------------------------------------------------------------------

    cdef void _fragment(self, WSFrame frame) except *:
        cdef Py_ssize_t size = len(self._parts)
        if size + frame.payload_size > self._max_size:
            self._fail(1009, f"message larger than max_size ({self._max_size} bytes)")
            return
        self._parts.extend(frame.get_payload_as_memoryview())
        if frame.fin:
            parts, self._parts = self._parts, None
            self._message(self._parts_kind, PyByteArray_AS_STRING(parts), len(parts))

    cdef void _message(self, WSMsgType kind, const char* data, Py_ssize_t size) except *:
        cdef object message
        if kind == WSMsgType.BINARY:
            message = PyBytes_FromStringAndSize(data, size)
        else:
            # Decoded now: that checks the UTF-8 (1007 now, not later), costs what a
            # bytes copy costs, and orjson reads a str faster than bytes (no second check).
            try:
                message = PyUnicode_DecodeUTF8(data, size, NULL)
            except UnicodeDecodeError:
                self._fail(1007, "text message is not valid UTF-8")
                return
        self._push(message, size, kind == WSMsgType.TEXT)

    cdef void _closed_by_peer(self, WSFrame frame) except *:
        # picows has checked the reason's UTF-8 and the codes below 3000, and recorded
        # the frame in transport.close_handshake.
        cdef int code = frame.get_close_code()
        if frame.payload_size >= 2 and not _valid_close_code(code):
            self._fail(1002, f"invalid close code {code}")
            return
        self._ended = True
        self._parts = None
        if not self._wt.is_close_frame_sent:
            # Echo the code; a close frame without one is answered with 1000 (picows
            # cannot send an empty one, and code 0 is invalid on the wire).
            self._wt.send_close(<WSCloseCode>(code if frame.payload_size >= 2 else 1000))
        self._owner._peer_closed()
        self._wake()

    cdef void _fail(self, int code, str reason) except *:
        self._ended = True
        self._parts = None
        self._owner._failed(code, reason)
        self._wake()

    cdef void _ponged(self, WSFrame frame) except *:
        pong = self._pong
        if pong is None or pong.done():
            return
        if frame.get_payload_as_bytes() == self._ping_payload:
            self._pong = None
            pong.set_result(None)

    # -- the ring of messages ------------------------------------------------------

    cdef inline void _push(self, object message, Py_ssize_t size, bint text) except *:
        cdef Py_ssize_t capacity = self._mask + 1
        cdef Py_ssize_t slot
        if self._count == capacity:
            self._grow(capacity)
        slot = (self._head + self._count) & self._mask
        self._slots[slot] = message
        self._meta[slot].size = size
        self._meta[slot].text = text
        self._count += 1
        self._bytes += size
        if self._waiter is not None:
            self._wake()
        if (
            (self._count >= _PAUSE_AT or self._bytes >= _PAUSE_AT_BYTES)
            and not self._reading_paused
            and not self._closing
        ):
            self._reading_paused = True
            self._wt.underlying_transport.pause_reading()

    cdef void _grow(self, Py_ssize_t capacity) except *:
        cdef list slots = [None] * (capacity * 2)
        cdef _Meta* meta = <_Meta*>PyMem_Malloc(capacity * 2 * sizeof(_Meta))
        cdef Py_ssize_t i, old
        if meta == NULL:
            raise MemoryError()
        for i in range(capacity):
            old = (self._head + i) & self._mask
            slots[i] = self._slots[old]
            meta[i] = self._meta[old]
        PyMem_Free(self._meta)
        self._slots = slots
        self._meta = meta
        self._head = 0
        self._mask = capacity * 2 - 1

    cdef inline object _pop(self, _Meta* meta):
        """The oldest message (its size and kind into ``meta``)."""
        cdef Py_ssize_t head = self._head
        message = self._slots[head]
        self._slots[head] = None
        meta[0] = self._meta[head]
        self._bytes -= meta.size
        self._head = (head + 1) & self._mask
        self._count -= 1
        if (
            self._reading_paused
            and self._count <= _RESUME_AT
            and self._bytes <= _RESUME_AT_BYTES
        ):
            self._reading_paused = False
            if not self._wt.is_disconnected:
                self._wt.underlying_transport.resume_reading()
        return message

    cdef inline object _pop_message(self):
        """The oldest message as ``recv`` returns it."""
        cdef _Meta meta
        return self._pop(&meta)

    cdef void _wake(self) except *:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- called by the owner and by Websocket --------------------------------------

    def configure(self, loads, bint decode_json, json_packet, text_packet, bytes_packet,
                  payload_error):
        """How ``take()`` makes packets: the JSON codec's ``loads``, the receive mode,
        the three packet classes (slotted, one member, ``payload``) and the error."""
        self._loads = loads
        self._decode_json = decode_json
        self._payload_error = payload_error
        for packet in (json_packet, text_packet, bytes_packet):
            if wavegate_slot_offset(packet.__dict__.get("payload")) < 0:
                raise TypeError(f"{packet.__name__}.payload is not a __slots__ member")
        self._json_type = json_packet
        self._text_type = text_packet
        self._bytes_type = bytes_packet
        self._json_offset = wavegate_slot_offset(json_packet.__dict__["payload"])
        self._text_offset = wavegate_slot_offset(text_packet.__dict__["payload"])
        self._bytes_offset = wavegate_slot_offset(bytes_packet.__dict__["payload"])

    def take(self):
        """The next message as a packet if one has arrived, else ``None``; raises the
        configured payload error for a text frame that is not a JSON object."""
        cdef _Meta meta
        if not self._count:
            return None
        if self._json_type is None:
            raise RuntimeError("take() before configure()")
        message = self._pop(&meta)
        self.taken_frames += 1
        # As Websocket.stats counts: bytes of a binary message, characters of a text one.
        self.taken_bytes += len(message) if meta.text else meta.size
        if not meta.text:
            return wavegate_new_packet(
                <PyTypeObject*>self._bytes_type, self._bytes_offset, message
            )
        if not self._decode_json:
            return wavegate_new_packet(<PyTypeObject*>self._text_type, self._text_offset, message)
        try:
            value = self._loads(message)
        except ValueError:
            value = None
            detail = "text frame is not valid JSON"
        else:
            if type(value) is dict:
                return wavegate_new_packet(
                    <PyTypeObject*>self._json_type, self._json_offset, value
                )
            detail = "JSON text frame is not an object"
        raise self._payload_error(detail, message)

    async def recv(self):
        """Wait for the next message; raise the owner's ending once there is none.
        Cancel-safe: a cancelled wait takes nothing."""
        while not self._count:
            if self._ended:
                raise self._owner._known_ending()
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = self._loop.create_future()
            await waiter
        return self._pop_message()

    def unpause(self):
        """Read the socket again even if messages wait unread, and from now on (closing:
        the peer's close frame and its end of the connection must be read)."""
        self._closing = True
        if self._reading_paused:
            self._reading_paused = False
            if self._wt is not None and not self._wt.is_disconnected:
                self._wt.underlying_transport.resume_reading()

    def ping_now(self):
        """Send a ping; return a future resolved by its pong (no coroutine: it is sent
        from the keepalive's timer)."""
        self._pings += 1
        self._ping_payload = self._pings.to_bytes(8, "big")
        if self._pong is not None and not self._pong.done():
            self._pong.cancel()
        pong = self._pong = self._loop.create_future()
        self._wt.send_ping(self._ping_payload)
        return pong

    @property
    def waiting(self):
        """Messages received and not yet taken."""
        return self._count
