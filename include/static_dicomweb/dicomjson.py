"""DICOM JSON (PS3.18 Annex F) from pydicom datasets, deterministic and strict.

Numbers are JSON numbers (IS, DS included), person names are objects with
``Alphabetic``/``Ideographic``/``Phonetic``, binary values are ``InlineBinary``
up to a threshold and ``BulkDataURI`` above it.  Keys are sorted by tag.  A
text value whose bytes do not decode in the data set's character set is kept
byte for byte as ``InlineBinary`` (its undecoded value), never with U+FFFD.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

from pydicom import config
from pydicom.charset import CODES_TO_ENCODINGS, default_encoding, handled_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.hooks import _private_vr_for_tag
from pydicom.valuerep import PN_DELIMS, TEXT_VR_DELIMS, VR, PersonName

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
#: Called with (tag path, value bytes); returns the BulkDataURI for the value.
BulkHandler = Callable[[str, bytes], str]

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC",
                        "UI", "UR", "UT"})
FLOAT_VRS = frozenset({"FL", "FD"})
INT_VRS = frozenset({"SL", "SS", "UL", "US", "SV", "UV"})
INLINE_BINARY_LIMIT = 1024
#: The VRs whose values are in the Specific Character Set (PS3.5 6.1.2.3); others are ASCII.
CHARSET_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
_ESC = b"\x1b"
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


def tag_key(tag: int) -> str:
    """``0x00100010`` → ``"00100010"``."""
    return f"{tag:08X}"


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _number(text: Any, integer: bool, where: str) -> int | float | None:
    if text is None or text == "":
        return None
    try:
        if integer:
            try:
                return int(str(text).strip())
            except ValueError:  # an IS written as "1.5": keep the number, don't truncate it
                log.warning("%s: %r is not an integer string; written as a number", where, text)
        number = float(str(text).strip())
    except ValueError:
        log.warning("%s: %r is not a number; written as null", where, text)
        return None
    if math.isnan(number) or math.isinf(number):
        log.warning("%s: %r has no JSON number; written as null", where, text)
        return None
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _person_name(value: Any) -> JsonDict | None:
    if value is None or value == "":
        return None
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    out: JsonDict = {}
    for group, text in (("Alphabetic", name.alphabetic), ("Ideographic", name.ideographic),
                        ("Phonetic", name.phonetic)):
        if text:
            out[group] = text
    return out or None


def _resolve_vr(elem: DataElement, ds: Dataset) -> DataElement:
    """``elem`` with one VR where its dictionary VR is ambiguous (``US or SS``, ``OB or OW``).

    pydicom resolves it from other elements of ``ds`` (Pixel Representation,
    Bits Allocated and the like); where they do not decide it, the first VR.
    """
    elem = cast(DataElement, correct_ambiguous_vr_element(elem, ds, True))
    if " or " in elem.VR:
        elem.VR = elem.VR.split(" or ")[0]
    return elem


def _sequence(elem: DataElement, path: str, bulk: BulkHandler | None, inline_limit: int) -> JsonDict:
    """SQ: each item a DICOM JSON object, its elements' tag paths under ``{path}.{index}.``."""
    items = [dataset_to_json(item, bulk, f"{path}.{i}.", inline_limit)
             for i, item in enumerate(elem.value or [])]
    return {"vr": elem.VR, "Value": items} if items else {"vr": elem.VR}


def _binary(elem: DataElement, path: str, bulk: BulkHandler | None, inline_limit: int) -> JsonDict:
    """OB, OW, UN and the other binary VRs: ``InlineBinary``, or ``BulkDataURI`` from ``bulk``.

    Pixel data, and values longer than ``inline_limit``, go to ``bulk`` where
    there is one (PS3.18 F.2.7).
    """
    data = bytes(elem.value) if elem.value is not None else b""
    if not data:
        return {"vr": elem.VR}
    if bulk is not None and (len(data) > inline_limit or elem.tag in PIXEL_DATA_TAGS):
        return {"vr": elem.VR, "BulkDataURI": bulk(path, data)}
    return {"vr": elem.VR, "InlineBinary": base64.b64encode(data).decode("ascii")}


def _person_names(elem: DataElement, path: str, bulk: BulkHandler | None,
                  inline_limit: int) -> JsonDict:
    """PN: each name an object of its component groups, an empty one null."""
    names = [_person_name(v) for v in _values(elem.value)]
    return {"vr": elem.VR, "Value": names} if any(names) else {"vr": elem.VR}


def _numbers(elem: DataElement, path: str, bulk: BulkHandler | None, inline_limit: int) -> JsonDict:
    """IS, DS and the binary numbers (FL, FD, SS, US, ...): JSON numbers, null where none is."""
    integer = elem.VR == "IS" or elem.VR in INT_VRS
    numbers = [_number(v, integer, path) for v in _values(elem.value)]
    return {"vr": elem.VR, "Value": numbers} if numbers else {"vr": elem.VR}


def _tags(elem: DataElement, path: str, bulk: BulkHandler | None, inline_limit: int) -> JsonDict:
    """AT: each value a tag as eight hex digits."""
    tags = [tag_key(int(v)) for v in _values(elem.value)]
    return {"vr": elem.VR, "Value": tags} if tags else {"vr": elem.VR}


def _texts(elem: DataElement, path: str, bulk: BulkHandler | None, inline_limit: int) -> JsonDict:
    """The string VRs (dates and times included): strings, an empty value null."""
    texts = [None if v in (None, "") else str(v) for v in _values(elem.value)]
    if any(t is not None for t in texts):
        return {"vr": elem.VR, "Value": texts}
    return {"vr": elem.VR}


#: Makes an element's attribute object: (element, tag path, bulk handler, inline limit).
_Encoder = Callable[[DataElement, str, BulkHandler | None, int], JsonDict]
#: The encoder of each VR whose JSON values are not strings (PS3.18 F.2.3); strings otherwise.
_ENCODERS: dict[str, _Encoder] = {
    "SQ": _sequence, "PN": _person_names, "AT": _tags,
    **dict.fromkeys(BINARY_VRS, _binary),
    **dict.fromkeys(FLOAT_VRS | INT_VRS | {"IS", "DS"}, _numbers),
}


def element_to_json(elem: DataElement, ds: Dataset, path: str, bulk: BulkHandler | None,
                    inline_limit: int = INLINE_BINARY_LIMIT) -> JsonDict:
    """One element as a DICOM JSON attribute object.

    Parameters
    ----------
    elem
        The data element (ambiguous VRs are resolved from ``ds``).
    ds
        The dataset holding ``elem`` (for ``US or SS`` and the like).
    path
        The element's tag path (``00540016.0.00181074``) for bulk data and messages.
    bulk
        Receives binary values longer than ``inline_limit``; ``None`` inlines all.

    """
    if " or " in elem.VR:
        elem = _resolve_vr(elem, ds)
    return _ENCODERS.get(elem.VR, _texts)(elem, path, bulk, inline_limit)


# Reuse from slice to slice.  Most of a series' attributes repeat byte for byte from one slice
# to the next, so dataset_to_json keeps the attribute object it made from an element's encoded
# bytes (_ATTRIBUTES, keyed as _repeat_key says) and hands the same object out again, and
# encode_attributes writes each such object's JSON once (_MEMBERS).  _MEMBERS is keyed by id()
# because an attribute object is a dict, which cannot be a key itself; each entry holds its
# object, so while the entry lives no other object can have that id.  _remember empties both
# together when full.  The price: results share attribute objects, to be treated as read-only.

#: Attribute objects made from encoded bytes, by :func:`_repeat_key`.
_ATTRIBUTES: dict[tuple[Any, ...], JsonDict] = {}
#: For each object in _ATTRIBUTES, by its id: (the object, its key, its JSON member
#: ``"key":{...}``); the key and member are empty until it is first encoded.
_MEMBERS: dict[int, tuple[JsonDict, str, bytes]] = {}
_CACHE_LIMIT = 50_000
#: Keys that JSON writes as they are (tags are eight hex digits).
_PLAIN_KEY = re.compile(r"[0-9A-Za-z]*")


#: The VRs whose undecoded values are cached: not binary, not sequences, not ambiguous.
_CACHED_VRS = frozenset(str(vr) for vr in VR) - BINARY_VRS - {"SQ"} - {
    str(vr) for vr in VR if " or " in str(vr)}
#: ``tag_key`` of the tags seen, as it is asked for every element.
_TAG_KEYS: dict[int, str] = {}


def _tag_key(tag: int) -> str:
    key = _TAG_KEYS[tag] = tag_key(tag)
    if len(_TAG_KEYS) > _CACHE_LIMIT:
        _TAG_KEYS.clear()
    return key


_FRAGMENT = re.compile(b"(^[^\x1b]+|[\x1b][^\x1b]*)")


def _decodes(value: bytes, encodings: Sequence[str], vr: str) -> bool:
    """Whether pydicom decodes ``value`` with no replacement character.

    It splits values (and person name groups) first, then decodes each part,
    an escape sequence (PS3.5 6.1.2.5) switching the encoding for what
    follows; the same steps here, strictly.
    """
    parts = [value] if vr in ("LT", "ST", "UT") else value.split(b"\\")
    if vr == "PN":
        parts = [group for part in parts for group in part.split(b"=")]
    delimiters = PN_DELIMS if vr == "PN" else TEXT_VR_DELIMS
    return all(_fragment_decodes(fragment, encodings, delimiters)
               for part in parts for fragment in (_FRAGMENT.findall(part) if _ESC in part else [part]))


def _fragment_decodes(fragment: bytes, encodings: Sequence[str], delimiters: set[int]) -> bool:
    """Whether one run of a value decodes: the text before any escape sequence, or one of them.

    Text before any escape sequence is in the first encoding.  An escape
    sequence names the encoding of what follows it, up to the next one; for
    the encodings Python does not switch itself, only up to the first
    delimiter, after which the first encoding is back (as pydicom decodes).
    """
    try:
        if not fragment.startswith(_ESC):
            fragment.decode(encodings[0])
            return True
        length = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
        encoding = CODES_TO_ENCODINGS.get(fragment[:length], "")
        if encoding not in encodings and encoding != default_encoding:
            return False  # an escape sequence to a character set not declared
        if encoding in handled_encodings:  # Python reads the escape sequences itself
            fragment.decode(encoding)
            return True
        body = fragment[length:]
        cut = next((n for n, byte in enumerate(body) if byte in delimiters), len(body))
        body[:cut].decode(encoding)
        body[cut:].decode(encodings[0])
    except UnicodeError:
        return False
    return True


def undecodable(raw: RawDataElement, ds: Dataset) -> JsonDict | None:
    """The attribute object of a text value whose bytes do not decode, else None.

    Its VR is the element's; its value is the bytes as stored, as
    ``InlineBinary`` (PS3.18 F.2.7), so nothing is replaced by U+FFFD and a
    client can decode them itself.  Values in ASCII without escape sequences
    always decode (every DICOM character set extends it), so only others are
    checked.
    """
    value = raw.value
    if not isinstance(value, bytes) or (value.isascii() and _ESC not in value):
        return None
    vr = raw.VR
    if vr is None:  # implicit VR: the dictionary's
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    if vr not in CHARSET_VRS:
        return None
    try:
        if _decodes(value, ds._character_set, vr):
            return None
    except LookupError:  # an unknown character set: pydicom reads it as its default, as ever
        return None
    return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}


def _charset_key(ds: Dataset, item: bool) -> Any:
    """What decides how pydicom decodes the text of ``ds``'s raw elements, as a cache key.

    At the top level, the stored (0008,0005) alone; in a sequence item, the
    encodings it was read with and those it decodes with (its own
    (0008,0005), or the ones inherited from the data set holding it).
    """
    charset = ds.get_item(0x00080005)  # None where there is none
    charset_bytes = _stored(getattr(charset, "value", None))  # decoded: a (multi-)value
    if not item:
        return charset_bytes
    # without an (0008,0005) of its own, what ``_character_set`` gives, less its look-up of the
    # absent element (a KeyError raised and caught in every such item)
    used = ds._character_set if charset is not None else ds._parent_encoding
    read = ds.original_character_set
    return ("item", charset_bytes, read if isinstance(read, str) else tuple(read),
            used if isinstance(used, str) else tuple(used))


def _stored(value: Any) -> Any:
    """An element's stored value as part of a cache key (a decoded multi-value as a tuple)."""
    return value if isinstance(value, (bytes, str, type(None))) else tuple(_values(value))


def _creator(creators: dict[int, Any], tag: int) -> Any:
    """The stored value of a private element's creator (its VR comes from it), else None.

    ``creators``: the stored values of the data set's private creator elements by tag.
    """
    if not tag >> 16 & 1 or tag & 0xFF00 == 0:
        return None
    return creators.get(tag & 0xFFFF0000 | (tag & 0xFF00) >> 8)


def _plain_lookup(raw: RawDataElement, ds: Dataset) -> bool:
    """Whether the VR pydicom looks up for ``raw`` (implicit VR or UN) is one VR, not ambiguous.

    The lookup of pydicom's ``raw_element_vr`` hook, without its warning for
    an unknown tag (the conversion gives it).  An ambiguous VR (``US or SS``)
    is resolved from other elements of the data set, which a cache key of the
    element's own bytes does not hold.
    """
    tag, vr = raw.tag, raw.VR
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:  # UL for a group length, else UN
            vr = _private_vr_for_tag(ds, tag) if tag.is_private else "UN"
    elif vr == "UN" and config.replace_un_with_known_vr:
        if tag.is_private:
            vr = _private_vr_for_tag(ds, tag)
        elif raw.value is None or len(raw.value) < 0xFFFF:
            with contextlib.suppress(KeyError):
                vr = dictionary_VR(tag)
    return " or " not in vr


def _repeat_key(raw: DataElement | RawDataElement, tag: int, charset: Any, creators: dict[int, Any],
                bulk: BulkHandler | None, inline_limit: int) -> tuple[Any, ...] | None:
    """What decides an undecoded element's attribute object, as a key of ``_ATTRIBUTES``.

    The tag, the VR as stored, the bytes, their byte order and the character
    sets they are decoded with (``charset``, see :func:`_charset_key`); where
    pydicom looks the VR up (implicit VR, UN), also the private creator it
    looks it up with (``creators``, see :func:`_creator`) and whether the
    value is inlined.  None for an element always converted: one already
    decoded, or of a binary VR, a sequence or an ambiguous VR (``US or SS``).
    """
    if not isinstance(raw, RawDataElement) or raw.value is None:
        return None
    vr = raw.VR
    if vr in _CACHED_VRS:
        return (tag, vr, raw.value, raw.is_little_endian, charset)
    if vr is None or vr == "UN":
        return (tag, vr, raw.value, raw.is_little_endian, charset, _creator(creators, tag),
                bulk is None or len(raw.value) <= inline_limit)
    return None


def _convert(tag: int, raw: DataElement | RawDataElement, ds: Dataset, path: str,
             bulk: BulkHandler | None, inline_limit: int) -> JsonDict:
    """The attribute object of ``ds``'s element ``tag``: pydicom's value, or undecodable bytes."""
    if isinstance(raw, RawDataElement) and raw.value:
        attr = undecodable(raw, ds)
        if attr is not None:
            return attr
    return element_to_json(ds[tag], ds, path, bulk, inline_limit)


def _reusable(raw: RawDataElement, ds: Dataset, attr: JsonDict) -> bool:
    """Whether ``attr``, made from ``raw``, is what the same bytes give wherever they recur.

    Always for a VR as stored.  For a VR pydicom looks up (implicit VR, UN):
    not where the lookup is ambiguous (it is resolved from other elements of
    ``ds``), nor for a sequence made from UN bytes, nor for bulk data (its URI
    names the element's tag path).
    """
    if raw.VR is not None and raw.VR != "UN":
        return True
    return _plain_lookup(raw, ds) and attr["vr"] != "SQ" and "BulkDataURI" not in attr


def _remember(repeat: tuple[Any, ...], attr: JsonDict) -> None:
    """Keep ``attr`` for the next element whose :func:`_repeat_key` is ``repeat``."""
    if len(_ATTRIBUTES) >= _CACHE_LIMIT:
        _ATTRIBUTES.clear()
        _MEMBERS.clear()
    _ATTRIBUTES[repeat] = attr
    _MEMBERS[id(attr)] = (attr, "", b"")


def dataset_to_json(ds: Dataset, bulk: BulkHandler | None = None, prefix: str = "",
                    inline_limit: int = INLINE_BINARY_LIMIT) -> JsonDict:
    """A dataset as a DICOM JSON object, keys in tag order.

    Group length elements (gggg,0000) are left out, as PS3.18 F.2 asks.
    Elements still undecoded whose encoded bytes were seen before (most of a
    series' attributes repeat from slice to slice) reuse the JSON made then,
    in sequence items too: the key holds the tag, the bytes, the byte order
    and the character sets they are decoded with, and for an element whose
    VR pydicom looks up (implicit VR, UN) its private creator and whether it
    is inlined.  Binary elements of a stored binary VR, sequences, bulk data
    and ambiguous VRs are always converted.  The attribute objects may be
    shared between results: treat them as read-only.
    """
    out: JsonDict = {}
    charset = _charset_key(ds, bool(prefix))
    # private creators as stored, gathered on the way: in tag order each precedes its block
    creators: dict[int, Any] = {}
    # the elements as stored (undecoded ones stay so), by tag number (plain ints compare fast)
    for tag, raw in sorted(zip(map(int, ds.keys()), ds.values(), strict=True)):
        if not tag & 0xFFFF:
            continue  # a group length
        key = _TAG_KEYS.get(tag) or _tag_key(tag)
        if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
            creators[tag] = _stored(raw.value)
        repeat = _repeat_key(raw, tag, charset, creators, bulk, inline_limit)
        attr = _ATTRIBUTES.get(repeat) if repeat is not None else None
        if attr is None:
            attr = _convert(tag, raw, ds, prefix + key.lower(), bulk, inline_limit)
            # a repeat key is made for undecoded elements only
            if repeat is not None and _reusable(cast(RawDataElement, raw), ds, attr):
                _remember(repeat, attr)
        out[key] = attr
    return out


#: What ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
#: allow_nan=False)`` builds on every call, built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                            allow_nan=False)


def encode(obj: Any) -> bytes:
    """Deterministic compact JSON (UTF-8, sorted keys)."""
    return _ENCODER.encode(obj).encode("utf-8")


def encode_attributes(attrs: JsonDict) -> bytes:
    """``encode(attrs)`` for a DICOM JSON object, reusing the JSON of repeated attributes.

    The bytes are exactly those of :func:`encode`; attribute objects that
    :func:`dataset_to_json` shared between data sets are encoded once.
    """
    members = []
    for key in sorted(attrs):
        attr = attrs[key]
        shared = _MEMBERS.get(id(attr))
        if shared is not None and shared[1] == key:
            members.append(shared[2])
            continue
        name = key.encode() if _PLAIN_KEY.fullmatch(key) else encode(key)[1:-1]
        member = b'"' + name + b'":' + encode(attr)
        if shared is not None:
            _MEMBERS[id(attr)] = (attr, key, member)
        members.append(member)
    return b"{" + b",".join(members) + b"}"


def gzip_bytes(data: bytes) -> bytes:
    """Gzip with no timestamp and no file name, so equal input gives equal bytes."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def decode(data: bytes) -> Any:
    """Parse JSON that may be gzip-compressed."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data)


def first(attrs: JsonDict, tag: str, default: Any = None) -> Any:
    """The first value of ``tag`` in a DICOM JSON object (PersonName as its object)."""
    values = attrs.get(tag, {}).get("Value")
    return values[0] if values else default
