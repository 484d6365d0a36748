"""The precomputed query answers (``_q/…``) that one merge rewrites, and their pages.

:func:`plan_answers` works out, from the root lines that changed, which answers change (by
Study and Series Instance UID, by Patient ID, by modality, the pages of a study's series) and
:class:`Plan` writes them in two waves on a :class:`~static_dicomweb.writer.Writer`: the
answers by UID and every page first, then the whole answers that count those pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from . import keys, routing
from .dicomjson import gzip_bytes
from .roots import fields, hex_field, is_series_line, rows_json, study_of
from .store import Store
from .writer import Writer

_T = TypeVar("_T")

#: Modalities whose query answers exist even when empty: MONAI Label asks ``series?Modality=SEG``
#: (and its search filter, CT by default) on every site, and S3 answers a missing key with 403/404.
ALWAYS_ANSWERED_MODALITIES = ("CT", "SEG")
#: The header recording how many rows a query answer holds (``x-amz-meta-rows`` on S3).
ROWS_META = "x-amz-meta-rows"
#: Answers from this many rows or more (both waves) are written in the merging process itself.
LARGE_GROUP = 10_000
#: Small query answers written per task (one task per object costs more than the object).
_BATCH = 256
_EMPTY_GZ = gzip_bytes(b"[]")


def _page_offsets(count: int) -> set[int]:
    """Where the pages of an answer of ``count`` rows start: 100, 200, … and the empty end page.

    Below 100 the router sends every offset to the shared ``routing.EMPTY_KEY``,
    so an answer of fewer than 100 rows has no page of its own.
    """
    size = routing.PAGE_SIZE
    return {*range(size, count, size), count} if count >= size else set()


def rows_meta(headers: Mapping[str, str] | None) -> int:
    """The row count an answer recorded; answers of fewer than a page's rows record none."""
    return int((headers or {}).get(ROWS_META, "0") or 0)


def _rows_record(count: int) -> dict[str, str] | None:
    """User metadata recording an answer's row count, where it has pages to find when it changes.

    Answers below :data:`routing.PAGE_SIZE` rows have no pages, so their count is
    never needed: recording none spares a folder site a ``.meta`` file for each of
    them (the one-row answers by UID are most of a site's answers).
    """
    return {"rows": str(count)} if count >= routing.PAGE_SIZE else None


@dataclass(frozen=True)
class Answer:
    """A query answer to write: the object that is the whole answer and the base of its pages.

    ``before`` is how many rows it held (None: read from the answer's
    ``x-amz-meta-rows``), so the pages of the old count that the new count
    lacks are deleted without listing.
    """

    key: str | None  # None: another object is the whole answer (``studies/{S}/series``)
    pages: str | None  # None: one row at most, every later offset is routing.EMPTY_KEY
    before: int | None = None
    spec: keys.ObjectSpec | None = None  # the whole answer's headers, when not a _q/ object


def _query_spec(key: str) -> keys.ObjectSpec:
    return keys.ObjectSpec(key, keys.DICOM_JSON, keys.GZIP, keys.INDEX)


def _page_body(lines: Sequence[bytes], start: int) -> bytes:
    if start >= len(lines):
        return _EMPTY_GZ
    return gzip_bytes(rows_json(lines[start:start + routing.PAGE_SIZE]))


@dataclass(frozen=True)
class Group:
    """Answers with the same rows, written from one body (each page made once).

    In a CT-only collection ``series?Modality=CT`` is the root ``series`` row
    for row.  ``old`` is what the rows were when the answers were last
    written, if known: a page whose rows did not change is not written again.
    """

    lines: Sequence[bytes]
    answers: list[Answer]
    old: Sequence[bytes] | None = None


def _plan_pages(store: Store, answer: Answer, pages: str, group: Group, wanted: set[int],
                writes: dict[int, list[str]]) -> None:
    """Delete an answer's stale pages; add ``pages`` to ``writes`` under each offset to rewrite."""
    lines, old, size = group.lines, group.old, routing.PAGE_SIZE
    before = answer.before
    if before is None:
        before = rows_meta(store.headers(answer.key)) if answer.key else 0
    had = _page_offsets(before)
    for stale in sorted(had - wanted):
        store.delete(routing.page_key(pages, stale))
    # the answer was last written from ``old`` (a site only grows, so a page whose rows
    # are unchanged since then was not rewritten differently by an interrupted run)
    same_source = old is not None and before == len(old)
    for start in writes:
        if (same_source and start in had and old is not None
                and old[start:start + size] == lines[start:start + size]):
            continue  # the page holds these rows already
        writes[start].append(pages)


def _store_pages(store: Store, groups: Sequence[Group]) -> None:
    """The pages of each group's answers, stale pages of their old count deleted."""
    for group in groups:
        lines = group.lines
        wanted = _page_offsets(len(lines))
        writes: dict[int, list[str]] = {start: [] for start in sorted(wanted)}
        for answer in group.answers:
            if answer.pages is not None:
                _plan_pages(store, answer, answer.pages, group, wanted, writes)
        for start, bases in writes.items():
            if bases:
                data = _page_body(lines, start)
                for base in bases:
                    store.put(_query_spec(routing.page_key(base, start)), [data])


def _store_wholes(store: Store, groups: Sequence[Group]) -> None:
    """Each group's whole answers (made once), with their row count."""
    for group in groups:
        keyed = [(a, a.key) for a in group.answers if a.key is not None]
        if keyed:
            meta = _rows_record(len(group.lines))
            data = gzip_bytes(rows_json(group.lines))
            for answer, key in keyed:
                store.put(answer.spec or _query_spec(key), [data], meta=meta)


def _chunks(items: Sequence[_T], weight: Callable[[_T], int]) -> Iterator[list[_T]]:
    """Consecutive runs of ``items`` of about :data:`_BATCH` objects each (one task each)."""
    chunk: list[_T] = []
    total = 0
    for item in items:
        chunk.append(item)
        total += weight(item)
        if total >= _BATCH:
            yield chunk
            chunk, total = [], 0
    if chunk:
        yield chunk


def _store_one_row_answers(store: Store, answers: Sequence[tuple[str, bytes]]) -> None:
    """Answers by UID: one row each, no pages (every later offset is ``routing.EMPTY_KEY``)."""
    for key, line in answers:
        store.put(_query_spec(key), [gzip_bytes(rows_json([line]))])


@dataclass
class Plan:
    """The query answers one merge rewrites: by UID (one row, no pages), and the others."""

    one_row: list[tuple[str, bytes]]
    groups: list[Group]

    def count(self) -> int:
        """How many whole answers the plan writes."""
        return len(self.one_row) + sum(1 for g in self.groups for a in g.answers
                                       if a.key is not None)

    def submit_first_wave(self, store: Store, writer: Writer) -> None:
        """The answers by UID, and every page (stale ones deleted) before the answers counting them."""
        for start in range(0, len(self.one_row), _BATCH):
            writer.submit(_store_one_row_answers, store, self.one_row[start:start + _BATCH])
        paged = [g for g in self.groups if _may_have_pages(g)]
        _submit_groups(store, writer, _store_pages, paged,
                       lambda g: len(_page_offsets(len(g.lines))) * len(g.answers) + 1)

    def submit_second_wave(self, store: Store, writer: Writer) -> None:
        """The whole answers (after the first wave is stored)."""
        _submit_groups(store, writer, _store_wholes, self.groups, lambda g: len(g.answers))


def _submit_groups(store: Store, writer: Writer,
                   fn: Callable[[Store, Sequence[Group]], None], groups: Sequence[Group],
                   weight: Callable[[Group], int]) -> None:
    """``fn`` over ``groups``: the small ones in chunks, then each large one apart.

    Small groups go in chunks of about :data:`_BATCH` objects.  A large one
    (from :data:`LARGE_GROUP` rows, the roots at scale) goes by
    :meth:`Writer.submit_large`: copying its rows to a writer process costs
    more than writing it here.
    """
    small: list[Group] = []
    large: list[Group] = []
    for group in groups:
        (large if len(group.lines) + len(group.old or ()) >= LARGE_GROUP else small).append(group)
    for chunk in _chunks(small, weight):
        writer.submit(fn, store, chunk)
    for group in large:
        writer.submit_large(fn, store, [group])


def _may_have_pages(group: Group) -> bool:
    """Whether an answer has or had pages (its old count is read in the writer when unknown)."""
    return any(a.pages is not None and (len(group.lines) >= routing.PAGE_SIZE or a.before is None
                                        or a.before >= routing.PAGE_SIZE) for a in group.answers)


def _values_to_rewrite(store: Store, lines: Iterable[bytes],
                       unchanged: set[bytes]) -> tuple[set[str], set[str]]:
    """The patients and modalities whose answers the changed ``lines`` change."""
    patients: set[str] = set()
    modalities: set[str] = set()
    for line in lines:
        if line in unchanged or line.count(b"\t") < 2:
            continue
        f = fields(line)
        if len(f) == 4:  # a study line: counts, patient, modalities
            patients.add(f[2])
            modalities.update(f[3].split(","))
        elif len(f) == 2:  # a series line: patient, modality
            patients.add(f[0])
            modalities.add(f[1])
    for always in ALWAYS_ANSWERED_MODALITIES:  # S3 has no "empty answer": write [] once
        code = hex_field(always)
        if store.headers(f"{routing.QUERY_PREFIX}series/Modality/{code}") is None:
            modalities.add(code)
    patients.discard("-")
    modalities.discard("-")
    return patients, modalities


def _series_by_study(series: Iterable[bytes], studies: set[str] | None = None) -> dict[str, list[bytes]]:
    """Series lines by their study's UID (only those of ``studies`` when given)."""
    by_study: dict[str, list[bytes]] = {}
    for line in series:
        study = study_of(line).decode()
        if studies is None or study in studies:
            by_study.setdefault(study, []).append(line)
    return by_study


def _one_row_answers(studies: Sequence[bytes], by_study: Mapping[str, list[bytes]],
                     touched_studies: set[str], unchanged: set[bytes]) -> list[tuple[str, bytes]]:
    """The answers by Study and Series Instance UID whose row changed."""
    # UIDs in root lines were validated when their series were converted
    by_study_uid = routing.answer_template("studies", "StudyInstanceUID")
    by_series_uid = routing.answer_template("series", "SeriesInstanceUID")
    one_row: list[tuple[str, bytes]] = []
    for line in studies:
        study = study_of(line).decode()
        if study not in touched_studies:
            continue
        if line not in unchanged:
            one_row.append((by_study_uid.replace(routing.VALUE, study), line))
        for series_line in by_study.get(study, []):
            if series_line not in unchanged:
                uid = series_line.split(b"\t", 1)[0].split(b" ")[2].decode()
                one_row.append((by_series_uid.replace(routing.VALUE, uid), series_line))
    return one_row


def _study_series_pages(by_study: Mapping[str, list[bytes]],
                        old_series_of: Mapping[str, list[bytes]]) -> list[Group]:
    """The pages of ``series?StudyInstanceUID=S`` that changed.

    That answer is ``studies/{S}/series`` itself: only its pages (100 series or more) are
    under ``_q/``.
    """
    groups: list[Group] = []
    for study, lines in by_study.items():
        old_lines = old_series_of.get(study, [])
        if lines != old_lines and max(len(lines), len(old_lines)) >= routing.PAGE_SIZE:
            pages = routing.pages_base("series", "StudyInstanceUID", study)
            groups.append(Group(lines, [Answer(None, pages, before=len(old_lines))]))
    return groups


def _bucket_rows(studies: Sequence[bytes], series: Sequence[bytes], patients: set[str],
                 modalities: set[str]) -> dict[str, list[bytes]]:
    """One pass over the roots, bucketing only the patients' and modalities' rows to rewrite."""
    buckets: dict[str, list[bytes]] = {}
    for line in studies:
        f = fields(line)
        if f[2] in patients:
            buckets.setdefault(f"studies/PatientID/{f[2]}", []).append(line)
        for modality in f[3].split(","):
            if modality in modalities:
                buckets.setdefault(f"studies/ModalitiesInStudy/{modality}", []).append(line)
    for line in series:
        f = fields(line)
        if f[0] in patients:
            buckets.setdefault(f"series/PatientID/{f[0]}", []).append(line)
        if f[1] in modalities:
            buckets.setdefault(f"series/Modality/{f[1]}", []).append(line)
    return buckets


def plan_answers(store: Store, studies: Sequence[bytes], series: Sequence[bytes],
                 touched: Sequence[bytes], old: Sequence[bytes],
                 roots: Mapping[str, Group] | None) -> Plan:
    """The query answers that the changed root lines change.

    ``studies`` and ``series`` are the merged root lines, ``touched`` the updated studies'
    new lines and ``old`` the lines they replace; ``roots`` the groups of the two root
    answers, which the answers holding every root row join (written from the same bodies).
    """
    touched_studies = {study_of(line).decode() for line in touched}
    unchanged = set(old) & set(touched)  # rows that came back byte for byte: their answers stand
    patients, modalities = _values_to_rewrite(store, (*touched, *old), unchanged)
    by_study = _series_by_study(series, touched_studies)
    one_row = _one_row_answers(studies, by_study, touched_studies, unchanged)
    groups = _study_series_pages(by_study, _series_by_study(filter(is_series_line, old)))
    shared = {name: Group(g.lines, list(g.answers), g.old) for name, g in (roots or {}).items()}
    buckets = _bucket_rows(studies, series, patients, modalities)
    names = [f"{level}/PatientID/{p}" for p in sorted(patients) for level in ("studies", "series")]
    names += [f"studies/ModalitiesInStudy/{m}" for m in sorted(modalities)]
    names += [f"series/Modality/{m}" for m in sorted(modalities)]
    for name in names:
        key = f"{routing.QUERY_PREFIX}{name}"
        answer = Answer(key, key)
        rows = buckets.get(name, [])
        level = name.split("/", 1)[0]
        if level in shared and len(rows) == len(shared[level].lines):
            shared[level].answers.append(answer)  # every root row: written from the root's bodies
        else:
            groups.append(Group(rows, [answer]))
    return Plan(one_row, [*shared.values(), *groups])


def put_empty_page(store: Store) -> None:
    """The shared empty page, before any answer whose later offsets route to it."""
    if store.headers(routing.EMPTY_KEY) is None:
        store.put(_query_spec(routing.EMPTY_KEY), [_EMPTY_GZ])
