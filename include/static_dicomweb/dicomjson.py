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
        elem = cast(DataElement, correct_ambiguous_vr_element(elem, ds, True))
        if " or " in elem.VR:
            elem.VR = elem.VR.split(" or ")[0]
    vr = elem.VR
    out: JsonDict = {"vr": vr}
    value = elem.value
    if vr == "SQ":
        items = [dataset_to_json(item, bulk, f"{path}.{i}.", inline_limit)
                 for i, item in enumerate(value or [])]
        if items:
            out["Value"] = items
    elif vr in BINARY_VRS:
        data = bytes(value) if value is not None else b""
        if not data:
            return out
        if bulk is not None and (len(data) > inline_limit or elem.tag in PIXEL_DATA_TAGS):
            out["BulkDataURI"] = bulk(path, data)
        else:
            out["InlineBinary"] = base64.b64encode(data).decode("ascii")
    elif vr == "PN":
        names = [_person_name(v) for v in _values(value)]
        if any(names):
            out["Value"] = names
    elif vr in ("IS", "DS"):
        nums = [_number(v, vr == "IS", path) for v in _values(value)]
        if nums:
            out["Value"] = nums
    elif vr in FLOAT_VRS or vr in INT_VRS:
        nums = [_number(v, vr in INT_VRS, path) for v in _values(value)]
        if nums:
            out["Value"] = nums
    elif vr == "AT":
        tags = [tag_key(int(v)) for v in _values(value)]
        if tags:
            out["Value"] = tags
    else:
        texts = [None if v in (None, "") else str(v) for v in _values(value)]
        if texts and any(t is not None for t in texts):
            out["Value"] = texts
    return out


#: Attribute objects of repeated elements, by (tag, VR, encoded value, byte order, charset).
_CACHE: dict[tuple[Any, ...], JsonDict] = {}
#: Their JSON member (``"key":{...}``) once encoded, by ``id`` of the attribute object (which
#: the entry keeps alive, so the id stays its own).
_ENCODED: dict[int, tuple[JsonDict, str, bytes]] = {}
_CACHE_LIMIT = 50_000
#: Keys that JSON writes as they are (tags are eight hex digits).
_PLAIN_KEY = re.compile(r"[0-9A-Za-z]*")


#: The VRs whose undecoded values are cached: not binary, not sequences, not ambiguous.
_CACHED_VRS = frozenset(str(vr) for vr in VR) - BINARY_VRS - {"SQ"} - {
    str(vr) for vr in VR if " or " in str(vr)}
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
    try:
        for part in parts:
            for fragment in _FRAGMENT.findall(part) if _ESC in part else [part]:
                if not fragment.startswith(_ESC):
                    fragment.decode(encodings[0])
                    continue
                length = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
                encoding = CODES_TO_ENCODINGS.get(fragment[:length], "")
                if encoding not in encodings and encoding != default_encoding:
                    return False  # an escape sequence to a character set not declared
                if encoding in handled_encodings:  # Python reads the escape sequences itself
                    fragment.decode(encoding)
                    continue
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
    charset = ds.get_item(0x00080005) if 0x00080005 in ds else None
    charset_bytes = _stored(getattr(charset, "value", None))  # decoded: a (multi-)value
    if not item:
        return charset_bytes
    read, used = ds.original_character_set, ds._character_set
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
            continue
        key = _TAG_KEYS.get(tag) or _tag_key(tag)
        if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
            creators[tag] = _stored(raw.value)
        cache_key: tuple[Any, ...] | None = None
        looked_up = False  # the VR is pydicom's lookup (implicit VR or UN), not the stored one
        if isinstance(raw, RawDataElement) and raw.value is not None:
            vr = raw.VR
            if vr in _CACHED_VRS:
                cache_key = (tag, vr, raw.value, raw.is_little_endian, charset)
            elif vr is None or vr == "UN":
                looked_up = True
                cache_key = (tag, vr, raw.value, raw.is_little_endian, charset,
                             _creator(creators, tag), bulk is None or len(raw.value) <= inline_limit)
            if cache_key is not None:
                cached = _CACHE.get(cache_key)
                if cached is not None:
                    out[key] = cached
                    continue
                if looked_up and not _plain_lookup(raw, ds):
                    cache_key = None
        attr = None
        if isinstance(raw, RawDataElement) and raw.value:
            attr = undecodable(raw, ds)
        if attr is None:
            attr = element_to_json(ds[tag], ds, prefix + key.lower(), bulk, inline_limit)
        if cache_key is not None and looked_up and (attr["vr"] == "SQ" or "BulkDataURI" in attr):
            cache_key = None  # a sequence made from UN bytes, or bulk data named by its path
        if cache_key is not None:
            if len(_CACHE) >= _CACHE_LIMIT:
                _CACHE.clear()
                _ENCODED.clear()
            _CACHE[cache_key] = attr
            _ENCODED[id(attr)] = (attr, "", b"")
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
        entry = _ENCODED.get(id(attr))
        if entry is not None and entry[0] is attr and entry[1] == key:
            members.append(entry[2])
            continue
        name = key.encode() if _PLAIN_KEY.fullmatch(key) else encode(key)[1:-1]
        member = b'"' + name + b'":' + encode(attr)
        if entry is not None and entry[0] is attr:
            _ENCODED[id(attr)] = (attr, key, member)
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
